"""JobStore on SQLite. Each status change is one conditional UPDATE: a worker starting a job and
a client cancelling it cannot both win."""

from __future__ import annotations

import sqlite3

from threadgate.domain.errors import Conflict
from threadgate.domain.jobs import Job, JobOutcome
from threadgate.stores.sqlite.db import Database, dumps, loads


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        account_id=row["account_id"],
        key_id=row["key_id"],
        endpoint=row["endpoint"],
        body=loads(row["body"]),
        model=row["model"],
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        response=loads(row["response"]),
        error=loads(row["error"]),
        cost_micros=row["cost_micros"],
    )


def _scope(account_id: str, key_id: str | None) -> tuple[str, list]:
    """The WHERE clause that makes a job visible to its key (or, key_id None, its account)."""
    if key_id is None:
        return "account_id = ?", [account_id]
    return "account_id = ? AND key_id = ?", [account_id, key_id]


class SqliteJobStore:
    def __init__(self, db: Database):
        self.db = db

    def create_job(self, job: Job) -> None:
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO jobs (id, account_id, key_id, endpoint, body, model, status, created_at,"
                " started_at, completed_at, response, error, cost_micros)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.account_id, job.key_id, job.endpoint, dumps(job.body), job.model, job.status,
                 job.created_at, job.started_at, job.completed_at, dumps(job.response), dumps(job.error),
                 job.cost_micros),
            )

    def get_job(self, account_id: str, job_id: str, key_id: str | None = None) -> Job | None:
        where, params = _scope(account_id, key_id)
        row = self.db.one(f"SELECT * FROM jobs WHERE id = ? AND {where}", [job_id, *params])
        return _job(row) if row else None

    def list_jobs(self, account_id: str, key_id: str, limit: int) -> list[Job]:
        rows = self.db.query(
            "SELECT * FROM jobs WHERE key_id = ? AND account_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (key_id, account_id, limit),
        )
        return [_job(r) for r in rows]

    def start_job(self, job_id: str, now_ms: int) -> Job | None:
        with self.db.tx() as c:
            cur = c.execute(
                "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
                (now_ms, job_id),
            )
            if cur.rowcount != 1:
                return None
            return _job(c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def finish_job(self, job_id: str, outcome: JobOutcome, now_ms: int) -> bool:
        with self.db.tx() as c:
            cur = c.execute(
                "UPDATE jobs SET status = ?, response = ?, error = ?, cost_micros = ?, completed_at = ?"
                " WHERE id = ? AND status = 'running'",
                (outcome.status, dumps(outcome.response), dumps(outcome.error), outcome.cost_micros, now_ms, job_id),
            )
            if cur.rowcount == 1:
                return True
            c.execute(
                "UPDATE jobs SET cost_micros = ? WHERE id = ? AND status = 'cancelled'",
                (outcome.cost_micros, job_id),
            )
            return False

    def cancel_job(self, account_id: str, job_id: str, key_id: str | None, now_ms: int) -> Job | None:
        where, params = _scope(account_id, key_id)
        with self.db.tx() as c:
            row = c.execute(f"SELECT * FROM jobs WHERE id = ? AND {where}", [job_id, *params]).fetchone()
            if row is None:
                return None
            if row["status"] not in ("queued", "running"):
                raise Conflict(f"job {job_id} already {row['status']}; only queued or running jobs can be cancelled")
            c.execute("UPDATE jobs SET status = 'cancelled', completed_at = ? WHERE id = ?", (now_ms, job_id))
            return _job(c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def unfinished_jobs(self, limit: int = 100) -> list[Job]:
        rows = self.db.query(
            "SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at, id LIMIT ?", (limit,)
        )
        return [_job(r) for r in rows]

    def requeue_job(self, job_id: str) -> bool:
        with self.db.tx() as c:
            cur = c.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL WHERE id = ? AND status = 'running'", (job_id,)
            )
            return cur.rowcount == 1
