"""Settles reservations a crash left open, at their estimate (invariant 1), and — locally —
removes runs older than RUN_RETENTION_MS (their events hold streamed text; DynamoDB's TTL does
this on AWS).

Locally the server runs `sweep_forever` as a task; on AWS the `sweeper` Lambda calls
`domain.metering.sweep_expired` on a schedule.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("threadgate")

RUN_RETENTION_MS = 7 * 24 * 3600 * 1000  # as the DynamoDB runs table's TTL


async def sweep_forever(rt: Any) -> None:
    from threadgate.domain.metering import sweep_expired

    while True:
        try:
            swept = await asyncio.to_thread(sweep_expired, rt.stores.ledger, rt.clock)
            if swept:
                log.warning("settled %d expired reservations at their estimate", swept)
            if rt.stores.runs is not None:
                await asyncio.to_thread(rt.stores.runs.prune_runs, rt.clock.now_ms() - RUN_RETENTION_MS)
        except Exception as exc:  # keep sweeping; the next round retries
            log.error("sweeper failed: %s", type(exc).__name__)
        await asyncio.sleep(rt.settings.sweep_interval_s)
