"""The durable tool loop (issue #8, docs/deploy.md "Tool turns on AWS"): the Standard state machine
deployed from infra/statemachines/tool_loop.asl.json, the webhook queue with its DLQ, and the
wiring of the two functions behind it: `loop` (the engine's steps) and `webhooks` (one delivery
attempt per receive; dead letters end the task with SendTaskFailure).

Who may do what is granted here and nowhere else: StartExecution only to the functions that run
turns, SendTask* only to the webhook function, InvokeFunction only to the state machine.
"""

from __future__ import annotations

import json

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.config import ROOT, StageConfig
from infra.constructs.queues import queue_with_dlq

DEFINITION_FILE = ROOT / "infra" / "statemachines" / "tool_loop.asl.json"
# A tool answers within its timeout_ms (at most 120 s, API.md §7); one batch runs concurrently.
WEBHOOK_WORKER_TIMEOUT = Duration.minutes(3)
# A model call streams for up to the stream function's 15 minutes.
STEP_TIMEOUT = Duration.minutes(15)
# AWS guidance for SQS event sources: visibility ≥ 6× the function timeout. The worker shortens
# it per message (its redelivery backoff); this full value only applies when a worker died.
WEBHOOK_VISIBILITY_TIMEOUT = Duration.seconds(6 * int(WEBHOOK_WORKER_TIMEOUT.to_seconds()))
MAX_RECEIVES = 4  # = attempts per tool call, API.md §8; the worker settles the 4th itself
WEBHOOK_BATCH_SIZE = 10


class DurableToolLoop(Construct):
    """The queues exist first (every function learns the queue URL); `wire` adds the state machine
    once the functions it calls exist."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        # Retention: a task token is dead within the hour (DeliverTool's timeout) anyway.
        self.queue, self.dlq = queue_with_dlq(
            self, "Webhooks", "WebhookDeadLetters", visibility_timeout=WEBHOOK_VISIBILITY_TIMEOUT,
            retention=Duration.days(1), dlq_retention=Duration.days(1), max_receives=MAX_RECEIVES,
        )

    def wire(self, *, steps: lambda_.IFunction, webhooks: lambda_.IFunction) -> None:
        removal = RemovalPolicy.DESTROY if self.config.is_dev else RemovalPolicy.RETAIN
        self.log_group = logs.LogGroup(self, "ExecutionLogs", retention=logs.RetentionDays.ONE_MONTH,
                                       removal_policy=removal)
        self.state_machine = sfn.StateMachine(
            self, "StateMachine",
            # The file itself, inline in the template (no S3 asset): what the moto tests execute.
            definition_body=sfn.DefinitionBody.from_string(DEFINITION_FILE.read_text()),
            definition_substitutions={
                "WebhookQueueUrl": self.queue.queue_url,
                "StepFunctionArn": steps.function_arn,
            },
            state_machine_type=sfn.StateMachineType.STANDARD,
            tracing_enabled=True,
            # Events without their data: inputs carry task tokens (and ids only, never content).
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        # A definition from a file tells CDK nothing of what it calls: grant exactly that.
        self.state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["lambda:InvokeFunction"], resources=[steps.function_arn],
        ))
        self.queue.grant_send_messages(self.state_machine)

        for queue in (self.queue, self.dlq):
            # The event source grants what consuming needs, ChangeMessageVisibility included (the
            # worker's redelivery backoff).
            webhooks.add_event_source(sources.SqsEventSource(
                queue, batch_size=WEBHOOK_BATCH_SIZE, report_batch_item_failures=True,
            ))
        self.state_machine.grant_task_response(webhooks)

    @staticmethod
    def definition() -> dict:
        return json.loads(DEFINITION_FILE.read_text())

    def environment(self) -> dict[str, str]:
        """What every function may know: where webhook deliveries are queued."""
        return {"THREADGATE_WEBHOOK_QUEUE_URL": self.queue.queue_url}

    def starter_environment(self) -> dict[str, str]:
        """Only for the functions that start runs (the state machine itself depends on the steps
        function: giving that one its ARN would be a cycle)."""
        return {"THREADGATE_TOOL_LOOP_STATE_MACHINE_ARN": self.state_machine.state_machine_arn}

    def grant_start(self, role: iam.IRole) -> None:
        """Starting a run: StartExecution on this state machine, nothing else."""
        self.state_machine.grant_start_execution(role)
