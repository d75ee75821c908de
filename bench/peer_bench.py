"""Threadgate next to LiteLLM's proxy, measured in one run against the same lean fake upstream.

What it does, so anyone can rerun it (`make bench-peer`, or `.venv/bin/python bench/peer_bench.py`):

1. Installs LiteLLM's proxy (pinned, `LITELLM_VERSION`) into its own venv under `bench/.peers/`
   (git-ignored; reused on later runs).
2. Starts the lean upstream (`bench/lean_upstream.py`), Threadgate (local mode, caps and ledger
   on) and LiteLLM (no database, no budgets: its cheapest configuration), and checks that all
   three answer the same text.
3. Per repetition (3): interleaves direct / Threadgate / LiteLLM calls one at a time (concurrency
   1) for added latency and added time to first token (TTFT); then 32 clients through the load
   generator (`bench/loadgen.py`) for requests per second, with the gateway pinned to core 0 and
   everything else to the other cores; CPU per request from /proc (the gateway's process tree);
   RSS after the phase.
4. Refuses to report a phase while other processes use the CPUs (their share of /proc/stat busy
   time above `FOREIGN_CPU_LIMIT` cores): it retries the phase, then marks it refused.

Targets: Threadgate `/v1/chat/completions` and LiteLLM `/v1/chat/completions` (vs a direct call to
the upstream's `/v1/chat/completions`), and a Threadgate thread turn (vs a direct Anthropic
`/v1/messages` call with the same history). Every request carries a 20-message history and
`max_tokens` 64. Thread turns run on threads seeded with that history through the store port
(seeding thousands of threads over HTTP would take minutes), one turn per thread, so history
length does not drift during a phase.

Writes bench/results/peer.json and the table in docs/benchmarks.md (between its peer markers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import MASTER, RESULTS, ROOT, free_port, machine, pct  # noqa: E402

# The version the issue measured; 1.110 moved the proxy into a `litellm-proxy` package that PyPI
# does not serve (yet).
LITELLM_VERSION = "1.108.7"
LITELLM_KEY = "sk-bench-" + "c" * 48
PEERS = ROOT / "bench" / ".peers"
FOREIGN_CPU_LIMIT = 0.15  # cores used by other processes during a phase before it is refused
CLK_TCK = os.sysconf("SC_CLK_TCK")
HISTORY = 20
MAX_TOKENS = 64
SERIAL_WARMUP = 10
NOISY_OK = False  # --noisy: record phases on a busy machine (for trying the bench, not for reports)
GATEWAY_CORE = {0}
OTHER_CORES = set(range(os.cpu_count() or 1)) - GATEWAY_CORE or GATEWAY_CORE


# --- processes ---------------------------------------------------------------------------------

def ensure_litellm() -> Path:
    venv = PEERS / f"litellm-{LITELLM_VERSION}"
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    return exe


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (LiteLLM may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int], reaped: bool = False) -> float:
    """utime + stime of `pids`; with `reaped`, plus their waited-for children's (cutime + cstime):
    a load generator that exited during a phase is still ours, not another process's."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15 if reaped else 13])
    return total / CLK_TCK


