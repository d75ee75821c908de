"""A lean HTTP/1.1 load generator for throughput phases, run in its own process.

Why not httpx: at ~1,000 requests per second an httpx client spends more CPU than the gateway
under test. This client pre-builds each request's bytes, keeps one connection per worker, and
parses only the status line, Content-Length or chunked framing — enough for JSON answers.
`wrk` would do too, but it cannot send an exact number of requests spread over many threads'
paths and keys, which the thread-turn phase needs (history length must not drift between runs).

    python bench/loadgen.py < spec.json   # {"host", "port", "concurrency", "requests": [[method, path, headers, body]...]}
prints {"ok", "errors", "seconds", "latencies_ms": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


def build(host: str, port: int, method: str, path: str, headers: dict[str, str], body: str) -> bytes:
    raw = body.encode()
    head = [f"{method} {path} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(raw)}",
            "content-type: application/json"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def run(host: str, port: int, concurrency: int, requests: list[bytes]) -> dict:
    latencies: list[float] = []
    errors = 0
    queue = iter(requests)

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for request in queue:
                start = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                latencies.append((time.perf_counter() - start) * 1000)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"ok": len(latencies) - errors, "errors": errors, "seconds": time.perf_counter() - start,
            "latencies_ms": latencies}


def main() -> None:
    spec = json.load(sys.stdin)
    host, port = spec["host"], spec["port"]
    requests = [build(host, port, *r) for r in spec["requests"]]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(host, port, spec["concurrency"], requests))))


if __name__ == "__main__":
    main()
