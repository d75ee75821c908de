"""The connection guard's framing (threadgate/api/connection_limits.py), byte stream in, verdict
out, with no server: where heads start and end across bodies, chunks and pipelining, and which
head breaks which limit. Every stream is also fed one byte at a time: the verdict must not depend
on how TCP cut it."""

from __future__ import annotations

import pytest

from threadgate.api.connection_limits import HEAD, OPAQUE, ConnectionLimits, RequestFraming

LIMITS = ConnectionLimits(max_request_line_bytes=100, max_head_bytes=300, max_header_count=5)


def get(path: str = "/health", headers: int = 1, pad: int = 0) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "host: x"] + [f"x-{i}: {'v' * pad}" for i in range(headers - 1)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(body: bytes) -> bytes:
    return b"POST /v1/keys HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body


def chunked(*chunks: bytes) -> bytes:
    out = b"POST /v1/keys HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    for c in chunks:
        out += b"%x;ext=1\r\n" % len(c) + c + b"\r\n"
    return out + b"0\r\nx-trailer: y\r\n\r\n"


def verdicts(stream: bytes) -> list:
    """The refusal (or None) fed whole and fed byte by byte, and the final state of each."""
    out = []
    for pieces in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        framing = RequestFraming(LIMITS)
        refusal = None
        for piece in pieces:
            refusal = framing.feed(piece)
            if refusal is not None:
                break
        out.append((refusal and (refusal.status, refusal.path), framing.state, framing.inside_head))
    assert out[0] == out[1], out
    return out[0]


# A body is never mistaken for a head: these hold blank lines and a megabyte with no line at all.
BODY_WITH_BLANK_LINES = b"{\r\n\r\n" + b"x" * 1000 + b"\r\n\r\n}"


@pytest.mark.parametrize("stream", [
    get(),
    get() + get("/v1/keys") + get(),  # pipelined
    b"\r\n\r\n" + get(),  # empty lines before a request
    post(BODY_WITH_BLANK_LINES) + get(),
    post(b"x" * 1_000_000) + get(),
    post(b"") + get(),
    chunked(BODY_WITH_BLANK_LINES, b"y" * 5000) + get(),
    chunked() + get(),
    get(headers=5),  # at the count limit
    get(path="/" + "p" * 80),  # a request line near the limit
], ids=["get", "pipelined", "leading-crlf", "body-with-blank-lines", "megabyte-body", "empty-body",
        "chunked", "chunked-empty", "five-headers", "long-path"])
def test_valid_streams_pass_and_end_between_requests(stream: bytes) -> None:
    assert verdicts(stream) == (None, HEAD, False)


@pytest.mark.parametrize("stream,status,path", [
    (get(headers=6), 431, "/health"),
    (get(headers=2, pad=400), 431, "/health"),
    (get() + get(headers=6), 431, "/health"),  # the second, pipelined request
    (post(b"{}") + get(headers=2, pad=400), 431, "/health"),  # after a body
    (chunked(b"abc") + get(headers=6), 431, "/health"),  # after a chunked body
    (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n", 414, ""),
    (b"GET /" + b"a" * 200, 414, ""),  # refused before the line even ends
    (b"GET /x HTTP/1.1\r\nx: " + b"v" * 400, 431, "/x"),  # refused before the head ends
    (b"x-header: " * 1000, 414, ""),  # no request line at all, just bytes
], ids=["six-headers", "head-bytes", "pipelined-second", "after-body", "after-chunked", "request-line",
        "request-line-unfinished", "head-unfinished", "garbage"])
def test_a_head_over_a_limit_is_refused(stream: bytes, status: int, path: str) -> None:
    refusal, _, _ = verdicts(stream)
    assert refusal == (status, path)


def test_an_unfinished_head_is_known_to_be_under_way() -> None:
    assert verdicts(b"GET /health HTTP/1.1\r\nhost:") == (None, HEAD, True)
    assert verdicts(post(b"abc")[:-2]) == (None, 1, False)  # inside a body, not a head


@pytest.mark.parametrize("stream", [
    b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
    b"POST / HTTP/1.1\r\ncontent-length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
], ids=["two-lengths", "bad-length", "unknown-coding", "h2-preface"])
def test_streams_it_cannot_frame_are_left_to_the_parser(stream: bytes) -> None:
    refusal, state, _ = verdicts(stream + b"\x00" * 100_000)
    assert refusal is None and state == OPAQUE
