"""Jobs queue (and its DLQ) → run each queued job as its synchronous route would; failed records
are reported one by one (SQS retries them, then dead-letters them to be marked failed)."""

from aws_lambda_powertools import Logger, Metrics, Tracer

from threadgate.background.jobs_worker import handle
from threadgate.runtime import get_runtime

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    return handle(event, context, get_runtime())
