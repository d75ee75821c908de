"""JSON on the hot path: orjson, with the standard library as the fallback for what orjson
refuses to write (integers beyond 64 bits, which a model's tool input may contain)."""

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
    # orjson reads an integer beyond 64 bits as a float. The API refuses such integers on input
    # (api/schemas.py), so only model-made data (a tool input) could ever lose that precision.
    return orjson.loads(raw)
