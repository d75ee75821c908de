"""The durable tool loop as AWS runs it, in this process, under moto (issue #8).

    with aws_tool_loop(fake_anthropic, tmp_path) as aws:
        aws.request_runtime            # the stream function's runtime: starts executions
        aws.execution(run_id)          # describe_execution + its history
        aws.webhook_receives           # every receive the worker got: (tool_use_id, receive count)

- moto executes the REAL state machine file (infra/statemachines/tool_loop.asl.json) with the
  substitutions CDK makes (the webhook queue URL, the loop function's ARN). Its Lambda tasks reach
  moto's docker-less Lambda backend, whose `invoke` is patched to call our real handler
  (functions/loop/loop_handler.py) in-process, one invocation at a time per function as one
  warm container would; a raised exception comes back as a FunctionError, as on Lambda.
- A poller thread stands in for the SQS event source mapping of the `webhooks` function: it
  receives batches from the webhook queue and its DLQ (with the receive count, as Lambda does),
  invokes the real handler (functions/webhooks/webhooks_handler.py) with the event Lambda would
  build, and deletes the records the handler did not report failed.
- Each function has its own Runtime (its own container), all on the same moto tables, so no
  HTTP client or event loop is shared between "functions".

The webhook queue's visibility timeout is 0 here (18 minutes on AWS): a receive whose worker
failed without asking for a delay comes back at once, and the delays the worker does ask for
(its requeue backoff, a receiver's Retry-After) are the only waits, as the tests observe them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

from moto.awslambda_simple.models import LambdaSimpleBackend
from threadgate.background import tool_loop

from tests.conftest import make_settings
from tests.conftest_dynamo import REGION, TABLE_NAMES, dynamodb_stores
from tests.unit.test_handlers import LambdaContext, load_handler

ROOT = Path(__file__).resolve().parents[2]
ASL_FILE = ROOT / "infra" / "statemachines" / "tool_loop.asl.json"
ACCOUNT = "123456789012"
LOOP_FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:threadgate-test-loop"
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
AWS_ENV = {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_SERVICE_NAME": "threadgate",
           "POWERTOOLS_METRICS_NAMESPACE": "Threadgate"}
POLL_S = 0.05  # idle polling of moto costs CPU the tests share with everything else


@dataclass
class Function:
    """One Lambda function: its real handler module and its own runtime."""

    name: str
    handler: Any
    runtime: Any
    lock: threading.Lock = field(default_factory=threading.Lock)  # one invocation at a time
    invocations: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, event: dict[str, Any]) -> Any:
        with self.lock:
            self.invocations.append(event)
            return self.handler.handler(event, LambdaContext(function_name=f"threadgate-test-{self.name}"))


@dataclass
class AwsToolLoop:
    session: Any
    stores: Any
    settings: Any
    state_machine_arn: str
    queue_url: str
    dlq_url: str
    request_runtime: Any  # the stream function's (where turns run and executions start)
    loop: Function
    webhooks: Function
    runtime: Any  # () -> a new Runtime on these tables and settings (another "container")
    # The stream function's event loop: its HTTP clients live as long as it does, as in uvicorn.
    request_loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    webhook_receives: list[tuple[str, int, str]] = field(default_factory=list)  # (tool_use_id, count, queue)
    errors: list[BaseException] = field(default_factory=list)  # what the poller itself hit

    @functools.cached_property
    def sfn(self) -> Any:
        return self.session.client("stepfunctions")  # made once: a new client loads its service model

    def in_request(self, coroutine: Any) -> Any:
        """Run `coroutine` as the stream function would, on its one event loop."""
        return self.request_loop.run_until_complete(coroutine)

    def execution_arn(self, run_id: str) -> str:
        name = self.state_machine_arn.rsplit(":", 1)[-1]
        return f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{name}:{run_id}"

    def executions(self) -> list[dict[str, Any]]:
        return self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]

    def wait_for_execution(self, run_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            described = self.sfn.describe_execution(executionArn=self.execution_arn(run_id))
            if described["status"] != "RUNNING":
                return described
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"execution {run_id} still running"
            time.sleep(POLL_S)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        return self.sfn.get_execution_history(executionArn=self.execution_arn(run_id), maxResults=1000)["events"]

    def states_entered(self, run_id: str) -> list[str]:
        """The names of the states the execution entered, in order (Map iterations included)."""
        return [e["stateEnteredEventDetails"]["name"] for e in self.history(run_id)
                if "stateEnteredEventDetails" in e]


class _EventSourceMapping(threading.Thread):
    """What Lambda's SQS event source does for the webhooks function, one batch at a time."""

    def __init__(self, aws: AwsToolLoop, batch_size: int = 10):
        super().__init__(name="webhooks-esm", daemon=True)
        self.aws, self.batch_size = aws, batch_size
        self.sqs = aws.session.client("sqs")
        self.stopping = threading.Event()
        self.arns = {url: self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
                     ["Attributes"]["QueueArn"] for url in (aws.queue_url, aws.dlq_url)}

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                busy = any([self._poll(self.aws.queue_url), self._poll(self.aws.dlq_url)])
            except BaseException as exc:  # surfaced by the tests (AwsToolLoop.errors)
                self.aws.errors.append(exc)
                return
            if not busy:
                time.sleep(POLL_S)

    def _poll(self, url: str) -> bool:
        messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=self.batch_size,
                                            AttributeNames=["All"], WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return False
        records = [self._record(m, url) for m in messages]
        for record in records:
            body = json.loads(record["body"])
            count = int(record["attributes"]["ApproximateReceiveCount"])
            self.aws.webhook_receives.append((body.get("tool_use_id"), count, "dlq" if url == self.aws.dlq_url else "queue"))
        try:
            answer = self.aws.webhooks.invoke({"Records": records})
        except Exception:  # a crashed invocation: every record comes back after its visibility
            return True
        failed = {f["itemIdentifier"] for f in (answer or {}).get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return True

    def _record(self, message: dict[str, Any], url: str) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
            "attributes": {k: message["Attributes"][k] for k in (
                "ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp")},
            "messageAttributes": {}, "md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs",
            "eventSourceARN": self.arns[url], "awsRegion": REGION,
        }


