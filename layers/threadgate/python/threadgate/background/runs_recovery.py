"""At a local start, every run still marked running was left by a dead process (local mode is
ONE process per data directory): each is ended as `steps.fail_run` ends it — its open model call
settled from what it had streamed, its thread left valid, its thread lock released — so the
thread is usable at once. Runs of jobs are left to the jobs worker, which resumes them."""

from __future__ import annotations

import logging

from threadgate.domain.steps import DIED, fail_run
from threadgate.runtime import Runtime

log = logging.getLogger("threadgate")
LIMIT = 10_000


async def end_dead_runs(rt: Runtime) -> int:
    runs, jobs = rt.stores.runs, rt.stores.jobs
    if runs is None:
        return 0
    deps = rt.run_deps()
    ended = 0
    for run in runs.unfinished_runs(LIMIT):
        if run.job_id is not None and jobs is not None:
            job = jobs.get_job(run.account_id, run.job_id)
            if job is not None and not job.finished:
                continue  # the job resumes it
        await fail_run(deps, run.id, DIED)
        ended += 1
    if ended:
        log.warning("ended %d turns a previous process left unfinished", ended)
    return ended
