"""The durable tool loop on AWS (issue #8): starting a run's execution, the state machine's Lambda
steps, and answering the tasks it waits on.

A turn whose first model answer asks for tools hands the run to `StepFunctionsToolLoop.start`
(the `ToolLoop` port; the composition root picks it when THREADGATE_TOOL_LOOP is stepfunctions)
and relays the run's events from the RunStore. The execution (infra/statemachines/
tool_loop.asl.json) then alternates: one SQS message per tool call (background/webhook_worker
answers each by task token) → `tools_done` → `model_step` → … Every step is the engine's own
(domain/steps.py), idempotent per run iteration, so a Lambda retried by Step Functions repeats
nothing that was done.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from threadgate.runtime import Runtime

log = logging.getLogger("threadgate.tool_loop")

STEP_FAILED = "a step of the turn kept failing; the thread keeps what was done"


class StepFunctionsToolLoop:
    """`ToolLoop` on AWS: one Standard execution per run, named by the run id."""

    def __init__(self, client: Any, state_machine_arn: str):
        self._sfn = client
        self._arn = state_machine_arn

    def start(self, run_id: str, tool_calls: list[Any]) -> None:
        body = json.dumps({"run_id": run_id, "tool_calls": [dict(c) for c in tool_calls]}, separators=(",", ":"))
        try:
            self._sfn.start_execution(stateMachineArn=self._arn, name=run_id, input=body)
        except self._sfn.exceptions.ExecutionAlreadyExists:
            # The same name with another input: the run is already driven (the same input is
            # answered with the existing execution by Step Functions itself).
            log.info("run %s already has its execution", run_id)


class TaskAnswers:
    """Answers to the tasks the executions wait on (task tokens), for the webhook worker. Each
    returns False when no execution waits for that token any more (it timed out, was stopped,
    or was answered): the answer is late, and dropped."""

    def __init__(self, client: Any):
        self._sfn = client
        errors = client.exceptions
        self._gone = (errors.TaskTimedOut, errors.TaskDoesNotExist, errors.InvalidToken)

    def succeed(self, token: str, output: dict[str, Any]) -> bool:
        return self._answer(self._sfn.send_task_success, taskToken=token, output=json.dumps(output))

    def fail(self, token: str, error: str, cause: str) -> bool:
        return self._answer(self._sfn.send_task_failure, taskToken=token, error=error, cause=cause)

    def heartbeat(self, token: str) -> bool:
        return self._answer(self._sfn.send_task_heartbeat, taskToken=token)

    def _answer(self, call: Any, **kwargs: Any) -> bool:
        try:
            call(**kwargs)
        except self._gone as gone:
            log.info("task no longer waited for: %s", type(gone).__name__)
            return False
        return True


def run_step(rt: Runtime, event: dict[str, Any]) -> dict[str, Any] | None:
    """One Lambda task of the state machine: `{"step": model_step|tools_done|fail_run, "run_id", …}`."""
    from threadgate.domain.steps import fail_run, model_step

    deps, step, run_id = rt.run_deps(), event["step"], event["run_id"]
    if step == "model_step":
        return dict(_run(model_step(deps, run_id)))
    if step == "tools_done":
        return _run(_tools_done(deps, run_id, event.get("results") or []))
    if step == "fail_run":
        return dict(_run(fail_run(deps, run_id, STEP_FAILED)))
    raise ValueError(f"unknown step {step!r}")


async def _tools_done(deps: Any, run_id: str, results: list[dict[str, Any]]) -> None:
    """`tools_done` (it stores its events before returning: the container may freeze right
    after, and the next step numbers its events after the last stored one)."""
    from threadgate.domain.steps import tools_done

    await tools_done(deps, run_id, results)


_loop: asyncio.AbstractEventLoop | None = None


def _run(coroutine: Any) -> Any:
    """One event loop for the container's life (as Powertools and Mangum do): the providers' HTTP
    connection pools made on one invocation stay usable on the next."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coroutine)
