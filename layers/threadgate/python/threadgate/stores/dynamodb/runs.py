"""RunStore on the `runs` table (one partition per run).

- `sk = RUN`: the run. Fields that never change are one JSON attribute (`fixed`, compressed when
  large); each mutable field is its own attribute (`m_<name>`, JSON), so a step's update is ONE
  UpdateItem conditional on `status = running`, and a cancel (another field) never races it.
  gsi1 = `THREAD#<thread>` x `<run id>` finds a deleted thread's runs.
- `sk = EV#<first seq:012d>`: a batch of at most BATCH_EVENTS consecutive events (`last` = the
  number of its last one), so a streamed answer costs a few writes, not one per delta. A batch
  larger than an item is split; a single event larger than an item (a huge tool output) is stored
  with that output cut and a visible marker (the live stream and the thread keep it whole).
- `sk = OUT#<tool_use_id>#<chunk:04d>`: a tool outcome, zlib-compressed and cut into chunks
  written in one transaction, so a 1 MiB webhook answer is kept whole; the first write wins.
- `ttl`: RETENTION_S after the write (resume and status are for live clients, not an archive).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import fields
from typing import Any, Sequence

from botocore.exceptions import ClientError

from threadgate.domain.errors import Conflict
from threadgate.domain.runs import MUTABLE, Run, ToolOutcome
from threadgate.stores.dynamodb._items import (
    TransactionCancelled,
    decode,
    dumps,
    encode,
    encode_values,
    is_condition_failure,
    loads,
    pack_json,
    plain,
    query_all,
    scan_all,
    transact,
    unpack_json,
)

RETENTION_S = 7 * 24 * 3600
BATCH_EVENTS = 256  # events per stored batch at most (list_events looks back this far)
ITEM_BYTES = 300 * 1024  # what one item's payload may take (the item limit is 400 KB)
CUT = "…[cut: this event was too large to store]"
RUN, EV, OUT = "RUN", "EV#", "OUT#"
_FIXED = tuple(f.name for f in fields(Run) if f.name not in MUTABLE)  # one attribute; the rest one each


def _now_s() -> int:
    return int(time.time())


def _pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def _ev(seq: int) -> str:
    return f"{EV}{seq:012d}"


class DynamoRunStore:
    def __init__(self, client: Any, table: str):
        self._db, self._table = client, table

    def _put_if_absent(self, item: dict[str, Any]) -> bool:
        try:
            self._db.put_item(TableName=self._table, Item=encode(item), ConditionExpression="attribute_not_exists(pk)")
        except ClientError as err:
            if is_condition_failure(err):
                return False
            raise
        return True

    # --- runs ---------------------------------------------------------------------------------

    def create_run(self, run: Run) -> bool:
        data = run.to_dict()
        item = {
            "pk": _pk(run.id), "sk": RUN, "account_id": run.account_id, "status": run.status,
            "gsi1pk": f"THREAD#{run.thread_id}", "gsi1sk": run.id, "ttl": _now_s() + RETENTION_S,
            **pack_json("fixed", {k: data[k] for k in _FIXED}),
            **{f"m_{k}": dumps(data[k]) for k in MUTABLE},
        }
        return self._put_if_absent(item)

    def get_run(self, run_id: str, account_id: str | None = None) -> Run | None:
        raw = self._db.get_item(TableName=self._table, Key=encode({"pk": _pk(run_id), "sk": RUN}),
                                ConsistentRead=True).get("Item")
        item = decode(raw)
        if item is None or (account_id is not None and item["account_id"] != account_id):
            return None
        return _run(item)

    def update_run(self, run_id: str, changes: dict[str, Any], *, only_if_running: bool = True) -> Run | None:
        unknown = set(changes) - MUTABLE
        if unknown:
            raise ValueError(f"not mutable run fields: {sorted(unknown)}")
        names = {f"#f{i}": f"m_{k}" for i, k in enumerate(changes)}
        values = {f":v{i}": dumps(v) for i, v in enumerate(changes.values())}
        sets = [f"#f{i} = :v{i}" for i in range(len(changes))]
        if "status" in changes:
            names["#s"], values[":s"] = "status", changes["status"]
            sets.append("#s = :s")
        condition = "attribute_exists(pk)"
        if only_if_running:
            names["#s"], values[":running"] = "status", "running"
            condition += " AND #s = :running"
        try:
            out = self._db.update_item(
                TableName=self._table, Key=encode({"pk": _pk(run_id), "sk": RUN}),
                UpdateExpression="SET " + ", ".join(sets), ConditionExpression=condition,
                ExpressionAttributeNames=names, ExpressionAttributeValues=encode_values(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if is_condition_failure(err):
                return None
            raise
        return _run(decode(out["Attributes"]))  # type: ignore[arg-type]

    def unfinished_runs(self, limit: int = 100) -> list[Run]:
        """A scan: it serves recovery at a local start (emulators, tests), never a request."""
        runs = [_run(item) for item in scan_all(
            self._db, TableName=self._table, FilterExpression="sk = :run AND #s = :running",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=encode_values({":run": RUN, ":running": "running"}), ConsistentRead=True,
        )]
        runs.sort(key=lambda r: (r.created_at, r.id))
        return runs[:limit]

    def prune_runs(self, created_before_ms: int, limit: int = 100) -> int:
        """A scan, for local emulators: on AWS the table's TTL removes old runs."""
        old = [item["pk"] for item in scan_all(
            self._db, TableName=self._table, FilterExpression="sk = :run AND #s <> :running",
            ExpressionAttributeNames={"#s": "status", "#f": "fixed", "#fz": "fixed_z"},
            ProjectionExpression="pk, #f, #fz", ExpressionAttributeValues=encode_values({":run": RUN, ":running": "running"}),
        ) if unpack_json(item, "fixed")["created_at"] < created_before_ms][:limit]
        for pk in old:
            self._delete_partition(pk)
        return len(old)

    def delete_thread_runs(self, account_id: str, thread_id: str) -> None:
        runs = query_all(
            self._db, TableName=self._table, IndexName="gsi1", KeyConditionExpression="gsi1pk = :t",
            ExpressionAttributeValues=encode_values({":t": f"THREAD#{thread_id}"}),
        )
        for item in list(runs):
            if item.get("account_id") == account_id:
                self._delete_partition(item["pk"])

    def delete_run(self, run_id: str) -> None:
        self._delete_partition(_pk(run_id))

    def _delete_partition(self, pk: str) -> None:
        keys = list(query_all(
            self._db, TableName=self._table, KeyConditionExpression="pk = :p",
            ExpressionAttributeValues=encode_values({":p": pk}), ProjectionExpression="pk, sk",
        ))
        for start in range(0, len(keys), 25):  # BatchWriteItem's limit
            requests = [{"DeleteRequest": {"Key": encode(k)}} for k in keys[start:start + 25]]
            while requests:
                out = self._db.batch_write_item(RequestItems={self._table: requests})
                requests = out.get("UnprocessedItems", {}).get(self._table, [])

    # --- events -------------------------------------------------------------------------------

    def append_events(self, run_id: str, first_seq: int, events: Sequence[dict[str, Any]]) -> None:
        # One conditional put per batch: a batch starting where a stored one starts is refused.
        # (The run's event log has one writer; this catches a second one without a read.)
        seq = first_seq
        for batch in _batches(list(events)):
            item = {"pk": _pk(run_id), "sk": _ev(seq), "last": seq + len(batch) - 1,
                    "ttl": _now_s() + RETENTION_S, **pack_json("events", batch)}
            if not self._put_if_absent(item):
                raise Conflict(f"run {run_id}: event numbers from {seq} are taken")
            seq += len(batch)

    def list_events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        out: list[tuple[int, dict[str, Any]]] = []
        lowest = max(1, after_seq + 2 - BATCH_EVENTS)  # the batch holding after_seq + 1 starts here at the earliest
        items = query_all(
            self._db, TableName=self._table, KeyConditionExpression="pk = :p AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues=encode_values({":p": _pk(run_id), ":lo": _ev(lowest), ":hi": _ev(10**12 - 1)}),
            ConsistentRead=True,
        )
        for item in items:
            first = int(item["sk"][len(EV):])
            for i, event in enumerate(unpack_json(item, "events")):
                if first + i > after_seq:
                    out.append((first + i, event))
                    if len(out) >= limit:
                        return out
        return out

    def last_event_seq(self, run_id: str) -> int:
        page = self._db.query(
            TableName=self._table, KeyConditionExpression="pk = :p AND begins_with(sk, :ev)",
            ExpressionAttributeValues=encode_values({":p": _pk(run_id), ":ev": EV}),
            ScanIndexForward=False, Limit=1, ConsistentRead=True, ProjectionExpression="#l",
            ExpressionAttributeNames={"#l": "last"},
        )
        items = page.get("Items") or []
        return int(plain(decode(items[0])["last"])) if items else 0  # type: ignore[index]

    # --- tool outcomes --------------------------------------------------------------------------

    def put_tool_outcome(self, run_id: str, tool_use_id: str, outcome: ToolOutcome) -> ToolOutcome:
        data = zlib.compress(json.dumps(outcome.to_dict(), ensure_ascii=False).encode(), 6)
        chunks = [data[i:i + ITEM_BYTES] for i in range(0, len(data), ITEM_BYTES)] or [b""]
        ttl = _now_s() + RETENTION_S
        items = [{"pk": _pk(run_id), "sk": f"{OUT}{tool_use_id}#{n:04d}", "part": chunk, "parts": len(chunks),
                  "ttl": ttl} for n, chunk in enumerate(chunks)]
        if len(items) == 1:
            self._put_if_absent(items[0])
        else:
            first = {"Put": {"TableName": self._table, "Item": encode(items[0]),
                             "ConditionExpression": "attribute_not_exists(pk)"}}
            try:
                transact(self._db, [first] + [{"Put": {"TableName": self._table, "Item": encode(i)}} for i in items[1:]])
            except TransactionCancelled as cancelled:
                if not cancelled.condition_failed(0):
                    raise
        return self.get_tool_outcomes(run_id, [tool_use_id])[tool_use_id]  # the first write's

    def get_tool_outcomes(self, run_id: str, tool_use_ids: Sequence[str]) -> dict[str, ToolOutcome]:
        if not tool_use_ids:
            return {}
        wanted = set(tool_use_ids)
        parts: dict[str, list[tuple[int, bytes]]] = {}
        items = query_all(
            self._db, TableName=self._table, KeyConditionExpression="pk = :p AND begins_with(sk, :out)",
            ExpressionAttributeValues=encode_values({":p": _pk(run_id), ":out": OUT}), ConsistentRead=True,
        )
        counts: dict[str, int] = {}
        for item in items:
            tool_use_id, n = item["sk"][len(OUT):].rsplit("#", 1)
            if tool_use_id in wanted:
                parts.setdefault(tool_use_id, []).append((int(n), plain(item["part"])))
                counts[tool_use_id] = int(item["parts"])
        found = {}
        for tool_use_id, chunks in parts.items():
            if len(chunks) == counts[tool_use_id]:  # all chunks are written in one transaction
                data = zlib.decompress(b"".join(c for _, c in sorted(chunks)))
                found[tool_use_id] = ToolOutcome.from_dict(json.loads(data))
        return found


