"""CloudWatch alarms for what a user would notice: server errors, throttling, search falling
behind or dropping records, crashed reservations not being settled, jobs waiting or dead-lettered,
tool-loop executions failing or timing out, tool calls dead-lettered."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import StageConfig

FIVE_MINUTES = Duration.minutes(5)


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        rest_api: apigw.RestApi,
        functions: dict[str, lambda_.IFunction],
        indexer_dlq: sqs.IQueue,
        jobs_queue: sqs.IQueue,
        jobs_dlq: sqs.IQueue,
        tool_loop: sfn.IStateMachine,
        webhooks_dlq: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarms: list[cloudwatch.Alarm] = []
        requests = rest_api.metric_count(period=FIVE_MINUTES, statistic="Sum")
        server_errors = rest_api.metric_server_error(period=FIVE_MINUTES, statistic="Sum")
        error_rate = cloudwatch.MathExpression(
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            using_metrics={"requests": requests, "errors": server_errors},
            label="5xx rate (%)",
            period=FIVE_MINUTES,
        )
        self._alarm("Api5xxRate", error_rate, threshold=5, periods=3,
                    description="More than 5% of API requests answered 5xx for 15 minutes")
        for name, function in functions.items():
            self._alarm(f"{name.title()}Throttles", function.metric_throttles(period=FIVE_MINUTES, statistic="Sum"),
                        threshold=1, description=f"The {name} function is being throttled")
            self._alarm(f"{name.title()}Errors", function.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
                        threshold=1 if name in ("indexer", "sweeper", "jobs", "loop", "webhooks") else 5,
                        description=f"The {name} function reports invocation errors")
        indexer = functions["indexer"]
        self._alarm(
            "IndexerIteratorAge",
            indexer.metric("IteratorAge", period=FIVE_MINUTES, statistic="Maximum"),
            threshold=60_000,
            description="Search indexing lags the threads table by more than a minute",
        )
        for alarm_id, dlq, what in (
            ("IndexerDlqDepth", indexer_dlq, "Thread stream records could not be indexed (see the indexer DLQ)"),
            ("JobsDlqDepth", jobs_dlq, "Dead-lettered jobs could not be marked failed (see the jobs DLQ)"),
            ("WebhooksDlqDepth", webhooks_dlq, "Dead-lettered tool calls could not be ended (see the webhooks DLQ)"),
        ):
            self._alarm(alarm_id, dlq.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES, statistic="Maximum"),
                        threshold=1, description=what)
        self._alarm(
            "JobsQueueAge",
            jobs_queue.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES, statistic="Maximum"),
            threshold=15 * 60,
            description="Queued jobs have waited more than 15 minutes for the jobs function",
        )
        self._alarm(
            "ToolLoopFailedExecutions",
            tool_loop.metric_failed(period=FIVE_MINUTES, statistic="Sum"),
            threshold=1,
            description="A tool-loop run failed outside its steps (a step kept failing, see the execution)",
        )
        self._alarm(
            "ToolLoopTimedOutExecutions",
            tool_loop.metric_timed_out(period=FIVE_MINUTES, statistic="Sum"),
            threshold=1,
            description="A tool-loop execution timed out",
        )
        if config.alarm_topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", config.alarm_topic_arn)
            for alarm in self.alarms:
                alarm.add_alarm_action(actions.SnsAction(topic))

    def _alarm(self, construct_id: str, metric: cloudwatch.IMetric, *, threshold: float, description: str,
               periods: int = 1) -> None:
        self.alarms.append(cloudwatch.Alarm(
            self, construct_id,
            metric=metric,
            threshold=threshold,
            evaluation_periods=periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        ))
