"""Durable tool loop steps: the state machine's Lambda tasks (infra/statemachines/tool_loop.asl.json)
run one engine step each (`model_step`, `tools_done`, `fail_run`), idempotent per run iteration."""

from aws_lambda_powertools import Logger, Metrics, Tracer

from threadgate import snapstart
from threadgate.background.tool_loop import run_step
from threadgate.runtime import get_runtime

logger, tracer, metrics = Logger(), Tracer(), Metrics()
snapstart.register()  # under SnapStart: code in the snapshot, the runtime built after restore


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    return run_step(get_runtime(), event)