def busy_seconds() -> float:
    """All CPUs' non-idle time (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def pin(pid: int, cores: set[int]) -> None:
    for p in tree(pid):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(p, cores)


@contextlib.contextmanager
def process(argv: list[str], health: str, env: dict[str, str] | None = None, cores: set[int] | None = None,
            timeout: float = 120) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{health} did not come up")
            time.sleep(0.2)
        if cores:
            pin(proc.pid, cores)
        yield proc
    finally:
        for p in reversed(tree(proc.pid)):
            with contextlib.suppress(OSError):
                os.kill(p, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)


# --- requests ----------------------------------------------------------------------------------

def history() -> list[dict[str, str]]:
    msgs = []
    for i in range(HISTORY // 2):
        msgs.append({"role": "user", "content": f"Question {i}: how do refunds work for order {1000 + i}?"})
        msgs.append({"role": "assistant", "content": "Refunds go back to the original payment method within five days."})
    return msgs


NEW_TURN = "And how long does that take for a card payment?"


def chat_body(model: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": MAX_TOKENS,
                            "messages": history() + [{"role": "user", "content": NEW_TURN}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def messages_body(model: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": MAX_TOKENS,
                            "messages": history() + [{"role": "user", "content": NEW_TURN}]}
    if stream:
        body["stream"] = True
    return body


def turn_body(model: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": MAX_TOKENS, "content": NEW_TURN}
    if stream:
        body["stream"] = True
    return body


class Setup:
    """Keys, models and seeded threads on the Threadgate under test."""

    def __init__(self, tg: str, data_dir: str):
        self.tg, self.data_dir = tg, data_dir
        admin = {"x-api-key": MASTER}
        models = httpx.get(f"{tg}/v1/models", headers=admin).json()["data"]
        by_provider: dict[str, list[dict]] = {}
        for m in models:
            by_provider.setdefault(m.get("provider", ""), []).append(m)
        def cheapest(ms: list[dict]) -> str:
            return min(ms, key=lambda m: float(m.get("input_usd_per_mtok") or 0))["id"]

        self.openai_model = cheapest(by_provider["openai"])
        self.anthropic_model = cheapest(by_provider["anthropic"])
        key = httpx.post(f"{tg}/v1/keys", headers=admin, json={"name": "bench", "max_spend_usd": 1_000_000,
                                                               "end_user_id": "u_bench"}).json()
        self.key, self.key_id = key["secret"], key["id"]
        self.account_id = httpx.get(f"{tg}/v1/account", headers=admin).json()["id"]

    def seed_threads(self, n: int) -> list[str]:
        """`n` threads of the bench key's end user, each holding the 20-message history. Written
        through the SQLite store port while the gateway is idle (same file, WAL)."""
        from threadgate.domain.models import NewMessage, Thread
        from threadgate.stores.sqlite import open_sqlite

        stores = open_sqlite(str(Path(self.data_dir) / "threadgate.db"))
        now = int(time.time() * 1000)
        messages = [NewMessage(m["role"], m["content"], m["role"]) for m in history()]
        ids = []
        try:
            for _ in range(n):
                tid = "thr_" + uuid.uuid4().hex[:24]
                stores.threads.create_thread(Thread(tid, self.account_id, "u_bench", None, None, now, now))
                stores.threads.append_messages(self.account_id, tid, messages, now)
                ids.append(tid)
        finally:
            stores.close()
        return ids


# --- phases ------------------------------------------------------------------------------------

class Refused(Exception):
    pass


@contextlib.contextmanager
def quiet_phase(ours: list[int], name: str) -> Iterator[dict]:
    """Measures the phase's wall time and the CPU used by processes that are not ours."""
    own = ours + [os.getpid()]
    info: dict[str, float] = {}
    b0, o0, t0 = busy_seconds(), cpu_seconds(tree_all(own), reaped=True), time.monotonic()
    yield info
    wall = time.monotonic() - t0
    foreign = (busy_seconds() - b0) - (cpu_seconds(tree_all(own), reaped=True) - o0)
    info["foreign_cores"] = round(max(0.0, foreign) / wall, 3)
    if info["foreign_cores"] > FOREIGN_CPU_LIMIT and not NOISY_OK:
        raise Refused(f"{name}: other processes used {info['foreign_cores']:.2f} cores")


def tree_all(pids: list[int]) -> list[int]:
    out: list[int] = []
    for p in pids:
        out.extend(tree(p))
    return out


async def _latency(client: httpx.AsyncClient, method_url: str, headers: dict, body: dict) -> float:
    start = time.perf_counter()
    r = await client.post(method_url, headers=headers, json=body)
    r.raise_for_status()
    return (time.perf_counter() - start) * 1000


async def _ttft(client: httpx.AsyncClient, url: str, headers: dict, body: dict, marker: bytes) -> float:
    start = time.perf_counter()
    ttft = None
    async with client.stream("POST", url, headers=headers, json=body) as r:
        r.raise_for_status()
        async for chunk in r.aiter_bytes():
            if ttft is None and marker in chunk:
                ttft = (time.perf_counter() - start) * 1000
    if ttft is None:
        raise RuntimeError(f"no token from {url}")
    return ttft


