"""JobStore on the `jobs` table.

- `pk = JOB#<id>`: the job. gsi1 = `KEY#<key id>` x `<created_at:015d>#<id>` lists a key's jobs
  newest first. Request and response bodies are JSON (zlib-compressed when large, see _items).
- Every status change is an UpdateItem with a ConditionExpression on the current status, so a
  worker starting a job and a client cancelling it never both win.
- `ttl` drops a job RETENTION_MS after its creation.

`unfinished_jobs` scans the table: it serves the in-process worker's recovery after a restart
(local emulators, tests). The AWS worker does not need it: its queue redelivers what a dead
worker left.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from threadgate.domain.errors import Conflict
from threadgate.domain.jobs import RETENTION_MS, UNFINISHED, Job, JobOutcome
from threadgate.stores.dynamodb._items import (
    decode,
    dumps,
    encode,
    encode_values,
    is_condition_failure,
    loads,
    pack_json,
    scan_all,
    ts_key,
    unpack_json,
)


def _pk(job_id: str) -> str:
    return f"JOB#{job_id}"


class DynamoJobStore:
    def __init__(self, client: Any, table: str):
        self._db = client
        self._table = table

    def create_job(self, job: Job) -> None:
        item: dict[str, Any] = {
            "pk": _pk(job.id),
            "id": job.id,
            "account_id": job.account_id,
            "key_id": job.key_id,
            "endpoint": job.endpoint,
            "model": job.model,
            "status": job.status,
            "created_at": job.created_at,
            "cost_micros": job.cost_micros,
            "gsi1pk": f"KEY#{job.key_id}",
            "gsi1sk": f"{ts_key(job.created_at)}#{job.id}",
            "ttl": (job.created_at + RETENTION_MS) // 1000,
            **pack_json("body", job.body),
        }
        self._db.put_item(
            TableName=self._table, Item=encode(item), ConditionExpression="attribute_not_exists(pk)"
        )

    def get_job(self, account_id: str, job_id: str, key_id: str | None = None) -> Job | None:
        item = self._get(job_id)
        if item is None or item["account_id"] != account_id or (key_id is not None and item["key_id"] != key_id):
            return None
        return _job(item)

    def list_jobs(self, account_id: str, key_id: str, limit: int) -> list[Job]:
        page = self._db.query(
            TableName=self._table,
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :k",
            # Key ids are unique, so this never drops a row; it keeps the query account-scoped.
            FilterExpression="account_id = :acc",
            ExpressionAttributeValues=encode_values({":k": f"KEY#{key_id}", ":acc": account_id}),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [_job(decode(raw)) for raw in page.get("Items", [])]  # type: ignore[arg-type]

    def start_job(self, job_id: str, now_ms: int) -> Job | None:
        try:
            answer = self._db.update_item(
                TableName=self._table,
                Key=encode({"pk": _pk(job_id)}),
                UpdateExpression="SET #s = :running, started_at = :now",
                ConditionExpression="#s = :queued",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=encode_values({":running": "running", ":queued": "queued", ":now": now_ms}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if is_condition_failure(err):
                return None
            raise
        return _job(decode(answer["Attributes"]))  # type: ignore[arg-type]

    def finish_job(self, job_id: str, outcome: JobOutcome, now_ms: int) -> bool:
        values: dict[str, Any] = {":st": outcome.status, ":cost": outcome.cost_micros, ":now": now_ms,
                                  ":running": "running"}
        sets = ["#s = :st", "cost_micros = :cost", "completed_at = :now"]
        names = {"#s": "status"}
        if outcome.response is not None:
            ((field, value),) = pack_json("response", outcome.response).items()
            names["#resp"] = field
            values[":resp"] = value
            sets.append("#resp = :resp")
        if outcome.error is not None:
            values[":err"] = dumps(outcome.error)
            sets.append("#e = :err")
            names["#e"] = "error"
        try:
            self._db.update_item(
                TableName=self._table,
                Key=encode({"pk": _pk(job_id)}),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="#s = :running",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=encode_values(values),
            )
            return True
        except ClientError as err:
            if not is_condition_failure(err):
                raise
        try:  # cancelled while it ran: keep the cancellation, record what it was billed
            self._db.update_item(
                TableName=self._table,
                Key=encode({"pk": _pk(job_id)}),
                UpdateExpression="SET cost_micros = :cost",
                ConditionExpression="#s = :cancelled",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=encode_values({":cost": outcome.cost_micros, ":cancelled": "cancelled"}),
            )
        except ClientError as err:
            if not is_condition_failure(err):
                raise
        return False

    def cancel_job(self, account_id: str, job_id: str, key_id: str | None, now_ms: int) -> Job | None:
        condition = "account_id = :acc AND #s IN (:queued, :running)"
        values: dict[str, Any] = {":acc": account_id, ":queued": "queued", ":running": "running",
                                  ":cancelled": "cancelled", ":now": now_ms}
        if key_id is not None:
            condition += " AND key_id = :key"
            values[":key"] = key_id
        try:
            answer = self._db.update_item(
                TableName=self._table,
                Key=encode({"pk": _pk(job_id)}),
                UpdateExpression="SET #s = :cancelled, completed_at = :now",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=encode_values(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if not is_condition_failure(err):
                raise
            job = self.get_job(account_id, job_id, key_id)
            if job is None:
                return None
            raise Conflict(f"job {job_id} already {job.status}; only queued or running jobs can be cancelled") from None
        return _job(decode(answer["Attributes"]))  # type: ignore[arg-type]

    def unfinished_jobs(self, limit: int = 100) -> list[Job]:
        kwargs: dict[str, Any] = dict(
            TableName=self._table,
            FilterExpression="#s IN (:queued, :running)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=encode_values({":queued": UNFINISHED[0], ":running": UNFINISHED[1]}),
            ConsistentRead=True,
        )
        jobs = [_job(item) for item in scan_all(self._db, **kwargs)]
        jobs.sort(key=lambda j: (j.created_at, j.id))
        return jobs[:limit]

    def requeue_job(self, job_id: str) -> bool:
        try:
            self._db.update_item(
                TableName=self._table,
                Key=encode({"pk": _pk(job_id)}),
                UpdateExpression="SET #s = :queued REMOVE started_at",
                ConditionExpression="#s = :running",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=encode_values({":queued": "queued", ":running": "running"}),
            )
        except ClientError as err:
            if is_condition_failure(err):
                return False
            raise
        return True

    def _get(self, job_id: str) -> dict[str, Any] | None:
        raw = self._db.get_item(TableName=self._table, Key=encode({"pk": _pk(job_id)}), ConsistentRead=True)
        return decode(raw.get("Item"))


def _job(item: dict[str, Any]) -> Job:
    return Job(
        id=item["id"],
        account_id=item["account_id"],
        key_id=item["key_id"],
        endpoint=item["endpoint"],
        body=unpack_json(item, "body"),
        model=item.get("model"),
        status=item["status"],
        created_at=item["created_at"],
        started_at=item.get("started_at"),
        completed_at=item.get("completed_at"),
        response=unpack_json(item, "response"),
        error=loads(item.get("error")),
        cost_micros=item.get("cost_micros", 0),
    )