@contextlib.contextmanager
def aws_tool_loop(fake_anthropic: Any, tmp_path: Path, **overrides: Any) -> Iterator[AwsToolLoop]:
    """moto (DynamoDB, SQS, Step Functions executing), the real state machine, the loop and
    webhooks functions on their own runtimes, and the event source poller."""
    from threadgate.runtime import build

    with mock.patch.dict("os.environ", AWS_ENV), dynamodb_stores(kms=True, aws_config=MOTO_CONFIG) as dynamo:
        sqs = dynamo.session.client("sqs")
        dlq_url = sqs.create_queue(QueueName=f"webhooks-dlq-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(QueueName=f"webhooks-{uuid.uuid4().hex[:8]}", Attributes={
            "VisibilityTimeout": "0",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 4}),
        })["QueueUrl"]
        # What CloudFormation does with CDK's DefinitionSubstitutions.
        definition = ASL_FILE.read_text()
        for name, value in {"WebhookQueueUrl": queue_url, "StepFunctionArn": LOOP_FUNCTION_ARN}.items():
            definition = definition.replace("${" + name + "}", value)
        machine_arn = dynamo.session.client("stepfunctions").create_state_machine(
            name=f"tool-loop-{uuid.uuid4().hex[:8]}", definition=definition, type="STANDARD",
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/tool-loop",
        )["stateMachineArn"]
        settings = make_settings(
            tmp_path, anthropic_api_key=fake_anthropic.api_key, anthropic_base_url=fake_anthropic.base_url,
            allow_private_webhooks=True, tool_loop="stepfunctions", tool_loop_state_machine_arn=machine_arn,
            webhook_queue_url=queue_url, webhook_requeue_base_s=0, webhook_kms_key_id=dynamo.settings.webhook_kms_key_id,
            **TABLE_NAMES, **overrides,
        )

        def runtime() -> Any:
            rt = build(settings)
            rt.stores.close()
            rt.stores, rt.indexer = dynamo.stores, None
            return rt

        def function(name: str) -> Function:
            fn = Function(name, load_handler(name), runtime())
            fn.handler.get_runtime = lambda: fn.runtime
            return fn

        aws = AwsToolLoop(
            session=dynamo.session, stores=dynamo.stores, settings=settings, state_machine_arn=machine_arn,
            queue_url=queue_url, dlq_url=dlq_url, request_runtime=runtime(), loop=function("loop"),
            webhooks=function("webhooks"), runtime=runtime,
        )

        def invoke(backend: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any):
            assert function_name == LOOP_FUNCTION_ARN, function_name  # the only function the ASL calls
            try:
                return json.dumps(aws.loop.invoke(json.loads(body))).encode()
            except Exception as exc:  # Lambda answers an unhandled error as a FunctionError
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()

        poller = _EventSourceMapping(aws)
        with mock.patch.object(LambdaSimpleBackend, "invoke", invoke):
            poller.start()
            try:
                yield aws
            finally:
                poller.stopping.set()
                poller.join(10)
                # Each function's upstream pools on the loop that made them (the stores are shared).
                aws.in_request(aws.request_runtime.aclose_upstreams())
                aws.request_loop.close()
                tool_loop._run(aws.loop.runtime.aclose_upstreams())  # the loop function's one loop