def targets(up: str, tg: str, ll: str | None, s: Setup, threads: Iterator[str]) -> dict[str, Any]:
    """name -> (kind, url factory, headers, body factory); `direct_*` are the baselines."""
    up_headers = {"authorization": "Bearer sk-lean", "x-api-key": "sk-lean", "anthropic-version": "2023-06-01"}
    tg_headers = {"x-api-key": s.key}
    out = {
        "direct_chat": (lambda: f"{up}/v1/chat/completions", up_headers, lambda st: chat_body(s.openai_model, st), b'"content":"word0'),
        "threadgate_chat": (lambda: f"{tg}/v1/chat/completions", tg_headers, lambda st: chat_body(s.openai_model, st), b'"content":"word0'),
        "direct_messages": (lambda: f"{up}/v1/messages", up_headers, lambda st: messages_body(s.anthropic_model, st), b"content_block_delta"),
        "threadgate_turn": (lambda: f"{tg}/v1/threads/{next(threads)}/messages", tg_headers, lambda st: turn_body(s.anthropic_model, st), b"content_block_delta"),
    }
    if ll:
        out["litellm_chat"] = (lambda: f"{ll}/v1/chat/completions", {"authorization": f"Bearer {LITELLM_KEY}"},
                               lambda st: chat_body("bench", st), b'"content":"word0')
    return out


async def serial_phase(ts: dict[str, Any], rounds: int, stream: bool) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in ts}
    limits = httpx.Limits(max_keepalive_connections=8, keepalive_expiry=3)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        names = list(ts)
        for _ in range(SERIAL_WARMUP):  # not recorded
            for name in names:
                url, headers, body, marker = ts[name]
                await (_ttft(client, url(), headers, body(True), marker) if stream else _latency(client, url(), headers, body(False)))
        for _ in range(rounds):
            random.shuffle(names)
            for name in names:
                url, headers, body, marker = ts[name]
                value = await (_ttft(client, url(), headers, body(True), marker) if stream
                               else _latency(client, url(), headers, body(False)))
                out[name].append(value)
    return out


def load_phase(url: str, requests: list[list[Any]], concurrency: int) -> dict[str, Any]:
    host, port = url.split("//", 1)[1].split(":")
    spec = {"host": host, "port": int(port), "concurrency": concurrency, "requests": requests}
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "loadgen.py")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=ROOT)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(proc.pid, OTHER_CORES)
    out, _ = proc.communicate(json.dumps(spec).encode(), timeout=600)
    return json.loads(out)


