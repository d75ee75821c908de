"""IdempotencyStore contract: one owner per scope; repeats see the stored answer until expiry."""

from __future__ import annotations

DAY = 24 * 3600 * 1000


def test_the_first_claim_owns_the_scope_and_repeats_see_it_in_progress(stores):
    idem = stores.idempotency
    assert idem.claim("acct_a:key_1:abc", "hash-1", now_ms=1_000, ttl_ms=DAY) is None

    seen = idem.claim("acct_a:key_1:abc", "hash-2", now_ms=2_000, ttl_ms=DAY)
    assert (seen.scope, seen.body_hash, seen.state, seen.status_code, seen.response, seen.created_at) == (
        "acct_a:key_1:abc", "hash-1", "in_progress", None, None, 1_000)
    assert idem.claim("acct_a:key_1:other", "hash-1", now_ms=2_000, ttl_ms=DAY) is None


def test_complete_stores_the_answer_for_repeats(stores):
    idem = stores.idempotency
    idem.claim("s1", "hash-1", now_ms=1_000, ttl_ms=DAY)
    answer = {"id": "msg_1", "content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 3}, "x": 0.5}
    idem.complete("s1", 200, answer)

    seen = idem.claim("s1", "hash-1", now_ms=5_000, ttl_ms=DAY)
    assert (seen.state, seen.status_code, seen.response, seen.body_hash) == ("done", 200, answer, "hash-1")
    idem.abandon("s1")  # a finished answer is not dropped by a late abandon
    assert idem.claim("s1", "hash-1", now_ms=6_000, ttl_ms=DAY).state == "done"


def test_abandon_frees_the_scope(stores):
    idem = stores.idempotency
    idem.claim("s2", "hash-1", now_ms=1_000, ttl_ms=DAY)
    idem.abandon("s2")
    assert idem.claim("s2", "hash-2", now_ms=1_001, ttl_ms=DAY) is None
    assert idem.claim("s2", "hash-3", now_ms=1_002, ttl_ms=DAY).body_hash == "hash-2"
    idem.abandon("never-claimed")


def test_an_expired_record_can_be_claimed_again(stores):
    idem = stores.idempotency
    idem.claim("s3", "hash-1", now_ms=1_000, ttl_ms=DAY)
    idem.complete("s3", 201, {"id": "key_1"})
    assert idem.claim("s3", "hash-1", now_ms=1_000 + DAY - 1, ttl_ms=DAY).state == "done"
    assert idem.claim("s3", "hash-2", now_ms=1_000 + DAY, ttl_ms=DAY) is None
    assert idem.claim("s3", "hash-3", now_ms=1_000 + DAY + 1, ttl_ms=DAY).body_hash == "hash-2"


def test_a_large_answer_is_kept(stores):
    idem = stores.idempotency
    idem.claim("s4", "hash-1", now_ms=1_000, ttl_ms=DAY)
    answer = {"content": [{"type": "text", "text": f"line {i}: the quick brown fox\n"} for i in range(20_000)]}
    idem.complete("s4", 200, answer)
    assert idem.claim("s4", "hash-1", now_ms=2_000, ttl_ms=DAY).response == answer
