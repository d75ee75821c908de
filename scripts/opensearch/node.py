"""A real single-node OpenSearch 2.19.1 with the k-NN plugin 2.19.1.0, for tests and benchmarks.

Built from Maven Central artifacts only (pom.xml; no tarball, no Docker) with Java 17 + Maven,
into a cache directory keyed by the content of pom.xml and src/ (never into the checkout):
`${XDG_CACHE_HOME:-~/.cache}/threadgate/opensearch/build-<hash>/`; jars land in ~/.m2 (~85 MB).

    python scripts/opensearch/node.py            # build if needed, run in the foreground, print the URL
    python scripts/opensearch/node.py launch --state-dir D [--parent-pid P]
        # (the test session) build + start in the background, write D/state.json, exit;
        # the node itself exits when process P does

From Python (the bench): `with running_node() as url: ...`. Standard library only: the bench
and the test session import this file without the project's dependencies.

What works on this node and what does not (k-NN `lucene` engine yes; `faiss`/`nmslib` no, the
Maven zip has no native libraries): see README.md next to this file.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
VERSION = "OpenSearch 2.19.1 + k-NN 2.19.1.0"
JAVA_OPTS = os.environ.get("OPENSEARCH_JAVA_OPTS", "-Xms512m -Xmx1g")
START_TIMEOUT_S = float(os.environ.get("OPENSEARCH_START_TIMEOUT", "240"))


def _log(message: str) -> None:
    print(f"[opensearch] {message}", file=sys.stderr, flush=True)


def java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def missing_tools() -> str | None:
    """Why this machine cannot run the node (None when it can): Java 17+ and Maven are needed."""
    java = java_binary()
    if java is None:
        return "Java is not installed (the real OpenSearch node needs Java 17+ and Maven)"
    if shutil.which("mvn") is None:
        return "Maven (mvn) is not installed (the real OpenSearch node needs Java 17+ and Maven)"
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    if not match or int(match.group(1)) < 17:
        return f"Java 17+ is needed for the real OpenSearch node, found: {out.splitlines()[:1]}"
    return None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "threadgate" / "opensearch"


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted([HERE / "pom.xml", *(p for p in (HERE / "src").rglob("*") if p.is_file())]):
        digest.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def build() -> Path:
    """The built layout (target/ with lib/, home/, classes/), building it once per source hash.
    Concurrent callers (several test sessions) wait on one file lock."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"build-{_source_hash()}"
    if (target / ".built").exists():
        return target
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".built").exists():
            return target
        work = Path(tempfile.mkdtemp(prefix="build-", dir=cache))
        shutil.copy(HERE / "pom.xml", work)
        shutil.copytree(HERE / "src", work / "src")
        _log(f"building {VERSION} with Maven into {target} (first use fetches ~85 MB into ~/.m2)")
        started = time.monotonic()
        result = subprocess.run(
            ["mvn", "-B", "-q", "-DskipTests", "package"], cwd=work, capture_output=True, text=True
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError(f"mvn package failed:\n{tail}")
        (work / ".built").touch()
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
        _log(f"built in {time.monotonic() - started:.0f} s")
    return target


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def start(data_dir: Path, *, parent_pid: int | None = None, timeout: float = START_TIMEOUT_S) -> tuple[str, int]:
    """Build if needed, start a node whose data lives in `data_dir`, wait for green health.
    Returns (url, pid). The node picks a free port itself (no race with other sessions)."""
    built = build()
    data_dir.mkdir(parents=True, exist_ok=True)
    url_file = data_dir / "http.url"
    url_file.unlink(missing_ok=True)
    command = [
        java_binary() or "java",
        *JAVA_OPTS.split(),
        f"-Dtg.home={built / 'target' / 'home'}",
        f"-Dtg.data={data_dir}",
        f"-Dtg.parent.pid={parent_pid or 0}",
        "-cp",
        f"{built / 'target' / 'classes'}{os.pathsep}{built / 'target' / 'lib' / '*'}",
        "threadgate.opensearch.TestNode",
    ]
    log_path = data_dir / "opensearch.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the node exited during start; last lines of {log_path}:\n{_tail(log_path)}")
        if url_file.exists():
            url = url_file.read_text().strip()
            with contextlib.suppress(OSError):
                if '"status":"green"' in _get(f"{url}/_cluster/health?wait_for_status=green&timeout=1s"):
                    _log(f"{VERSION} green after {time.monotonic() - started:.1f} s at {url} (pid {process.pid})")
                    return url, process.pid
        if time.monotonic() - started > timeout:
            stop(process.pid)
            raise RuntimeError(f"not green after {timeout:.0f} s; last lines of {log_path}:\n{_tail(log_path)}")
        time.sleep(0.25)


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _is_node(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"threadgate.opensearch.TestNode" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def stop(pid: int, grace_s: float = 30) -> None:
    """TERM the node (it closes its shards), KILL it if it is still there after `grace_s`."""
    if not _is_node(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _is_node(pid):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_node() -> Iterator[str]:
    """A node for the duration of the block, on a fresh temporary data directory."""
    with tempfile.TemporaryDirectory(prefix="tg-opensearch-") as data:
        url, pid = start(Path(data), parent_pid=os.getpid())
        try:
            yield url
        finally:
            stop(pid)


# --- the test session's background launch (tests/real_opensearch.py) ---------------------------


def launch(state_dir: Path, parent_pid: int) -> None:
    """Build + start, then record the outcome in `state_dir/state.json`:
    {"url", "pid", "seconds"} or {"error"}. Runs as its own process so that the test session
    keeps working meanwhile; the node outlives this process and follows `parent_pid`."""
    started = time.monotonic()
    try:
        url, pid = start(state_dir / "node", parent_pid=parent_pid)
        state = {"url": url, "pid": pid, "seconds": round(time.monotonic() - started, 1), "version": VERSION}
    except Exception as exc:  # noqa: BLE001 - reported to the tests that wait for the node
        state = {"error": str(exc)}
    tmp = state_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    tmp.rename(state_dir / "state.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "launch", "build"])
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args()
    reason = missing_tools()
    if reason:
        sys.exit(reason)
    if args.command == "build":
        print(build())
    elif args.command == "launch":
        launch(args.state_dir, args.parent_pid)
    else:
        with running_node() as url:
            print(url, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()


if __name__ == "__main__":
    main()