def _run(item: dict[str, Any]) -> Run:
    data = dict(unpack_json(item, "fixed"))
    data.update({k: loads(item[f"m_{k}"]) for k in MUTABLE if f"m_{k}" in item})
    return Run.from_dict(data)


def _batches(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive slices that each fit one item: BATCH_EVENTS events, ITEM_BYTES of plain JSON
    (an event larger than that alone in its slice, stored compressed — or cut if even that
    does not fit)."""
    out: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for event in events:
        n = len(dumps(event).encode())
        if n > ITEM_BYTES and _packed_size([event]) > ITEM_BYTES:
            event = _cut(event)
        if current and (len(current) >= BATCH_EVENTS or size + n > ITEM_BYTES):
            out.append(current)
            current, size = [], 0
        current.append(event)
        size += n
    if current:
        out.append(current)
    return out


def _packed_size(events: list[dict[str, Any]]) -> int:
    packed = pack_json("events", events)
    value = next(iter(packed.values()))
    return len(value if isinstance(value, bytes) else value.encode())


def _cut(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its longest string field shortened until it fits (a visible marker says so)."""
    event = dict(event)
    longest = max((k for k, v in event.items() if isinstance(v, str)), key=lambda k: len(event[k]), default=None)
    if longest is None:
        return {"type": event.get("type"), "cut": CUT}
    text = event[longest]
    keep = len(text)
    while keep > 0 and _packed_size([{**event, longest: text[:keep] + CUT}]) > ITEM_BYTES:
        keep = keep * 2 // 3
    event[longest] = text[:keep] + CUT
    return event
