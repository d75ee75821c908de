"""Scheduled: settle reservations left open by a crashed request, at their estimate."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from threadgate.domain.metering import sweep_expired
from threadgate.runtime import get_runtime

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    runtime = get_runtime()
    settled = sweep_expired(runtime.stores.ledger, runtime.clock)
    metrics.add_metric(name="ExpiredReservationsSettled", unit=MetricUnit.Count, value=settled)
    return {"settled": settled}
