"""Async jobs on AWS: the SQS-fed worker behind the `jobs` Lambda (API.md §11).

The api and stream functions store a queued job and send `{job_id, account_id}` to the jobs queue
(`jobs_runner.SqsJobQueue`). `handle` runs a batch of those messages concurrently (Powertools
AsyncBatchProcessor, partial batch failures). For each message:

- the job is started with a conditional write (queued → running only): a job cancelled before it
  starts never runs, a finished one (a duplicate delivery) is a no-op success;
- the job runs the turn its synchronous route would run and stores that route's answer or error
  object; meanwhile the job is re-read every CANCEL_POLL_S, and a client's cancel stops the turn,
  which settles what it was billed (the engine settles each model call exactly once).

A retry never runs a thread turn twice:
- a failure before the turn starts (e.g. the store is throttled while preparing) puts the job back
  to queued and fails the record: SQS redelivers it after the visibility timeout;
- a job found `running` on redelivery was started by another receive of the message. If that
  started less than LEASE_MS ago it may still run (SQS delivers at least once): the record fails,
  and comes back after the visibility timeout, when the job is finished (no-op) or its worker is
  gone. Otherwise its worker died mid-turn (Lambda timeout or crash): a thread-turn job RESUMES
  its run from the last completed step (nothing persisted is repeated; the job's cost counts
  every attempt); a passthrough job, which has no steps to resume, is marked failed
  (INTERRUPTED), never run again.
A thread-turn job whose run is handed to Step Functions is finished by its run's last step.
After maxReceiveCount receives SQS moves the message to the DLQ, which feeds this same function:
those records (`fail_dead_letter`) mark the job failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from threadgate.background.jobs_runner import (
    PreparedJob,
    cancel_job_run,
    error_object,
    existing_job_run,
    prepare_stored_job,
    resume_job_run,
    run_prepared,
)
from threadgate.background.sqs_batches import process_batch
from threadgate.domain.errors import GatewayError
from threadgate.domain.jobs import Job, JobOutcome, parse_endpoint
from threadgate.ports import JobStore
from threadgate.runtime import Runtime

log = logging.getLogger("threadgate.jobs")

# No Lambda runs longer than 15 minutes: a job running for longer has lost its worker.
LEASE_MS = 15 * 60 * 1000
CANCEL_POLL_S = 2.0

INTERRUPTED = ("the job's worker stopped before the job finished; it was not run again so that its "
               "turn is not repeated (submit it again)")
GAVE_UP = "the job could not be run: its queue gave up after repeated failures (submit it again)"
INTERNAL = "internal error while running the job"


class JobBusy(Exception):
    """The job is running under another receive of its message: retry after the visibility timeout."""


@dataclass(frozen=True)
class JobMessage:
    job_id: str
    account_id: str

    @classmethod
    def parse(cls, body: str) -> "JobMessage":
        """Raises ValueError/KeyError/TypeError on a body that does not name a job."""
        data = json.loads(body)
        return cls(job_id=str(data["job_id"]), account_id=str(data["account_id"]))


def handle(event: dict[str, Any], context: Any, rt: Runtime) -> dict[str, Any]:
    """The jobs Lambda: one batch from the jobs queue, or from its DLQ. Returns batchItemFailures."""

    async def run_record(record: Any) -> None:
        await run_job_message(rt, JobMessage.parse(record.body))

    return process_batch(event, context, rt.settings.jobs_queue_url, live=run_record,
                         dead=lambda record: fail_dead_letter(rt, record.body))


async def run_job_message(rt: Runtime, message: JobMessage) -> None:
    jobs = _jobs(rt)
    job = jobs.start_job(message.job_id, rt.clock.now_ms())
    if job is None:
        await _not_started(rt, message)
        return
    run = existing_job_run(rt, job)
    if run is not None:  # an earlier receive started its run, then put the job back: resume it
        await _resume(rt, job, run)
        return
    try:
        prepared = prepare_stored_job(rt, job)
    except GatewayError as err:  # e.g. its key was revoked meanwhile: the job's answer is that error
        outcome = JobOutcome.failed(error_object(parse_endpoint(job.endpoint), err))
    except Exception:
        jobs.requeue_job(job.id)  # nothing ran yet: the redelivery runs it from the start
        raise
    else:
        outcome = await _run_until_cancelled(rt, job, run_prepared(rt, prepared), prepared)
    if outcome is not None:
        jobs.finish_job(job.id, outcome, rt.clock.now_ms())


async def _not_started(rt: Runtime, message: JobMessage) -> None:
    job = _jobs(rt).get_job(message.account_id, message.job_id)
    if job is None or job.finished:  # expired, or cancelled / already run: nothing to do
        return
    if job.status == "running" and rt.clock.now_ms() - (job.started_at or 0) >= LEASE_MS:
        run = existing_job_run(rt, job)
        if run is not None:
            await _resume(rt, job, run)
            return
        log.warning("job %s was interrupted by its worker's end; marking it failed", job.id)
        fail_job(rt, job, INTERRUPTED)
        return
    raise JobBusy(f"job {job.id} is {job.status} under another delivery")


async def _resume(rt: Runtime, job: Job, run: Any) -> None:
    """Carry on the job's run from its last completed step (its end finishes the job)."""
    outcome = await _run_until_cancelled(rt, job, resume_job_run(rt, job, run), None)
    if outcome is not None:
        _jobs(rt).finish_job(job.id, outcome, rt.clock.now_ms())


