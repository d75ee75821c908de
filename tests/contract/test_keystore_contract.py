"""KeyStore contract: accounts, keys, the auth lookup, revocation and tenant isolation."""

from __future__ import annotations

import hashlib

from threadgate.domain.models import ApiKey

from tests.contract.records import account, key, uid


def secret_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def test_accounts_are_created_read_and_patched(stores):
    ks = stores.keys
    assert ks.first_account() is None
    acct = account(cap=5_000_000)
    ks.create_account(acct)

    assert ks.get_account(acct.id) == acct
    assert ks.first_account().id == acct.id
    assert ks.get_account("acct_missing") is None

    renamed = ks.update_account(acct.id, name="Acme Corp")
    assert (renamed.name, renamed.cap_micros) == ("Acme Corp", 5_000_000)
    unlimited = ks.update_account(acct.id, cap_micros=None)
    assert (unlimited.name, unlimited.cap_micros) == ("Acme Corp", None)
    assert ks.get_account(acct.id).cap_micros is None
    assert ks.update_account("acct_missing", name="x") is None


def test_first_account_is_the_oldest(stores):
    ks = stores.keys
    ks.create_account(account("acct_new", created_at=9_000))
    ks.create_account(account("acct_old", created_at=1_000))
    assert ks.first_account().id == "acct_old"


def test_a_key_is_found_by_its_secret_hash_with_current_identity(stores):
    ks = stores.keys
    acct = account()
    ks.create_account(acct)
    k = key(acct.id, cap=2_000_000, scope="admin", end_user_id="user-7", metadata={"plan": "pro"})
    ks.create_key(k, secret_hash("s1"))

    found = ks.find_by_hash(secret_hash("s1"))
    identity = ("id", "account_id", "name", "prefix", "scope", "end_user_id", "revoked")
    assert [getattr(found, f) for f in identity] == [getattr(k, f) for f in identity]
    assert ks.find_by_hash(secret_hash("other")) is None

    ks.update_key(acct.id, k.id, name="renamed")
    assert ks.find_by_hash(secret_hash("s1")).name == "renamed"
    ks.revoke_key(acct.id, k.id, now_ms=50_000)
    assert ks.find_by_hash(secret_hash("s1")).revoked is True


def test_get_key_returns_the_full_record_to_its_own_account_only(stores):
    ks = stores.keys
    mine, theirs = account(), account()
    ks.create_account(mine)
    ks.create_account(theirs)
    k = key(mine.id, cap=2_000_000, end_user_id="user-7", metadata={"plan": "pro", "seats": 3})
    ks.create_key(k, secret_hash("s2"))

    assert ks.get_key(mine.id, k.id) == k
    assert ks.get_key(theirs.id, k.id) is None
    assert ks.get_key(mine.id, "key_missing") is None


def test_list_keys_is_newest_first_includes_revoked_and_stays_in_the_account(stores):
    ks = stores.keys
    mine, theirs = account(), account()
    ks.create_account(mine)
    ks.create_account(theirs)
    old = key(mine.id, created_at=1_000)
    new = key(mine.id, created_at=3_000)
    middle = key(mine.id, created_at=2_000)
    foreign = key(theirs.id, created_at=2_500)
    for i, k in enumerate([old, new, middle, foreign]):
        ks.create_key(k, secret_hash(f"list{i}"))
    ks.revoke_key(mine.id, middle.id, now_ms=4_000)

    listed = ks.list_keys(mine.id)
    assert [k.id for k in listed] == [new.id, middle.id, old.id]
    assert [k.revoked for k in listed] == [False, True, False]
    assert [k.id for k in ks.list_keys(theirs.id)] == [foreign.id]
    assert ks.list_keys("acct_nobody") == []


def test_update_key_patches_only_given_fields(stores):
    ks = stores.keys
    acct = account()
    ks.create_account(acct)
    k = key(acct.id, cap=1_000_000, metadata={"a": 1})
    ks.create_key(k, secret_hash("s3"))

    updated = ks.update_key(acct.id, k.id, metadata={"b": 2})
    assert (updated.name, updated.cap_micros, updated.metadata) == (k.name, 1_000_000, {"b": 2})
    updated = ks.update_key(acct.id, k.id, cap_micros=None, name="unlimited")
    assert (updated.name, updated.cap_micros, updated.metadata) == ("unlimited", None, {"b": 2})
    updated = ks.update_key(acct.id, k.id, cap_micros=7, metadata=None)
    assert (updated.cap_micros, updated.metadata) == (7, None)
    assert ks.get_key(acct.id, k.id) == updated


def test_update_key_refuses_a_foreign_or_unknown_key(stores):
    ks = stores.keys
    mine, theirs = account(), account()
    ks.create_account(mine)
    ks.create_account(theirs)
    k = key(mine.id, cap=1_000_000)
    ks.create_key(k, secret_hash("s4"))

    assert ks.update_key(theirs.id, k.id, name="hijacked", cap_micros=None) is None
    assert ks.update_key(mine.id, "key_missing", name="x") is None
    assert ks.get_key(mine.id, k.id) == k


def test_revoke_is_true_once_and_false_for_unknown_or_foreign_keys(stores):
    ks = stores.keys
    mine, theirs = account(), account()
    ks.create_account(mine)
    ks.create_account(theirs)
    k = key(mine.id)
    ks.create_key(k, secret_hash("s5"))

    assert ks.revoke_key(theirs.id, k.id, now_ms=1) is False
    assert ks.get_key(mine.id, k.id).revoked is False
    assert ks.revoke_key(mine.id, "key_missing", now_ms=1) is False
    assert ks.revoke_key(mine.id, k.id, now_ms=1) is True
    assert ks.revoke_key(mine.id, k.id, now_ms=2) is False
    assert ks.get_key(mine.id, k.id).revoked is True


def test_touch_key_records_last_use(stores):
    ks = stores.keys
    acct = account()
    ks.create_account(acct)
    k: ApiKey = key(acct.id)
    ks.create_key(k, secret_hash("s6"))
    assert ks.get_key(acct.id, k.id).last_used_at is None

    ks.touch_key(k.id, 77_000)
    assert ks.get_key(acct.id, k.id).last_used_at == 77_000
    ks.touch_key(uid("key"), 1)  # unknown keys are ignored (best effort)
