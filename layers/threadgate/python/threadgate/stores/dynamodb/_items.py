"""Item plumbing shared by the DynamoDB adapters: the attribute-value codec, padded sort keys,
JSON columns and the transaction helper that understands cancellation reasons.

Everything we store is a string, an integer, a bool or bytes (floats live inside JSON strings:
DynamoDB numbers are Decimals and our money and times are integers), so decoding turns every
number back into an `int`.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# Fixed widths keep string sort keys in numeric order.
TS_WIDTH = 15
SEQ_WIDTH = 12


def ts_key(ms: int) -> str:
    return f"{ms:0{TS_WIDTH}d}"


def encode(item: dict[str, Any]) -> dict[str, Any]:
    """Plain dict -> attribute values. None values are left out (an absent attribute is null)."""
    return {k: _serializer.serialize(v) for k, v in item.items() if v is not None}


def encode_values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items()}


def decode(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {k: plain(_deserializer.deserialize(v)) for k, v in raw.items()}


def plain(value: Any) -> Any:
    """Decimals (DynamoDB numbers) -> int; binary wrappers -> bytes."""
    if isinstance(value, Decimal):
        return int(value)
    if type(value).__name__ == "Binary":
        return bytes(value.value)
    return value


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# An item may hold 400 KB. Big JSON (long tool results, pasted documents, stored answers) is kept
# zlib-compressed in `<field>_z` instead of `<field>`, which stretches that several times for text.
_PLAIN_JSON_LIMIT = 256 * 1024


def pack_json(field: str, value: Any) -> dict[str, Any]:
    text = dumps(value)
    data = text.encode()
    if len(data) <= _PLAIN_JSON_LIMIT:
        return {field: text}
    return {f"{field}_z": zlib.compress(data, 6)}


def unpack_json(item: dict[str, Any], field: str) -> Any:
    packed = item.get(f"{field}_z")
    if packed is not None:
        return json.loads(zlib.decompress(plain(packed)))
    return loads(item.get(field))


def is_too_large(err: ClientError) -> bool:
    error = err.response.get("Error", {})
    return error.get("Code") == "ValidationException" and "size" in str(error.get("Message", "")).lower()


def is_condition_failure(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class TransactionCancelled(Exception):
    """A transaction was refused; `condition_failed(i)`: was it the i-th action's condition?"""

    def __init__(self, codes: list[str]):
        super().__init__(f"transaction cancelled: {codes}")
        self.codes = codes

    def condition_failed(self, index: int) -> bool:
        return index < len(self.codes) and self.codes[index] == "ConditionalCheckFailed"


# Contention between transactions on the same item is resolved by retrying (DynamoDB cancels the
# loser with `TransactionConflict`); condition failures are answers and are raised at once.
_CONFLICT_ATTEMPTS = 12


def transact(client: Any, actions: list[dict[str, Any]]) -> None:
    for attempt in range(_CONFLICT_ATTEMPTS):
        try:
            client.transact_write_items(TransactItems=actions)
            return
        except ClientError as err:
            error = err.response.get("Error", {})
            if error.get("Code") != "TransactionCanceledException":
                raise
            codes = [r.get("Code") or "None" for r in err.response.get("CancellationReasons", [])]
            if "TransactionConflict" in codes and "ConditionalCheckFailed" not in codes:
                _backoff(attempt)
                continue
            if all(code == "None" for code in codes):
                raise  # no reason given: not ours to interpret
            raise TransactionCancelled(codes) from None
    raise TransactionCancelled(["TransactionConflict"])


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))


def query_all(client: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every decoded item of a Query, following LastEvaluatedKey."""
    return _all_pages(client.query, kwargs)


def scan_all(client: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every decoded item of a Scan (recovery and retention in local emulators, never a request)."""
    return _all_pages(client.scan, kwargs)


def _all_pages(call: Any, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    while True:
        page = call(**kwargs)
        for raw in page.get("Items", []):
            yield decode(raw)  # type: ignore[misc]
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        kwargs["ExclusiveStartKey"] = last


@dataclass(frozen=True)
class Tables:
    """The physical table names the adapters use."""

    keys: str
    threads: str
    usage: str
    tools: str
    idempotency: str
