"""An inference request's count (API.md §4.2) riding in its first reservation's write.

The HTTP layer opens a tally for each request it counts (`api/request_counting.py`), keyed by the
request id; the first reservation made under that request id (`Meter.reserve`: a passthrough
call's, a thread turn's first call) asks the ledger to count the request in the same transaction
(`Ledger.reserve(count_request=True)`), so the common answer costs no write of its own. When the
answer is complete the HTTP layer adds what is left: the error or 402 it was answered with, or
the whole request when nothing counted it (no reservation was made: a 400, a 404, an idempotent
replay, a job submission; or the store cannot count with a reservation: DynamoDB).

A kill -9 after the reservation committed leaves the request counted (as not an error: its
status was never sent); one before it, uncounted — as before, when the count was written only
once the answer was complete. Jobs and durable drivers reserve under other request ids (or in
other processes): they never find a tally.
"""

from __future__ import annotations

from dataclasses import dataclass

_open: dict[str, "Tally"] = {}


@dataclass
class Tally:
    day: str | None = None  # the UTC day the request was counted under (None: not counted yet)


def open_tally(request_id: str) -> Tally:
    tally = _open[request_id] = Tally()
    return tally


def close_tally(request_id: str) -> None:
    _open.pop(request_id, None)


def uncounted(request_id: str) -> Tally | None:
    """The open tally of `request_id` if its request is not counted yet."""
    tally = _open.get(request_id)
    return tally if tally is not None and tally.day is None else None
