"""Request bodies. Strict types: a wrong-typed field is a 400 naming it, never a coercion."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from threadgate.domain.errors import InvalidRequest

# Key and thread metadata live inside one storage record (a DynamoDB item holds 400 KB).
METADATA_MAX_BYTES = 16 * 1024


def check_metadata_size(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(json.dumps(value, separators=(",", ":")).encode()) > METADATA_MAX_BYTES:
        raise ValueError(f"metadata: at most {METADATA_MAX_BYTES} bytes of JSON")
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(check_metadata_size)]


# After JSON parsing a surrogate code point can only be a lone one (a valid pair decodes to one
# character); UTF-8 cannot encode it, so storage, orjson and every provider would fail on it.
_SURROGATE = re.compile("[\ud800-\udfff]")
_LONE_SURROGATE = "holds a lone UTF-16 surrogate (U+D800-U+DFFF), which is not a character; send valid Unicode"


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def unstorable(body: Any) -> tuple[str, str] | None:
    """(where, why) of a value we cannot store faithfully: NaN/Infinity (Python's JSON parser
    accepts them; JSON and our responses do not), an integer beyond 64 bits (our JSON codec
    would read it back as a float), or a string (or object key) holding a lone surrogate.
    Iterative: a body may nest as deep as the parser allows."""
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                return path or "body", _LONE_SURROGATE
        elif isinstance(value, float) and not math.isfinite(value):
            return path or "body", "NaN and Infinity are not valid JSON numbers"
        elif isinstance(value, int) and not -(2**63) <= value < 2**64:
            return path or "body", "integers must fit in 64 bits"
        elif isinstance(value, dict):
            if any(_has_surrogate(k) for k in value):
                return path or "body", "an object key " + _LONE_SURROGATE
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return None


def check_storable(body: Any) -> None:
    """400 naming the first value of `body` that cannot be stored (see `unstorable`)."""
    found = unstorable(body)
    if found:
        where, why = found
        raise InvalidRequest(f"{where}: {why}", param=where)


# Validation context of a body its caller already checked (api/passthrough.json_body).
STORABLE = {"storable": True}


class Part(BaseModel):
    """A nested part of a request body: strict types, unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class Body(Part):
    """A whole request body. Its numbers are checked once, here, with the full path named (nested
    parts are Part, not Body, so a long history is not walked again per message)."""

    @model_validator(mode="before")
    @classmethod
    def _storable_values(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context is not STORABLE:
            check_storable(data)
        return data

    def given(self, name: str) -> bool:
        return name in self.model_fields_set


class KeyCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    scope: Literal["standard", "admin"] = "standard"
    max_spend_usd: float | None = Field(default=None, ge=0, le=1e9)
    end_user_id: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _bound_keys_are_standard(self) -> "KeyCreate":
        # An admin key can mint unbound keys, so binding it to an end user would confine nothing.
        if self.scope == "admin" and self.end_user_id is not None:
            raise InvalidRequest("end_user_id: only standard keys can be bound to an end user", param="end_user_id")
        return self


class KeyPatch(Body):
    # A PATCH that ignored a field would answer 200 for a change it did not make: scope,
    # end_user_id and the rest are fixed at minting (mint a new key instead).
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default=None, min_length=1, max_length=200)
    max_spend_usd: float | None = Field(default=None, ge=0, le=1e9)
    metadata: Metadata | None = None


class AccountPatch(Body):
    name: str = Field(default=None, min_length=1, max_length=200)
    max_spend_usd: float | None = Field(default=None, ge=0, le=1e9)


class ThreadCreate(Body):
    end_user_id: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: Metadata | None = None


class ThreadPatch(Body):
    metadata: Metadata | None = None
    title: str | None = Field(default=None, max_length=500)


Block = dict[str, Any]


def _check_blocks(blocks: list[Block], field: str) -> list[Block]:
    for i, block in enumerate(blocks):
        if not isinstance(block.get("type"), str):
            raise ValueError(f"{field}[{i}].type: each content block needs a string type")
        # Text is what history fitting, search and every provider read. Providers refuse blank
        # text blocks, and a refused user turn would stay in the thread and break every next turn.
        if block["type"] == "text" and not (isinstance(block.get("text"), str) and block["text"].strip()):
            raise ValueError(f"{field}[{i}].text: a text block needs non-blank string text")
        source = block.get("source")
        if block["type"] in ("image", "document") and not (isinstance(source, dict) and isinstance(source.get("type"), str)):
            raise ValueError(f"{field}[{i}].source: an {block['type']} block needs a source object with a type")
    return blocks


class SamplingParams(Body):
    model: str = Field(min_length=1, max_length=200)
    max_tokens: int = Field(ge=1, le=1_000_000)
    system: str | list[Block] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = Field(default=None, max_length=16)
    thinking: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    tool_choice: dict[str, Any] | None = None

    def forwarded(self) -> dict[str, Any]:
        return self.model_dump(
            include={"max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
                     "thinking", "metadata", "tool_choice"},
            exclude_none=True,
        )


class TurnCreate(SamplingParams):
    content: str | list[Block]
    tools: list[str] | None = Field(default=None, max_length=64)
    tool_ids: list[str] | None = Field(default=None, max_length=64)
    tools_mode: str = "explicit"
    max_iterations: int = Field(default=8, ge=1, le=8)

    @field_validator("content")
    @classmethod
    def _content(cls, v: str | list[Block]) -> str | list[Block]:
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("must not be empty")
            return v
        if not v:
            raise ValueError("must not be empty")
        return _check_blocks(v, "content")

    @model_validator(mode="after")
    def _mode(self) -> "TurnCreate":
        if self.tools_mode != "explicit":
            raise InvalidRequest(
                f"tools_mode: {self.tools_mode!r} is unsupported; only 'explicit' is", param="tools_mode"
            )
        return self


class InputMessage(Part):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class MessagesCreate(SamplingParams):
    """A `/v1/messages` body, checked; the body itself is forwarded as it came (api/passthrough.py)."""

    messages: list[InputMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)


class ChatMessage(Part):
    role: str


class ChatCreate(Body):
    """A `/v1/chat/completions` body: only what the gateway reads is checked here; the body itself
    is forwarded as it came or translated field by field (providers/field_map.py)."""

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    n: int | None = Field(default=None, ge=1, le=128)


class ResponsesCreate(Body):
    """A `/v1/responses` body: only what the gateway reads is checked here; the body itself is
    forwarded as it came (providers/field_map.py RESPONSES)."""

    model: str = Field(min_length=1, max_length=200)
    # The conversation: a string, or input items (their shapes are the upstream's to check).
    input: Any
    stream: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        if not isinstance(v, (str, list)) or not v:
            raise ValueError("input: must be a non-empty string or array of input items")
        return v
