"""JSON on the hot path: orjson, with the standard library as the fallback for what orjson
refuses (integers beyond 64 bits, which valid JSON from a client may contain)."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(raw: str | bytes) -> Any:
    # The standard parser: orjson would turn an integer beyond 64 bits into a float, silently
    # changing stored user data; reads are small documents, where the difference is microseconds.
    return json.loads(raw)
