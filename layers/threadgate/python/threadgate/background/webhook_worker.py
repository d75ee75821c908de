"""Tool calls of durable runs on AWS: the SQS-fed webhook worker behind the `webhooks` Lambda.

The state machine's Map sends one message per tool call, `{run_id, tool_use_id, task_token}`, and
waits for its task token (infra/statemachines/tool_loop.asl.json). `handle` runs a batch of those
concurrently (Powertools AsyncBatchProcessor, partial batch failures). For each message:

- an outcome already recorded for the call (a redelivery after the answer was stored) is only
  answered again to the execution, never delivered twice;
- otherwise the worker makes ONE delivery attempt (`webhooks.delivery`, the same attempt the
  in-process loop makes) numbered by the SQS receive count (`X-Qlaud-Attempt`);
- a retryable failure (timeout, connection, 5xx, 429) before the last receive goes back to the
  queue with a growing visibility timeout (the receiver's Retry-After on 429/503, bounded); the
  last receive's failure, or any other answer, is recorded (first write wins) and answered with
  `SendTaskSuccess {tool_use_id, is_error}`: the outcome itself stays in the run store;
- a task the execution no longer waits for (cancelled, timed out) is dropped: its answer is late.

After MAX_RECEIVES receives SQS moves a message the worker could not settle (it crashed, the
store or Step Functions failed) to the DLQ, which feeds this same function: `fail_dead_letter`
records the failure and sends `SendTaskFailure`, which the Map's Catch turns into an `is_error`
tool result.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any

from threadgate.background.sqs_batches import process_batch
from threadgate.runtime import Runtime

log = logging.getLogger("threadgate.webhooks")

MAX_RECEIVES = 4  # the queue's maxReceiveCount (infra/constructs/tool_loop.py) = attempts, API.md §8
REQUEUE_GROWTH = 4  # visibility ≈ base × 4^(receive-1): 10 s, 40 s, 160 s with the AWS default base
MAX_REQUEUE_S = 300  # bound on one requeue delay, a receiver's Retry-After included
GAVE_UP_ERROR = "Webhook.GaveUp"  # the Map's Catch matches this name
GAVE_UP = f"webhook failed: no answer after {MAX_RECEIVES} tries"


class Requeued(Exception):
    """The attempt failed but may succeed later: SQS redelivers it after the new visibility."""


@dataclass(frozen=True)
class ToolCallMessage:
    run_id: str
    tool_use_id: str
    task_token: str

    @classmethod
    def parse(cls, body: str) -> "ToolCallMessage":
        """Raises ValueError/KeyError/TypeError on a body that does not name a tool call."""
        data = json.loads(body)
        return cls(str(data["run_id"]), str(data["tool_use_id"]), str(data["task_token"]))


def requeue_delay_s(receive: int, retry_after_s: float | None, base_s: float) -> int:
    """The visibility timeout before the next receive: the receiver's Retry-After when it gave
    one, else exponential, jittered over the upper half of its step; never over MAX_REQUEUE_S."""
    if retry_after_s is not None:
        delay = retry_after_s
    else:
        ceiling = base_s * REQUEUE_GROWTH ** (receive - 1)
        delay = random.uniform(ceiling / 2, ceiling)
    return int(min(MAX_REQUEUE_S, max(0, round(delay))))


def handle(event: dict[str, Any], context: Any, rt: Runtime) -> dict[str, Any]:
    """The webhooks Lambda: one batch from the webhook queue, or from its DLQ."""

    async def deliver_record(record: Any) -> None:
        receive = int(record.attributes.approximate_receive_count)
        await deliver_message(rt, ToolCallMessage.parse(record.body), receive, record.receipt_handle)

    return process_batch(event, context, rt.settings.webhook_queue_url, live=deliver_record,
                         dead=lambda record: fail_dead_letter(rt, record.body))


async def deliver_message(rt: Runtime, message: ToolCallMessage, receive: int, receipt_handle: str) -> None:
    """One receive of one tool call (see the module docstring). Raises Requeued to be retried."""
    runs, tasks = rt.stores.runs, rt.task_answers
    run_id, tool_use_id = message.run_id, message.tool_use_id
    stored = runs.get_tool_outcomes(run_id, [tool_use_id]).get(tool_use_id)
    if stored is None:
        if not tasks.heartbeat(message.task_token):
            return  # the execution stopped waiting (timed out, stopped): deliver nothing
        call = _pending_call(rt, run_id, tool_use_id)
        if call is None:  # the run ended or was cancelled: tools_done answers the call
            tasks.succeed(message.task_token, {"tool_use_id": tool_use_id, "is_error": True})
            return
        stored = runs.put_tool_outcome(run_id, tool_use_id, await _attempt(rt, call, receive, receipt_handle))
    # A redelivery of an answered call lands here directly: the webhook is never called twice.
    tasks.succeed(message.task_token, {"tool_use_id": tool_use_id, "is_error": stored.is_error})


async def _attempt(rt: Runtime, call: Any, receive: int, receipt_handle: str) -> Any:
    """The outcome of this receive's attempt; raises Requeued when another receive should try."""
    from threadgate.domain.runs import ToolOutcome

    if call.tool_id is None:
        return ToolOutcome.unknown_tool(call.call.get("name"))
    delivery = rt.prepare_delivery(call.account_id, call.tool_id, call.call, call.context)
    async with _webhook_client() as client:
        result = await delivery.attempt(receive, last=receive >= MAX_RECEIVES, client=client)
    if result.retryable and receive < MAX_RECEIVES:
        delay = requeue_delay_s(receive, result.retry_after_s, rt.settings.webhook_requeue_base_s)
        _requeue(rt, receipt_handle, delay)
        raise Requeued(f"{call.call.get('id')}: {result.reason}; next receive in {delay} s")
    return ToolOutcome.of_delivery(result)


