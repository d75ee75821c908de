"""Request heads are bounded on a real server (issue 11 item 3): a huge or endless header is
answered 431 in the error envelope and its connection closed, without stalling anyone else and
without the server reading (so holding) more than the limit; a long request line is 414; a head
that trickles in is cut off (408) and a connection that sends nothing is closed. Keep-alive,
bodies and chunked uploads are unaffected."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from threadgate.api.connection_limits import LIMITS, ConnectionLimits, uvicorn_options

CHUNK = 64 * 1024


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any, bool]:
    """(status, headers, JSON body, whether the server then closed the connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    closed = True
    try:
        while chunk := sock.recv(65536):  # whatever else arrives before the close
            closed = False if chunk else closed
    except (ConnectionResetError, TimeoutError):
        pass
    else:
        closed = True
    return int(lines[0].split()[1]), headers, json.loads(body or b"null"), closed


def assert_envelope(status: int, headers: dict[str, str], body: Any, expected: int, err_type: str) -> None:
    assert status == expected, (status, body)
    assert body["type"] == "error" and body["error"]["type"] == err_type, body
    assert headers["request-id"].startswith("req_")
    assert headers["connection"] == "close"


def test_an_endless_header_is_431_does_not_stall_health_and_is_not_read_past_the_limit(gateway) -> None:
    sock = connect(gateway.url)
    sent = 0
    stop = threading.Event()

    def attack() -> None:  # up to 80 MB of one header, as the report sent
        nonlocal sent
        try:
            sock.sendall(b"GET /v1/key HTTP/1.1\r\nhost: x\r\nx-big: ")
            while sent < 80 * 1024 * 1024 and not stop.is_set():
                sock.sendall(b"a" * CHUNK)
                sent += CHUNK
        except OSError:  # the server closed the connection: what we want
            pass

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        for _ in range(20):  # concurrently, on other connections
            assert c.get("/health").status_code == 200
    status, headers, body, closed = read_response(sock)
    stop.set()
    attacker.join(30)
    assert_envelope(status, headers, body, 431, "request_too_large")
    assert str(LIMITS.max_head_bytes) in body["error"]["message"]
    assert closed
    # Bounded: the server stopped reading after the limit and a short linger, so the sender was
    # cut off long before 80 MB (what it managed is the limit, the linger and socket buffers).
    assert sent < LIMITS.max_head_bytes + LIMITS.linger_bytes + 16 * 1024 * 1024, sent
    sock.close()


@pytest.mark.parametrize("raw,status,says", [
    (b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(LIMITS.max_header_count + 1))
     + b"\r\n", 431, str(LIMITS.max_header_count)),
    (b"GET /v1/threads?q=" + b"a" * (LIMITS.max_request_line_bytes + 1) + b" HTTP/1.1\r\nhost: x\r\n\r\n", 414,
     str(LIMITS.max_request_line_bytes)),
], ids=["too-many-headers", "request-line"])
def test_head_limits_answer_in_the_envelope(gateway, raw: bytes, status: int, says: str) -> None:
    with connect(gateway.url) as sock:
        sock.sendall(raw)
        got, headers, body, closed = read_response(sock)
    assert_envelope(got, headers, body, status, "request_too_large")
    assert says in body["error"]["message"] and closed


def test_the_openai_route_gets_its_own_envelope_shape(gateway) -> None:
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (LIMITS.max_head_bytes + 10) + b"\r\n\r\n"
    with connect(gateway.url) as sock:
        sock.sendall(raw)
        status, _, body, _ = read_response(sock)
    assert status == 431 and body["error"]["type"] == "request_too_large" and "param" in body["error"], body


@pytest.fixture
def impatient(gateway) -> str:
    """The same app behind limits with short timeouts (the defaults are seconds long)."""
    from threadgate.api.app import create_app

    from tests.fakes.servers import serve_asgi

    limits = ConnectionLimits(head_timeout_s=0.5, idle_timeout_s=0.5)
    with serve_asgi(create_app(gateway.runtime), **uvicorn_options(limits)) as url:
        yield url


def test_a_head_that_trickles_in_is_cut_off_with_408(impatient: str) -> None:
    with connect(impatient) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")  # and never the blank line
        status, headers, body, closed = read_response(sock)
    assert_envelope(status, headers, body, 408, "invalid_request_error")
    assert closed


def test_a_connection_that_sends_nothing_is_closed(impatient: str) -> None:
    with connect(impatient) as sock:
        assert sock.recv(1) == b""  # closed by the server (the socket timeout is 30 s)


def test_keep_alive_bodies_and_chunked_uploads_are_unaffected(gateway, impatient: str) -> None:
    for url in (gateway.url, impatient):
        with httpx.Client(base_url=url, headers={"x-api-key": gateway.admin_key}, timeout=30) as c:
            for _ in range(3):  # one connection, several requests with bodies
                assert c.post("/v1/threads", json={"metadata": {"pad": "\r\n\r\n" * 1000}}).status_code == 201
                assert c.post("/v1/threads", content=iter([b'{"metadata": ', b'{"a": 1}}']),
                              headers={"content-type": "application/json"}).status_code == 201
                assert c.get("/health").status_code == 200
