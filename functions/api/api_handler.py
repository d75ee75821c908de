"""Buffered API routes: an API Gateway REST proxy event runs through the FastAPI app (Mangum).

No Powertools Tracer here: its X-Ray SDK import is the largest part of this handler's cold start
(bench/coldstart_bench.py); Lambda active tracing and API Gateway tracing still trace each request.
"""

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from mangum import Mangum

from threadgate import snapstart
from threadgate.api.app import create_app

logger, metrics = Logger(), Metrics()
app = create_app()  # route modules, stores and providers load on first need (or before a snapshot)
asgi = Mangum(app, lifespan="off")  # a Lambda container has no shutdown hook to run
snapstart.register(app)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def handler(event, context):
    snapstart.ensure_runtime(app)
    return asgi(event, context)
