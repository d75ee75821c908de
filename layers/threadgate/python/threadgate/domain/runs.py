"""A run: one thread turn, as a small serializable record a fresh process can continue from.

The run record says who asked (the principal), on which thread, with which model, parameters
and tools, and how far the turn got. Payloads never live in it: the user message, the model's
answers and its `tool_use` calls are thread messages; webhook answers are tool outcomes in the
RunStore. So a step running in another process (a Step Functions Lambda, a restarted gateway)
reloads the run and the thread and carries on, and a run fits well under Step Functions' 256 KB
state limit. `run_id` is the turn's request id: every message and usage event of the run carries
it, and the reservation of iteration `i` is `<run_id>:<i>`.

    running ──▶ completed | limit_reached | failed | cancelled
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypedDict

from threadgate.domain.models import Principal

RunStatus = Literal["running", "completed", "failed", "cancelled", "limit_reached"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled", "limit_reached"})

# What a step asks its driver to do next.
Next = Literal["tools", "done", "limit", "failed", "cancelled"]
NEXT_OF_STATUS: dict[str, Next] = {
    "completed": "done", "limit_reached": "limit", "failed": "failed", "cancelled": "cancelled",
}


@dataclass
class Run:
    id: str
    account_id: str
    key_id: str
    scope: str
    end_user_id: str | None  # the calling key's end-user binding (None: unbound key)
    thread_id: str
    thread_end_user_id: str | None  # the thread's end user (webhook deliveries name it)
    model: str
    params: dict[str, Any]  # max_tokens and the forwarded request fields (system, temperature, …)
    tools: list[dict[str, Any]]  # the definitions the run started with: id, name, description, input_schema
    max_iterations: int
    created_at: int
    updated_at: int
    status: RunStatus = "running"
    iteration: int = 0  # the number of the last model call begun
    in_flight: int | None = None  # that call, while it is not settled and persisted (a crash shows here)
    call_from: int | None = None  # the number of the first event that call may have emitted
    user_seq: int | None = None
    assistant_seq: int | None = None  # the last assistant message of the run
    answer: dict[str, Any] | None = None  # the last answer's id, stop_reason, stop_sequence
    cost_micros: int = 0  # every model call of the run, interrupted attempts included
    usage: dict[str, int] = field(default_factory=dict)
    hit_max_iterations: bool = False
    incomplete: bool = False
    error: dict[str, Any] | None = None  # {type, message}: why it failed
    cancel_requested: bool = False
    job_id: str | None = None
    attempts: int = 1  # 1 + how many times the run was resumed after its process died
    durable: bool = False  # handed to the durable (Step Functions) driver

    @property
    def principal(self) -> Principal:
        return Principal(key_id=self.key_id, account_id=self.account_id, scope=self.scope,  # type: ignore[arg-type]
                         end_user_id=self.end_user_id)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Run":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Fields a step may change with RunStore.update_run (identity fields never change).
MUTABLE = frozenset({
    "updated_at", "status", "iteration", "in_flight", "call_from", "assistant_seq",
    "answer", "cost_micros", "usage", "hit_max_iterations", "incomplete", "error",
    "cancel_requested", "attempts", "durable",
})


class ToolCallRef(TypedDict):
    run_id: str
    tool_use_id: str


class StepOutcome(TypedDict):
    """What `model_step` answers (also the Step Functions state after ModelStep)."""

    run_id: str
    iteration: int
    next: Next
    tool_calls: list[ToolCallRef]


class ToolResultRef(TypedDict, total=False):
    """One item of `tools_done`'s input (a Map iteration's output): the outcome itself is in the
    RunStore; `is_error` + `reason` stand in when no outcome was recorded (the delivery failed)."""

    tool_use_id: str
    is_error: bool
    reason: str


@dataclass(frozen=True)
class ToolOutcome:
    """A webhook's answer for one tool call, as the model will see it."""

    output_text: str
    is_error: bool
    attempts: int = 1
    status_code: int | None = None
    latency_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of_delivery(cls, result: Any) -> "ToolOutcome":
        """From a `webhooks.DeliveryResult` (its last attempt), whichever driver delivered it."""
        return cls(result.output_text, bool(result.is_error), attempts=result.attempts,
                   status_code=result.status, latency_ms=result.duration_ms)

    @classmethod
    def unknown_tool(cls, name: Any) -> "ToolOutcome":
        """The model named a tool the run does not have: nothing is delivered."""
        return cls(f"unknown tool {name!r}", True, attempts=0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ToolOutcome":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def outcome(run: Run, tool_calls: list[ToolCallRef] | None = None) -> StepOutcome:
    """The step outcome a run's current state stands for (`tools` only with calls pending)."""
    next_: Next = "tools" if tool_calls else NEXT_OF_STATUS.get(run.status, "done")
    return {"run_id": run.id, "iteration": run.iteration, "next": next_, "tool_calls": list(tool_calls or [])}
