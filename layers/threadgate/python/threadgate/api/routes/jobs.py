"""/v1/jobs: submit a request to run later, poll it, list, cancel (API.md §11).

A job is visible to the key that submitted it and to the admin keys of its account; to anyone
else it does not exist (404). Submission checks the inner request exactly as its synchronous
route would, so a job that would be refused is refused now, with nothing stored.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from threadgate.api import idempotency, render
from threadgate.api.deps import get_principal, get_runtime
from threadgate.background.jobs_runner import dispatch, dispatcher_for, prepare_job
from threadgate.api.schemas import Body
from threadgate.domain.errors import GatewayError, InvalidRequest, NotFound
from threadgate.domain.jobs import new_job, parse_endpoint, without_stream
from threadgate.domain.keys import new_id
from threadgate.domain.models import Principal
from threadgate.ports import JobStore
from threadgate.runtime import Runtime

router = APIRouter()


class JobsUnavailable(GatewayError):
    status, type = 501, "api_error"


class JobCreate(Body):
    endpoint: str = Field(min_length=1, max_length=300)
    body: Any


def _store(rt: Runtime) -> JobStore:
    if rt.stores.jobs is None or (rt.settings.mode == "aws" and not rt.settings.jobs_queue_url):
        # A deployment without the jobs queue has no worker: accepting a job that nothing would
        # ever run is worse than saying so.
        raise JobsUnavailable("async jobs are not available on this deployment")
    return rt.stores.jobs


def _visible_to(p: Principal) -> str | None:
    """The key filter of a job lookup: admin keys see every job of their account."""
    return None if p.is_admin else p.key_id


@router.post("/v1/jobs", status_code=202)
async def create_job(
    body: JobCreate, request: Request, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
) -> Any:
    store = _store(rt)
    endpoint = parse_endpoint(body.endpoint)
    if not isinstance(body.body, dict):
        raise InvalidRequest(f"body: must be a JSON object (the request body of {endpoint.path})", param="body")
    inner = without_stream(body.body)
    prepare_job(rt, p, endpoint, inner, request.scope["state"]["request_id"])  # 4xx now, nothing stored

    async def submit() -> tuple[int, Any, dict[str, str]]:
        job = new_job(new_id("job_"), account_id=p.account_id, key_id=p.key_id, endpoint=endpoint, body=inner,
                      now_ms=rt.clock.now_ms())
        store.create_job(job)
        dispatch(rt, dispatcher_for(request.app, rt), job)  # 503 (job stored failed) if it cannot be queued
        created = {k: v for k, v in render.job(job).items() if k in ("id", "object", "status", "endpoint", "created_at")}
        return 202, created, {}

    # A repeat differing only in the ignored `stream` flag is the same job (as on the sync routes).
    same_job = body.model_copy(update={"body": inner})
    return await idempotency.idempotent(request, rt, p, same_job, submit)


@router.get("/v1/jobs")
async def list_jobs(
    limit: int = Query(default=20, ge=1, le=100),
    p: Principal = Depends(get_principal),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    jobs = _store(rt).list_jobs(p.account_id, p.key_id, limit + 1)
    return {"object": "list", "data": [render.job(j) for j in jobs[:limit]], "has_more": len(jobs) > limit}


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)) -> Any:
    job = _store(rt).get_job(p.account_id, job_id, _visible_to(p))
    if job is None:
        raise NotFound("job not found")
    return render.job(job)


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(
    job_id: str, request: Request, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
) -> Any:
    store = _store(rt)
    job = store.cancel_job(p.account_id, job_id, _visible_to(p), rt.clock.now_ms())  # 409 once finished
    if job is None:
        raise NotFound("job not found")
    await dispatcher_for(request.app, rt).cancel(job_id)  # a running job settles what it used first
    return render.job(store.get_job(p.account_id, job_id) or job)