def warmup_size(load_requests: int) -> int:
    return max(128, load_requests // 10)


def ts_names(litellm: str | None) -> list[str]:
    return ["direct_chat", "threadgate_chat", "direct_messages", "threadgate_turn"] + (["litellm_chat"] if litellm else [])


def throughput(name: str, url: str, gw_pid: int, ours: list[int], warm: list[list[Any]], requests: list[list[Any]],
               concurrency: int = 32) -> dict[str, Any]:
    pids = tree(gw_pid)
    load_phase(url, warm, concurrency)
    with quiet_phase(ours, f"{name} throughput") as info:
        c0 = cpu_seconds(pids)
        res = load_phase(url, requests, concurrency)
        used = cpu_seconds(pids) - c0
    if res["errors"]:
        raise RuntimeError(f"{name}: {res['errors']} errors under load")
    return {"req_per_s": round(res["ok"] / res["seconds"], 1),
            "cpu_ms_per_request": round(used * 1000 / res["ok"], 3),
            "p50_ms": round(pct(res["latencies_ms"], 50), 2), "rss_mb": rss_mb(pids), **info}


def retry_quiet(fn, attempts: int = 3):
    last = None
    for _ in range(attempts):
        try:
            return fn()
        except Refused as err:
            last = err
            print(f"  refused ({err}); waiting for a quiet machine", file=sys.stderr)
            time.sleep(10)
    return {"refused": str(last)}


# --- the run -----------------------------------------------------------------------------------

def same_answers(ts: dict[str, Any]) -> None:
    with httpx.Client(timeout=30) as client:
        for name, (url, headers, body, _) in ts.items():
            data = client.post(url(), headers=headers, json=body(False)).raise_for_status().json()
            if "choices" in data:
                text = data["choices"][0]["message"]["content"]
            else:
                text = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
            if not text.startswith("word0 word1"):
                raise RuntimeError(f"{name} answered {text!r}")


def run(reps: int, rounds: int, load_requests: int, with_litellm: bool) -> dict[str, Any]:
    litellm = ensure_litellm() if with_litellm else None
    up_port, tg_port, ll_port = free_port(), free_port(), free_port()
    up = f"http://127.0.0.1:{up_port}"
    results: dict[str, Any] = {"machine": machine(), "litellm_version": LITELLM_VERSION if litellm else None,
                               "history_messages": HISTORY, "max_tokens": MAX_TOKENS, "reps": []}
    with contextlib.ExitStack() as stack:
        data = stack.enter_context(tempfile.TemporaryDirectory())
        upstream = stack.enter_context(process([sys.executable, "bench/lean_upstream.py", str(up_port)], up + "/health",
                                               cores=OTHER_CORES))
        env = {**os.environ, "THREADGATE_MODE": "local", "THREADGATE_DATA_DIR": data, "THREADGATE_PORT": str(tg_port),
               "THREADGATE_MASTER_KEY": MASTER, "ANTHROPIC_API_KEY": "sk-ant-lean", "ANTHROPIC_BASE_URL": up,
               "OPENAI_API_KEY": "sk-lean", "OPENAI_BASE_URL": up + "/v1",
               "PYTHONPATH": str(ROOT / "layers" / "threadgate" / "python")}
        tg_url = f"http://127.0.0.1:{tg_port}"
        tg = stack.enter_context(process([sys.executable, "-m", "threadgate", "serve"], tg_url + "/health", env,
                                         cores=GATEWAY_CORE))
        ll_url = None
        ll = None
        s = Setup(tg_url, data)
        if litellm:
            cfg = Path(data) / "litellm.yaml"
            cfg.write_text(json.dumps({"model_list": [{"model_name": "bench", "litellm_params": {
                "model": f"openai/{s.openai_model}", "api_base": up + "/v1", "api_key": "sk-lean"}}],
                "litellm_settings": {"set_verbose": False},
                "general_settings": {"master_key": LITELLM_KEY}}))  # its only auth without a database
            ll_url = f"http://127.0.0.1:{ll_port}"
            ll = stack.enter_context(process([str(litellm), "--config", str(cfg), "--host", "127.0.0.1",
                                              "--port", str(ll_port), "--num_workers", "1"],
                                             ll_url + "/health/liveliness",
                                             {**os.environ, "LITELLM_LOG": "ERROR"}, cores=GATEWAY_CORE, timeout=240))
        ours = [upstream.pid, tg.pid] + ([ll.pid] if ll else [])
        warm = warmup_size(load_requests)
        # Every thread-turn call takes a fresh seeded thread; a refused phase is retried (at most 3 times).
        threads = iter(s.seed_threads(len(ts_names(ll_url)) + 3 * reps * (2 * (rounds + SERIAL_WARMUP) + warm + load_requests)))
        ts = targets(up, tg_url, ll_url, s, threads)
        same_answers(ts)
        for rep in range(reps):
            print(f"repetition {rep + 1}/{reps}", file=sys.stderr)
            entry: dict[str, Any] = {}

            def serial(stream: bool) -> dict[str, Any]:
                with quiet_phase(ours, "ttft" if stream else "latency") as info:
                    values = asyncio.run(serial_phase(ts, rounds, stream))
                p50 = {name: pct(v, 50) for name, v in values.items()}
                return {"p50_ms": {k: round(v, 3) for k, v in p50.items()}, **info}

            entry["latency_c1"] = retry_quiet(lambda: serial(False))
            entry["ttft_c1"] = retry_quiet(lambda: serial(True))
            entry["throughput_c32"] = {}
            chat = json.dumps(chat_body(s.openai_model))
            turn = json.dumps(turn_body(s.anthropic_model))

            def turns(n: int) -> list[list[Any]]:  # one turn per seeded thread: history stays at 20
                return [["POST", f"/v1/threads/{next(threads)}/messages", {"x-api-key": s.key}, turn] for _ in range(n)]

            phases = {
                "direct_chat": (up, upstream.pid, lambda n: [["POST", "/v1/chat/completions", {"authorization": "Bearer x"}, chat]] * n),
                "threadgate_chat": (tg_url, tg.pid, lambda n: [["POST", "/v1/chat/completions", {"x-api-key": s.key}, chat]] * n),
                "threadgate_turn": (tg_url, tg.pid, turns),
            }
            if ll_url:
                litellm_chat = json.dumps(chat_body("bench"))
                phases["litellm_chat"] = (ll_url, ll.pid, lambda n: [["POST", "/v1/chat/completions", {"authorization": f"Bearer {LITELLM_KEY}"}, litellm_chat]] * n)
            for name, (url, pid, make) in phases.items():
                if name == "direct_chat":
                    pin(pid, GATEWAY_CORE)  # measured like a gateway: alone on core 0
                entry["throughput_c32"][name] = retry_quiet(
                    lambda: throughput(name, url, pid, ours, make(warm), make(load_requests)))
                if name == "direct_chat":
                    pin(pid, OTHER_CORES)
            results["reps"].append(entry)
    results["summary"] = summarize(results["reps"])
    return results


def _spread(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def summarize(reps: list[dict[str, Any]]) -> dict[str, Any]:
    def added(phase: str, target: str, base: str) -> dict | None:
        return _spread([r[phase]["p50_ms"][target] - r[phase]["p50_ms"][base]
                        for r in reps if "p50_ms" in r.get(phase, {}) and target in r[phase]["p50_ms"]])

    def load(target: str, field: str) -> dict | None:
        return _spread([r["throughput_c32"][target].get(field) for r in reps if target in r["throughput_c32"]])

    rows = {"threadgate_chat": "direct_chat", "threadgate_turn": "direct_messages", "litellm_chat": "direct_chat"}
    out = {}
    for target, base in rows.items():
        out[target] = {"added_p50_ms": added("latency_c1", target, base), "added_ttft_p50_ms": added("ttft_c1", target, base),
                       "req_per_s_c32": load(target, "req_per_s"), "cpu_ms_per_request": load(target, "cpu_ms_per_request"),
                       "rss_mb": load(target, "rss_mb")}
    out["direct_chat"] = {"req_per_s_c32": load("direct_chat", "req_per_s"), "cpu_ms_per_request": load("direct_chat", "cpu_ms_per_request")}
    return out


def table(results: dict[str, Any]) -> str:
    def cell(v: dict | None, unit: str = "", sign: str = "") -> str:
        if not v:
            return "refused / n/a"
        return f"{sign}{v['median']:g}{unit} ({v['min']:g}–{v['max']:g})"

    names = {"threadgate_chat": "Threadgate `/v1/chat/completions`", "threadgate_turn": "Threadgate thread turn",
             "litellm_chat": f"LiteLLM proxy {results.get('litellm_version')} (no DB, no budgets)"}
    lines = ["| target | added p50 (c=1) | added TTFT p50 | req/s @32 clients | gateway CPU per request | RSS |",
             "|---|---|---|---|---|---|"]
    for key, label in names.items():
        row = results["summary"].get(key)
        if row is None or not any(row.values()):
            continue
        lines.append(f"| {label} | {cell(row['added_p50_ms'], ' ms', '+')} | {cell(row['added_ttft_p50_ms'], ' ms', '+')} | "
                     f"{cell(row['req_per_s_c32'])} | {cell(row['cpu_ms_per_request'], ' ms')} | {cell(row['rss_mb'], ' MB')} |")
    direct = results["summary"]["direct_chat"]
    lines.append(f"| (the upstream alone, for scale) | | | {cell(direct['req_per_s_c32'])} | {cell(direct['cpu_ms_per_request'], ' ms')} | |")
    return "\n".join(lines)


BEGIN, END = "<!-- peer:begin -->", "<!-- peer:end -->"


def peer_block(results: dict[str, Any]) -> str:
    """The summary table between the markers (bench/report.py renders it too)."""
    return (f"{BEGIN}\n{table(results)}\n\nMedian of {len(results['reps'])} repetitions (min–max in brackets); "
            f"{results['machine'].get('cpus')} CPUs, Python {results['machine'].get('python')}; gateway pinned to one core. "
            f"Generated by `bench/peer_bench.py`; raw numbers in `bench/results/peer.json`.\n{END}")


def write_docs(results: dict[str, Any]) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    block = peer_block(results)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    begin, end = BEGIN, END
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n## Side by side with LiteLLM\n\n" + block + "\n"
    doc.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=300, help="calls per target in each serial phase")
    parser.add_argument("--load-requests", type=int, default=3000, help="requests per target in each load phase")
    parser.add_argument("--no-litellm", action="store_true", help="Threadgate and the direct baseline only")
    parser.add_argument("--noisy", action="store_true", help="record phases even while other processes use the CPUs")
    args = parser.parse_args()
    global NOISY_OK
    NOISY_OK = args.noisy
    results = run(args.reps, args.rounds, args.load_requests, not args.no_litellm)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results["noisy"] = args.noisy
    (RESULTS / ("peer-noisy.json" if args.noisy else "peer.json")).write_text(json.dumps(results, indent=2) + "\n")
    if not args.noisy:
        write_docs(results)
    print(table(results))


if __name__ == "__main__":
    main()
