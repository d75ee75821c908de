"""Lambda SnapStart hooks for the functions that have it (docs/deploy.md, "Cold starts").

With SnapStart, Lambda initializes a published version once, snapshots the environment and
restores new environments from that snapshot. What belongs in it is what every restored
environment may share: imported code (route modules, every adapter the runtime is built from)
and files read once. What must not be in it: network clients (their connections would be dead
or shared after a restore), provider keys (a key rotated after the snapshot would never be
picked up) and random state (every restored environment would draw the same numbers, retry
jitter included).

So `before_snapshot` only imports; `after_restore` reseeds `random` and builds the runtime
(stores, provider clients with freshly read keys, search clients), before the first request.
Without SnapStart (locally, in tests, or a function without it) the hooks never run and the
runtime is built on the first request, as before.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
from typing import Any

# What the runtime is built from on AWS (threadgate.runtime.build, mode "aws") and what a model
# step imports late; every module of a package ending in ".*".
RUNTIME_MODULES = (
    "threadgate.runtime",
    "threadgate.stores.dynamodb.*",
    "threadgate.providers.anthropic.client",
    "threadgate.providers.openai.client",
    "threadgate.providers.bedrock.client",
    "threadgate.providers.passthrough",
    "threadgate.providers.local",
    "threadgate.search.indexing",
    "threadgate.search.embedders",
    "threadgate.search.opensearch",
    "threadgate.domain.steps",
    "aws_lambda_powertools.utilities.parameters",
)


def register(app: Any = None) -> None:
    """Register the hooks when running on a Lambda runtime that has them (Python 3.12+). `app`:
    the api function's FastAPI app, whose route modules join the snapshot and which is handed
    the runtime."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:  # not on Lambda's managed runtime: nothing is ever snapshotted
        return
    register_before_snapshot(before_snapshot, app)
    register_after_restore(after_restore, app)


def before_snapshot(app: Any = None) -> None:
    if app is not None:
        app.include_route_modules()
    for name in RUNTIME_MODULES:
        if name.endswith(".*"):
            package = importlib.import_module(name[:-2])
            for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
                importlib.import_module(module.name)
        else:
            importlib.import_module(name)


def after_restore(app: Any = None) -> None:
    random.seed()  # from os.urandom: each restored environment draws its own numbers
    if app is not None:
        ensure_runtime(app)
    else:
        from threadgate.runtime import get_runtime

        get_runtime()  # what the handler's get_runtime() then returns


def ensure_runtime(app: Any) -> None:
    """The process's runtime on the api app (built on first need)."""
    if getattr(app.state, "runtime", None) is None:
        from threadgate.runtime import get_runtime

        app.state.runtime = get_runtime()
