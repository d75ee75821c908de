"""Threads table stream → embeddings → OpenSearch; failed records are reported one by one."""

from aws_lambda_powertools import Logger, Metrics, Tracer

from threadgate.runtime import get_runtime
from threadgate.background import search_indexer

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    return search_indexer.handle(event, context, get_runtime().indexer)
