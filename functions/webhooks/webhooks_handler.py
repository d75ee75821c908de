"""Webhook queue (and its DLQ) → one delivery attempt per receive, answered to the waiting
execution by task token; dead-lettered calls end their task with SendTaskFailure."""

from aws_lambda_powertools import Logger, Metrics, Tracer

from threadgate.background.webhook_worker import handle
from threadgate.runtime import get_runtime

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    return handle(event, context, get_runtime())
