"""Async jobs (API.md §11): the record, its endpoints and its state machine. Pure.

    queued ──start──▶ running ──finish──▶ succeeded | failed
       │                 │
       └────cancel───────┴──────────────▶ cancelled

A job replays one synchronous request later: `body` is that request's body as the caller sent
it, and `response` is exactly what the synchronous endpoint would have answered. A job carries
the key that submitted it, not a copy of its rights: the worker resolves the key again when it
runs, so a key revoked meanwhile runs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from threadgate.domain.errors import InvalidRequest

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
UNFINISHED: tuple[JobStatus, ...] = ("queued", "running")
FINISHED: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")

# Finished jobs are kept this long (DynamoDB TTL); a client polls well within it.
RETENTION_MS = 30 * 24 * 3600 * 1000

MESSAGES = "/v1/messages"
CHAT = "/v1/chat/completions"
_THREAD_TURN = re.compile(r"^/v1/threads/([^/?#]{1,200})/messages$")

EndpointKind = Literal["messages", "chat", "thread_turn"]


@dataclass(frozen=True)
class Endpoint:
    kind: EndpointKind
    path: str
    thread_id: str | None = None


def parse_endpoint(path: Any) -> Endpoint:
    """The synchronous endpoint a job replays; a 400 naming `endpoint` otherwise."""
    if path == MESSAGES:
        return Endpoint("messages", path)
    if path == CHAT:
        return Endpoint("chat", path)
    match = _THREAD_TURN.match(path) if isinstance(path, str) else None
    if match:
        return Endpoint("thread_turn", path, match.group(1))
    raise InvalidRequest(
        f"endpoint: must be {MESSAGES!r}, {CHAT!r} or '/v1/threads/{{id}}/messages'", param="endpoint"
    )


@dataclass
class Job:
    id: str
    account_id: str
    key_id: str
    endpoint: str
    body: dict[str, Any]
    model: str | None
    status: JobStatus
    created_at: int
    started_at: int | None = None
    completed_at: int | None = None
    response: Any = None
    error: dict[str, Any] | None = None
    cost_micros: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class JobOutcome:
    """How a run ended. `error` is the endpoint's own error object (Anthropic or OpenAI shape)."""

    status: Literal["succeeded", "failed"]
    response: Any = None
    error: dict[str, Any] | None = None
    cost_micros: int = 0

    @classmethod
    def succeeded(cls, response: Any, cost_micros: int) -> "JobOutcome":
        return cls("succeeded", response=response, cost_micros=cost_micros)

    @classmethod
    def failed(cls, error: dict[str, Any], cost_micros: int = 0) -> "JobOutcome":
        return cls("failed", error=error, cost_micros=cost_micros)


def new_job(
    job_id: str, *, account_id: str, key_id: str, endpoint: Endpoint, body: dict[str, Any], now_ms: int
) -> Job:
    model = body.get("model") if isinstance(body.get("model"), str) else None
    return Job(
        id=job_id,
        account_id=account_id,
        key_id=key_id,
        endpoint=endpoint.path,
        body=body,
        model=model,
        status="queued",
        created_at=now_ms,
    )


def without_stream(body: dict[str, Any]) -> dict[str, Any]:
    """A job answers once, as JSON: the body's `stream` flag is ignored (API.md §11)."""
    return {k: v for k, v in body.items() if k != "stream"}
