#!/bin/bash
# Lambda Web Adapter starts this (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) and relays each
# invocation to uvicorn, streaming the response (AWS_LWA_INVOKE_MODE=response_stream).
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT}:${PYTHONPATH}"
exec python -m uvicorn threadgate.api.asgi:app --host 127.0.0.1 --port "${AWS_LWA_PORT:-8080}" \
  --no-access-log --timeout-keep-alive 900
