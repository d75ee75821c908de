"""Run an ASGI app with uvicorn in a background thread on 127.0.0.1, on a free port.

    with serve_asgi(app) as base_url:      # "http://127.0.0.1:54321"
        httpx.get(base_url + "/health")

The socket is bound before the server starts (port 0 → the OS picks a free port), so there is no
race between choosing a port and listening on it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

HOST = "127.0.0.1"


@contextlib.contextmanager
def serve_asgi(
    app: Any,
    *,
    host: str = HOST,
    log_level: str = "warning",
    startup_timeout_s: float = 10.0,
    shutdown_grace_s: float = 1.0,
    sock: socket.socket | None = None,
    **options: Any,
) -> Iterator[str]:
    """Serve `app` until the block exits; yields its base URL (no trailing slash). `sock`: a
    socket from `bound_socket()`, for an app that must know its own URL before it is served.
    `options` go to uvicorn.Config (the gateway passes its connection limits, as `threadgate
    serve` does)."""
    sock = sock or bound_socket(host)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="auto",
        # Open streams must not hold a test run hostage at shutdown.
        timeout_graceful_shutdown=shutdown_grace_s,
        **options,
    )
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only on the main thread, so a worker thread is safe.
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn:{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {host}:{port}")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(shutdown_grace_s + 5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        sock.close()


def bound_socket(host: str = HOST) -> socket.socket:
    """A listening-ready socket on a free port (port 0: the OS picks)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: without it a reused keep-alive connection waits out the
    # client's Nagle + our delayed ACK (~40 ms) on every request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, 0))
    return sock
