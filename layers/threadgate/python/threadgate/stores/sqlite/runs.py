"""RunStore on SQLite: runs (the record as JSON next to the columns queries need), their events
(one row each) and tool outcomes (first write wins)."""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

from threadgate.domain.errors import Conflict
from threadgate.domain.runs import MUTABLE, Run, ToolOutcome
from threadgate.stores.sqlite.db import Database, dumps, loads


class SqliteRunStore:
    inline = True  # microsecond calls: made on the event loop (domain/off_loop.py)

    def __init__(self, db: Database):
        self.db = db

    def create_run(self, run: Run) -> bool:
        with self.db.tx() as c:
            cur = c.execute(
                "INSERT INTO runs (id, account_id, thread_id, status, created_at, data) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO NOTHING",
                (run.id, run.account_id, run.thread_id, run.status, run.created_at, dumps(run.to_dict())),
            )
            return cur.rowcount == 1

    def get_run(self, run_id: str, account_id: str | None = None) -> Run | None:
        sql, params = "SELECT data FROM runs WHERE id = ?", [run_id]
        if account_id is not None:
            sql, params = sql + " AND account_id = ?", params + [account_id]
        row = self.db.one(sql, params)
        return Run.from_dict(loads(row["data"])) if row else None

    def update_run(self, run_id: str, changes: dict[str, Any], *, only_if_running: bool = True) -> Run | None:
        unknown = set(changes) - MUTABLE
        if unknown:
            raise ValueError(f"not mutable run fields: {sorted(unknown)}")
        with self.db.tx() as c:
            row = c.execute("SELECT data, status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or (only_if_running and row["status"] != "running"):
                return None
            data = {**loads(row["data"]), **changes}
            c.execute("UPDATE runs SET status = ?, data = ? WHERE id = ?", (data["status"], dumps(data), run_id))
            return Run.from_dict(data)

    def unfinished_runs(self, limit: int = 100) -> list[Run]:
        rows = self.db.query(
            "SELECT data FROM runs WHERE status = 'running' ORDER BY created_at, id LIMIT ?", (limit,))
        return [Run.from_dict(loads(r["data"])) for r in rows]

    def prune_runs(self, created_before_ms: int, limit: int = 100) -> int:
        with self.db.tx() as c:
            ids = [r["id"] for r in c.execute(
                "SELECT id FROM runs WHERE created_at < ? AND status != 'running' LIMIT ?", (created_before_ms, limit))]
            self._delete(c, ids)
            return len(ids)

    def delete_run(self, run_id: str) -> None:
        with self.db.tx() as c:
            self._delete(c, [run_id])

    def delete_thread_runs(self, account_id: str, thread_id: str) -> None:
        with self.db.tx() as c:
            self._delete(c, [r["id"] for r in c.execute(
                "SELECT id FROM runs WHERE thread_id = ? AND account_id = ?", (thread_id, account_id))])

    @staticmethod
    def _delete(c: sqlite3.Connection, ids: list[str]) -> None:
        for table, column in (("run_events", "run_id"), ("tool_outcomes", "run_id"), ("runs", "id")):
            c.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(i,) for i in ids])

    def append_events(self, run_id: str, first_seq: int, events: Sequence[dict[str, Any]]) -> None:
        try:
            with self.db.tx() as c:
                c.executemany(
                    "INSERT INTO run_events (run_id, seq, event) VALUES (?, ?, ?)",
                    [(run_id, first_seq + i, dumps(e)) for i, e in enumerate(events)],
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"run {run_id}: event numbers from {first_seq} are taken") from None

    def list_events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        rows = self.db.query(
            "SELECT seq, event FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after_seq, limit),
        )
        return [(r["seq"], loads(r["event"])) for r in rows]

    def last_event_seq(self, run_id: str) -> int:
        row = self.db.one("SELECT MAX(seq) AS last FROM run_events WHERE run_id = ?", (run_id,))
        return int(row["last"] or 0) if row else 0

    def put_tool_outcome(self, run_id: str, tool_use_id: str, outcome: ToolOutcome) -> ToolOutcome:
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO tool_outcomes (run_id, tool_use_id, outcome) VALUES (?, ?, ?)"
                " ON CONFLICT(run_id, tool_use_id) DO NOTHING",
                (run_id, tool_use_id, dumps(outcome.to_dict())),
            )
            row = c.execute("SELECT outcome FROM tool_outcomes WHERE run_id = ? AND tool_use_id = ?",
                            (run_id, tool_use_id)).fetchone()
            return ToolOutcome.from_dict(loads(row["outcome"]))

    def get_tool_outcomes(self, run_id: str, tool_use_ids: Sequence[str]) -> dict[str, ToolOutcome]:
        if not tool_use_ids:
            return {}
        marks = ", ".join("?" * len(tool_use_ids))
        rows = self.db.query(
            f"SELECT tool_use_id, outcome FROM tool_outcomes WHERE run_id = ? AND tool_use_id IN ({marks})",
            (run_id, *tool_use_ids),
        )
        return {r["tool_use_id"]: ToolOutcome.from_dict(loads(r["outcome"])) for r in rows}
