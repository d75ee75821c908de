"""First start: create the first account and its admin key (the "master key")."""

from __future__ import annotations

from threadgate.config import Settings
from threadgate.domain.keys import SECRET_FORMAT, display_prefix, hash_secret, is_well_formed, new_id, new_secret
from threadgate.domain.models import Account, ApiKey
from threadgate.ports import Clock
from threadgate.stores import Stores


class StartRefused(Exception):
    """The configuration cannot work; the message says what to change (it never holds a secret)."""


def check_master_key(settings: Settings) -> None:
    """Refuse a THREADGATE_MASTER_KEY that no request could ever present (e.g. `changeme`)."""
    if settings.master_key is not None and not is_well_formed(settings.master_key):
        raise StartRefused(
            f"THREADGATE_MASTER_KEY is malformed: it must be {SECRET_FORMAT}. Make one with\n"
            "  python -c \"import secrets; print('qlk_live_' + secrets.token_hex(32))\"\n"
            "or unset it to have a key minted and shown once at first start."
        )


def ensure_first_admin(stores: Stores, clock: Clock, settings: Settings) -> str | None:
    """Create the first account and admin key if none exists.

    With THREADGATE_MASTER_KEY set, that secret becomes an admin key of the first account
    (registered once, by hash) and None is returned; otherwise a new secret is minted and returned
    exactly once. A master key that was revoked is refused (StartRefused), never revived: revoking
    it was deliberate, and a restart must not undo it.
    """
    check_master_key(settings)
    now = clock.now_ms()
    given = settings.master_key
    existing = stores.keys.find_by_hash(hash_secret(given)) if given else None
    if existing is not None and existing.revoked:
        raise StartRefused(
            f"THREADGATE_MASTER_KEY is the revoked admin key {existing.id}: set a new one (it becomes a "
            "new admin key of the same account) or unset it (the admin keys you minted keep working)."
        )
    if existing is not None:
        return None
    account = stores.keys.first_account()
    if account is not None and not given:
        return None
    if account is None:
        account = Account(id=new_id("acct_"), name="default", cap_micros=None, created_at=now)
        stores.keys.create_account(account)
    secret = given or new_secret(settings.key_prefix)
    key = ApiKey(
        id=new_id("key_"),
        account_id=account.id,
        name="master",
        prefix=display_prefix(secret),
        scope="admin",
        cap_micros=None,
        created_at=now,
    )
    stores.keys.create_key(key, hash_secret(secret))
    return None if given else secret


def create_account(stores: Stores, clock: Clock, name: str, cap_micros: int | None = None) -> Account:
    account = Account(id=new_id("acct_"), name=name, cap_micros=cap_micros, created_at=clock.now_ms())
    stores.keys.create_account(account)
    return account