async def _run_until_cancelled(rt: Runtime, job: Job, work: Any, prepared: PreparedJob | None) -> JobOutcome | None:
    """Run the job's call, stopped if the client cancels the job meanwhile (the store says so):
    a thread turn's run stops at its next step boundary (its end records the job's cost); a
    passthrough call is interrupted and settles what it was sent."""
    task = asyncio.create_task(work, name=f"job:{job.id}")
    cost = (lambda: prepared.cost_micros) if prepared is not None else (lambda: 0)
    while not (await asyncio.wait({task}, timeout=CANCEL_POLL_S))[0]:
        if await _cancelled(rt, job):
            if cancel_job_run(rt, job.id):
                await asyncio.gather(task, return_exceptions=True)
                return None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # the call settles what it used
            # finish_job keeps the cancellation and records what the job was billed.
            return JobOutcome.failed({}, cost())
    try:
        return task.result()
    except Exception as exc:  # a bug or a store outage mid-turn: end the job visibly, never rerun it
        log.error("job %s failed: %s", job.id, type(exc).__name__)
        err = error_object(parse_endpoint(job.endpoint), GatewayError(INTERNAL))
        return JobOutcome.failed(err, cost())


async def _cancelled(rt: Runtime, job: Job) -> bool:
    try:
        current = await asyncio.to_thread(_jobs(rt).get_job, job.account_id, job.id)
    except Exception as exc:  # a failed poll is not a cancel: look again next time
        log.warning("job %s: status check failed: %s", job.id, type(exc).__name__)
        return False
    return current is not None and current.status == "cancelled"


def fail_dead_letter(rt: Runtime, body: str) -> None:
    """A message SQS gave up on: its job (if still unfinished) ends failed."""
    try:
        message = JobMessage.parse(body)
    except (ValueError, KeyError, TypeError):
        log.error("dropping a dead letter that names no job")
        return
    job = _jobs(rt).get_job(message.account_id, message.job_id)
    if job is not None and not job.finished:
        fail_job(rt, job, GAVE_UP)


def fail_job(rt: Runtime, job: Job, message: str) -> None:
    """queued|running → failed with an api_error in the endpoint's error shape (a job cancelled
    meanwhile stays cancelled)."""
    jobs = _jobs(rt)
    if job.status == "queued" and jobs.start_job(job.id, rt.clock.now_ms()) is None:
        return
    error = error_object(parse_endpoint(job.endpoint), GatewayError(message))
    jobs.finish_job(job.id, JobOutcome.failed(error, job.cost_micros), rt.clock.now_ms())


def _jobs(rt: Runtime) -> JobStore:
    assert rt.stores.jobs is not None, "the jobs worker needs the jobs table"
    return rt.stores.jobs
