"""The Lambda Web Adapter binary the stream function runs, built from crates.io with cargo.

Built once per machine into the user's cache (never the repository): ~2.5 min on a clean machine,
4.6 MB. When a test process has collected the tier and the binary is not there yet, it starts the
build in the background and moves the tier to the end of the run, so the build overlaps the rest
of the suite; the tier waits for it. One build at a time (a file lock).

    python -m tests.infra.lwa_build      # build now (what the background start runs)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# The crate behind each pinned layer version (infra `lwaLayerVersion`): the layer's release is
# the crate's (awslabs/aws-lambda-web-adapter README: layer 26 = v1.0.0-rc1).
LAYER_RELEASES = {26: "1.0.0-rc1"}
CRATE = "lambda_web_adapter"


def pinned_version() -> str | None:
    """The crate release of the layer version cdk.json pins (None: not in LAYER_RELEASES)."""
    import json

    from infra.config import ROOT, StageConfig

    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    return LAYER_RELEASES.get(StageConfig.from_context(context.get).lwa_layer_version)


def cache_dir(version: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "threadgate" / f"lambda-web-adapter-{version}"


def binary(version: str) -> Path:
    return cache_dir(version) / "bin" / "lambda-adapter"


def build(version: str) -> Path:
    """The cached binary, built first if missing; raises with cargo's output if the build fails."""
    target = binary(version)
    if target.exists():
        return target
    cargo = shutil.which("cargo")
    if cargo is None:
        raise FileNotFoundError("cargo")
    root = cache_dir(version)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build already running (the background one): wait for it
        if not target.exists():
            done = subprocess.run(
                [cargo, "install", CRATE, "--version", version, "--locked", "--bin", "lambda-adapter",
                 "--root", str(root)],
                capture_output=True, text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"cargo install {CRATE} {version} failed:\n{done.stderr[-4000:]}")
    return target


TIER = "tests/infra/test_stream_function.py"


def collection_modifyitems(items: list[Any]) -> None:
    """If the tier is collected and its binary is not built yet: start the build now and run the
    tier last (tests/conftest.py calls this)."""
    tier = [item for item in items if item.nodeid.startswith(TIER)]
    version = pinned_version() if tier else None
    if version is None or binary(version).exists():
        return
    chosen = set(map(id, tier))
    items[:] = [item for item in items if id(item) not in chosen] + tier
    start_in_background(version)


def start_in_background(version: str) -> None:
    """Start `build(version)` in a detached process if it is needed and cargo is here."""
    if binary(version).exists() or shutil.which("cargo") is None:
        return
    root = cache_dir(version)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "build.log", "a") as log:  # (two xdist workers may both start one: the second waits)
        # Not niced: on a busy machine a niced build starved for 14 minutes while the tier waited.
        subprocess.Popen([sys.executable, "-m", "tests.infra.lwa_build", version], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=Path(__file__).resolve().parents[2])


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else pinned_version()))
