"""First start: create the first account and its admin key (the "master key")."""

from __future__ import annotations

from threadgate.config import Settings
from threadgate.domain.keys import display_prefix, hash_secret, new_id, new_secret
from threadgate.domain.models import Account, ApiKey
from threadgate.ports import Clock
from threadgate.stores import Stores


def ensure_first_admin(stores: Stores, clock: Clock, settings: Settings) -> str | None:
    """Create the first account and admin key if none exists.

    With THREADGATE_MASTER_KEY set, that secret becomes the admin key (registered once, by hash)
    and None is returned; otherwise a new secret is minted and returned exactly once.
    """
    now = clock.now_ms()
    given = settings.master_key
    if given and stores.keys.find_by_hash(hash_secret(given)) is not None:
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
