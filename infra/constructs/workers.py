"""Background wiring: the search indexer on the threads stream, the reservation sweeper on a
schedule, and the deploy-time bootstrap (search index + first admin key) as a custom resource."""

from __future__ import annotations

from aws_cdk import CustomResource, Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra.config import StageConfig


class Indexing(Construct):
    """Threads stream → indexer. Failed records are retried alone (bisect + partial batch
    responses); what still fails is described in the DLQ and the batch moves on."""

    def __init__(
        self, scope: Construct, construct_id: str, *, indexer: lambda_.IFunction, threads: dynamodb.ITable
    ) -> None:
        super().__init__(scope, construct_id)
        self.dlq = sqs.Queue(
            self, "FailedRecords",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        indexer.add_event_source(sources.DynamoEventSource(
            threads,
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=50,
            max_batching_window=Duration.seconds(1),  # search freshness target is 5 s
            bisect_batch_on_error=True,
            report_batch_item_failures=True,
            retry_attempts=5,
            max_record_age=Duration.hours(6),
            on_failure=sources.SqsDlq(self.dlq),
        ))


class Sweeping(Construct):
    """Settles reservations whose holder crashed, at their estimate (DESIGN.md invariant 1)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, sweeper: lambda_.IFunction) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.Rule(
            self, "Schedule",
            description="Settle expired spend reservations",
            schedule=events.Schedule.rate(Duration.minutes(config.sweep_minutes)),
            targets=[targets.LambdaFunction(sweeper, retry_attempts=0)],  # the next run retries
        )


class Bootstrap(Construct):
    """Runs the bootstrap function on every deploy: idempotent index creation, and the first
    admin key (stored in Secrets Manager by the function; nothing is returned to CloudFormation)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, function: lambda_.IFunction, properties: dict[str, str]
    ) -> None:
        super().__init__(scope, construct_id)
        self.provider = cr.Provider(
            self, "Provider",
            on_event_handler=function,
            log_group=logs.LogGroup(self, "ProviderLogs", retention=logs.RetentionDays.ONE_MONTH),
        )
        self.resource = CustomResource(
            self, "Run",
            service_token=self.provider.service_token,
            resource_type="Custom::ThreadgateBootstrap",
            properties=properties,
        )
