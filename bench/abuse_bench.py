"""Huge request headers against the gateway (issue 11 item 3): three clients each send a 60 MB
header while a fourth times GET /health; the server's peak memory is read from /proc. Run against
plain uvicorn (no head limits: what the gateway was before) and `threadgate serve` (the connection
guard of threadgate/api/connection_limits.py). Writes bench/results/abuse.json."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx

sys.path.insert(0, os.path.dirname(__file__))
from _harness import MASTER, ROOT, _wait, free_port, summary, write  # noqa: E402

ATTACKERS, HEADER_MB, CHUNK = 3, 60, 64 * 1024


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def attack(port: int, sent: list[int]) -> None:
    total = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: ")
            while total < HEADER_MB * 1024 * 1024:
                s.sendall(b"a" * CHUNK)
                total += CHUNK
            s.sendall(b"\r\n\r\n")
            s.recv(1024)
    except OSError:
        pass  # cut off by the server
    sent.append(total)


def run(argv: list[str]) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "THREADGATE_MODE": "local", "THREADGATE_DATA_DIR": data, "THREADGATE_PORT": str(port),
               "THREADGATE_MASTER_KEY": MASTER, "PYTHONPATH": str(ROOT / "layers" / "threadgate" / "python")}
        proc = subprocess.Popen([a.format(port=port) for a in argv], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(f"http://127.0.0.1:{port}/health")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                              limits=httpx.Limits(max_keepalive_connections=0)) as c:  # a new connection each
                idle = [timed(c) for _ in range(50)]
                rss_before = peak_rss_mb(proc.pid)
                sent: list[int] = []
                threads = [threading.Thread(target=attack, args=(port, sent)) for _ in range(ATTACKERS)]
                for t in threads:
                    t.start()
                during = []
                while any(t.is_alive() for t in threads):
                    during.append(timed(c))
                    time.sleep(0.01)
                for t in threads:
                    t.join()
            return {"health_idle": summary(idle), "health_during_attack": summary(during),
                    "health_during_attack_max_ms": round(max(during), 1),
                    "peak_rss_mb_before": rss_before, "peak_rss_mb_after": peak_rss_mb(proc.pid),
                    "bytes_each_attacker_got_in_mb": sorted(round(s / 2**20, 1) for s in sent)}
        finally:
            proc.terminate()
            proc.wait(10)


def timed(c: httpx.Client) -> float:
    start = time.perf_counter()
    assert c.get("/health").status_code == 200
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    results = {
        "unguarded_uvicorn": run([sys.executable, "-m", "uvicorn", "threadgate.api.asgi:app", "--port", "{port}",
                                  "--no-access-log", "--log-level", "warning"]),
        "threadgate_serve": run([sys.executable, "-m", "threadgate", "serve"]),
        "method": f"{ATTACKERS} clients each send a {HEADER_MB} MB header in 64 KiB writes while one client "
                  "times GET /health on its own connection; peak RSS of the server process (VmHWM)",
        "load_average": os.getloadavg()[0],
    }
    write("abuse", results)
