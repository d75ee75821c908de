"""The signature receivers check: HMAC-SHA256 over "<timestamp>.<raw body>" with the wsk_ secret."""

from __future__ import annotations

import pytest

from threadgate.webhooks import sign, verify, verify_request

SECRET = "wsk_0123456789abcdef"
BODY = b'{"tool_use_id":"toolu_01","input":{"q":"hi"}}'
TS = 1700000000
# Computed independently of Python:
#   printf '%s' '1700000000.{"tool_use_id":"toolu_01","input":{"q":"hi"}}' | openssl dgst -sha256 -hmac wsk_0123456789abcdef
EXPECTED = "eac1d2628058f208d9ec0d147494ae7fcf72e38716a00b01de0320c30e753f25"


def test_sign_matches_an_independently_computed_hmac():
    assert sign(SECRET, TS, BODY) == EXPECTED


def test_a_fresh_signature_verifies_with_int_or_header_text_timestamp():
    assert verify(SECRET, BODY, TS, EXPECTED, now=TS + 10)
    assert verify(SECRET, BODY, str(TS), EXPECTED, now=TS + 10)
    assert verify(SECRET, BODY, f" {TS} ", EXPECTED.upper(), now=TS)  # header whitespace / hex case


@pytest.mark.parametrize(
    "body, secret, signature",
    [
        (BODY.replace(b"hi", b"ho"), SECRET, EXPECTED),  # tampered body
        (BODY + b" ", SECRET, EXPECTED),  # re-serialized body (one extra byte)
        (BODY, "wsk_other", EXPECTED),  # wrong secret
        (BODY, SECRET, EXPECTED[:-1] + "0"),  # tampered signature
        (BODY, SECRET, "zz" * 32),  # not hex
        (BODY, SECRET, ""),
        (BODY, SECRET, "é" * 64),  # non-ASCII header value must not raise
        (BODY, "", sign("", TS, BODY)),  # an empty secret is computable by anyone
    ],
)
def test_wrong_body_secret_or_signature_fails(body, secret, signature):
    assert not verify(secret, body, TS, signature, now=TS)


def test_timestamp_outside_tolerance_fails_in_both_directions():
    assert verify(SECRET, BODY, TS, EXPECTED, now=TS + 300)
    assert not verify(SECRET, BODY, TS, EXPECTED, now=TS + 301)  # replay of an old capture
    assert not verify(SECRET, BODY, TS, EXPECTED, now=TS - 301)  # forged future time
    assert verify(SECRET, BODY, TS, EXPECTED, now=TS + 3000, tolerance_s=3600)


@pytest.mark.parametrize("timestamp", ["", "abc", "1700000000.5", "-1700000000", "1e9", "١٧٠٠٠٠٠٠٠٠", None, True, 10**20])
def test_malformed_timestamps_fail_without_raising(timestamp):
    assert not verify(SECRET, BODY, timestamp, EXPECTED, now=TS)


def test_timestamp_is_checked_as_the_exact_signed_text():
    # "01700000000" is the same number, but not the text that was signed.
    assert not verify(SECRET, BODY, "0" + str(TS), EXPECTED, now=TS)


def test_a_str_body_is_a_programming_error():
    with pytest.raises(TypeError):
        verify(SECRET, BODY.decode(), TS, EXPECTED, now=TS)


def test_verify_request_reads_headers_in_any_case():
    assert verify_request(SECRET, BODY, {"X-Qlaud-Timestamp": str(TS), "X-Qlaud-Signature": EXPECTED}, now=TS)
    assert verify_request(SECRET, BODY, {"x-qlaud-timestamp": str(TS), "X-QLAUD-SIGNATURE": EXPECTED}, now=TS)


def test_verify_request_works_with_framework_header_objects():
    from email.message import Message  # what http.server gives a handler

    from starlette.datastructures import Headers

    starlette = Headers({"x-qlaud-timestamp": str(TS), "x-qlaud-signature": EXPECTED})
    stdlib = Message()
    stdlib["X-Qlaud-Timestamp"], stdlib["X-Qlaud-Signature"] = str(TS), EXPECTED
    assert verify_request(SECRET, BODY, starlette, now=TS)
    assert verify_request(SECRET, BODY, stdlib, now=TS)


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Qlaud-Timestamp": str(TS)}, {"X-Qlaud-Signature": EXPECTED}, {"X-Qlaud-Timestamp": "x", "X-Qlaud-Signature": EXPECTED}],
)
def test_verify_request_rejects_missing_or_malformed_headers(headers):
    assert not verify_request(SECRET, BODY, headers, now=TS)


def test_the_helper_needs_only_the_standard_library():
    import subprocess
    import sys

    code = (
        "import sys; import threadgate.webhooks as w; "
        "heavy = {'httpx', 'tenacity', 'pydantic', 'fastapi', 'boto3'} & set(sys.modules); "
        "assert not heavy, heavy; print(w.verify)"
    )
    import threadgate

    package_root = threadgate.__path__[0].rsplit("/", 1)[0]
    done = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": package_root}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
