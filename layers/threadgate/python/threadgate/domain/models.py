"""Records the ports exchange. Money is integer micro-dollars; times are epoch milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

Scope = Literal["admin", "standard"]


class _Unset:
    """Marks a PATCH field that was not sent (distinct from an explicit null)."""

    _instance: "_Unset | None" = None

    def __new__(cls) -> "_Unset":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


@dataclass
class Account:
    id: str
    name: str
    cap_micros: int | None  # None = unlimited
    spent_micros: int = 0
    reserved_micros: int = 0
    created_at: int = 0


@dataclass
class ApiKey:
    id: str
    account_id: str
    name: str
    prefix: str
    scope: Scope
    cap_micros: int | None  # lifetime cap; None = unlimited
    end_user_id: str | None = None
    metadata: dict[str, Any] | None = None
    spent_micros: int = 0
    reserved_micros: int = 0
    created_at: int = 0
    last_used_at: int | None = None
    revoked: bool = False


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from the key on every request."""

    key_id: str
    account_id: str
    scope: Scope
    end_user_id: str | None  # set for end-user-bound keys

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


@dataclass
class Thread:
    id: str
    account_id: str
    end_user_id: str | None
    metadata: dict[str, Any] | None
    title: str | None
    created_at: int
    last_active_at: int
    message_count: int = 0


# Message kinds decide what history/search treat specially; the wire shows only role/content.
MessageKind = Literal["user", "assistant", "tool_use", "tool_result"]


@dataclass
class NewMessage:
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]
    kind: MessageKind
    model: str | None = None
    request_id: str | None = None


@dataclass
class Message:
    thread_id: str
    seq: int
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]
    kind: MessageKind
    model: str | None
    request_id: str | None
    created_at: int
    account_id: str = ""
    end_user_id: str | None = None


@dataclass
class Reservation:
    id: str
    key_id: str
    account_id: str
    estimate_micros: int
    created_at: int
    expires_at: int
    request_id: str
    model: str
    provider: str
    thread_id: str | None = None


@dataclass
class UsageEvent:
    id: str
    request_id: str
    key_id: str
    account_id: str
    thread_id: str | None
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    upstream_cost_micros: int
    cost_micros: int
    latency_ms: int
    status: str  # "ok" | "incomplete" | "error" | "expired"
    created_at: int
    price_tier: str = "base"  # the input-size tier that priced the whole call ("input>272K")
    service_tier: str = "default"  # the service tier the upstream reported ("priority", "flex", "batch")


@dataclass
class IdempotencyRecord:
    scope: str
    body_hash: str
    state: Literal["in_progress", "done"]
    status_code: int | None = None
    response: Any = None
    created_at: int = 0


@dataclass
class Tool:
    id: str
    account_id: str
    name: str
    description: str
    input_schema: dict[str, Any]
    webhook_url: str
    timeout_ms: int
    secret: str  # plaintext only in memory; adapters store it encrypted (AWS) and never list it
    created_at: int
    deleted: bool = False


# A delivery attempt's outcome (API.md §7.1): the receiver answered 2xx ("ok") or 2xx with
# is_error ("tool_error"); a timeout, connection error, 5xx or 429 ("transient": retried while
# attempts remain); any other answer ("failed"); nothing sent: SSRF guard or tool gone ("refused").
DeliveryOutcome = Literal["ok", "tool_error", "transient", "failed", "refused"]
DELIVERY_RETENTION_MS = 30 * 24 * 3600 * 1000  # delivery records are kept 30 days


@dataclass
class DeliveryRecord:
    """One attempt to deliver a tool call to its webhook (recorded by webhooks/delivery.py)."""

    account_id: str
    tool_id: str
    tool_use_id: str
    attempt: int  # X-Qlaud-Attempt of this attempt
    outcome: DeliveryOutcome
    status_code: int | None  # HTTP status of the answer, None when there was none
    reason: str | None  # short failure reason, None on success
    latency_ms: int
    created_at: int
    thread_id: str | None = None
    request_id: str | None = None


@dataclass
class DayCounts:
    """Inference requests of one account on one UTC day, by how they were answered."""

    day: str  # YYYY-MM-DD (UTC)
    requests: int = 0
    errors: int = 0  # answered 4xx/5xx other than 402
    cap_refusals: int = 0  # answered 402 (key cap or account budget)


@dataclass
class Usage:
    """Token counts of one or more model calls. `cache_creation_1h_input_tokens` is the part of
    `cache_creation_input_tokens` written to the 1-hour cache, which is priced higher."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    service_tier: str | None = None  # as the upstream reported it (None: not reported)

    @property
    def prompt_tokens(self) -> int:
        """Every input token of the call, cached or not: what input-size price tiers look at."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def __add__(self, other: "Usage") -> "Usage":
        counts = (getattr(self, f.name) + getattr(other, f.name) for f in fields(Usage) if f.name != "service_tier")
        return Usage(*counts, service_tier=other.service_tier or self.service_tier)

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }

    @classmethod
    def from_anthropic(cls, raw: dict[str, Any] | None) -> "Usage":
        raw = raw or {}
        split = raw.get("cache_creation") if isinstance(raw.get("cache_creation"), dict) else {}
        return cls(
            int(raw.get("input_tokens") or 0),
            int(raw.get("output_tokens") or 0),
            int(raw.get("cache_creation_input_tokens") or 0),
            int(raw.get("cache_read_input_tokens") or 0),
            int(split.get("ephemeral_1h_input_tokens") or 0),
            raw.get("service_tier") if isinstance(raw.get("service_tier"), str) else None,
        )


@dataclass(frozen=True)
class Prices:
    """Micro-dollars per million tokens (= USD per Mtok × 1e6), integers, one per token kind."""

    input: int
    output: int
    cache_read: int
    cache_write: int  # 5-minute cache writes
    cache_write_1h: int


@dataclass(frozen=True)
class PriceTier:
    """Prices for the WHOLE request once its input tokens exceed `above_input_tokens` (0: base)."""

    name: str  # "base", "input>272K"
    above_input_tokens: int
    prices: Prices


@dataclass(frozen=True)
class ModelRules:
    """What a model refuses, acted on before any upstream call (domain/model_rules.py)."""

    default_sampling_only: bool = False  # non-default temperature/top_p/top_k → upstream 400
    manual_thinking: bool = True  # thinking {"type": "enabled", budget_tokens} accepted
    forced_tool_choice: bool = True  # tool_choice any/tool (OpenAI: required/function) accepted
    thinking_between_tools: bool = False  # text between tool calls comes back as thinking blocks


@dataclass
class ModelInfo:
    id: str
    provider: str  # "anthropic" | "openai" | "bedrock" | "local"
    upstream_id: str
    context_window: int
    max_output_tokens: int
    # Service tier ("default", "priority", "flex", "batch") → its input-size tiers, base first.
    price_tiers: dict[str, tuple[PriceTier, ...]]
    tokenizer: str = "claude-4"  # input-bound family (domain/billing.py)
    rules: ModelRules = field(default_factory=ModelRules)
    price_source: str = ""
    legacy: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # provider specifics (Bedrock foundation model)

    @property
    def base(self) -> Prices:
        """The base prices: default service tier, below every input-size line."""
        return self.price_tiers["default"][0].prices
