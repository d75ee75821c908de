"""Buffered API routes: an API Gateway REST proxy event runs through the FastAPI app (Mangum)."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from mangum import Mangum

from threadgate.api.app import create_app

logger, tracer, metrics = Logger(), Tracer(), Metrics()
# Built during init (the app object is cheap); stores are created on the first request.
asgi = Mangum(create_app(), lifespan="off", api_gateway_base_path="/")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    return asgi(event, context)