def fail_dead_letter(rt: Runtime, body: str) -> None:
    """A tool call SQS gave up on: record the failure (unless an answer was recorded meanwhile)
    and end its task; the Map's Catch gives the model an is_error result."""
    from threadgate.domain.runs import ToolOutcome

    try:
        message = ToolCallMessage.parse(body)
    except (ValueError, KeyError, TypeError):
        log.error("dropping a dead letter that names no tool call")
        return
    stored = rt.stores.runs.put_tool_outcome(
        message.run_id, message.tool_use_id, ToolOutcome(output_text=GAVE_UP, is_error=True, attempts=MAX_RECEIVES)
    )
    if stored.output_text == GAVE_UP and stored.is_error:
        rt.task_answers.fail(message.task_token, GAVE_UP_ERROR, GAVE_UP)
    else:  # the worker had stored its answer but could not send it
        rt.task_answers.succeed(message.task_token, {"tool_use_id": message.tool_use_id, "is_error": stored.is_error})


def _pending_call(rt: Runtime, run_id: str, tool_use_id: str) -> Any:
    """The call to deliver (steps.PendingToolCall), or None when its run no longer waits for it."""
    from threadgate.domain.errors import NotFound
    from threadgate.domain.steps import tool_call

    run = rt.stores.runs.get_run(run_id)
    if run is None or run.finished or run.cancel_requested:
        return None
    try:
        return tool_call(rt.run_deps(), run_id, tool_use_id)
    except NotFound:  # the thread moved on or was deleted
        return None


def _webhook_client() -> Any:
    # One client per delivery, not per process: Powertools runs each batch on its own event loop
    # outside Lambda, and a pooled connection must not outlive its loop. Deliveries over https
    # close their connection anyway (webhooks.delivery).
    from threadgate.webhooks import new_webhook_client

    return new_webhook_client()


def _requeue(rt: Runtime, receipt_handle: str, delay_s: int) -> None:
    rt.sqs.change_message_visibility(
        QueueUrl=rt.settings.webhook_queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_s
    )
