"""API keys: minting, hashing, display prefix, and resolving a presented secret to a Principal."""

from __future__ import annotations

import hashlib
import re
import secrets

from threadgate.domain.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied
from threadgate.domain.models import ApiKey, Principal
from threadgate.ports import KeyStore

_SECRET_RE = re.compile(r"^[\x21-\x7e]{16,256}$")  # printable, sane length: a cheap first filter
SECRET_FORMAT = "16 to 256 printable ASCII characters, no spaces"


def new_id(prefix: str, nbytes: int = 12) -> str:
    return f"{prefix}{secrets.token_hex(nbytes)}"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_hex(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return f"{secret[:13]}…{secret[-4:]}"


def matching_keys(keys: list[ApiKey], q: str | None, end_user_id: str | None) -> list[ApiKey]:
    """The keys (in their order) bound to `end_user_id` if given, whose name, id, prefix or end
    user contains `q` (case-insensitive) if given."""
    needle = (q or "").strip().casefold()
    return [
        k for k in keys
        if (end_user_id is None or k.end_user_id == end_user_id)
        and (not needle or any(needle in (v or "").casefold() for v in (k.name, k.id, k.prefix, k.end_user_id)))
    ]


def is_well_formed(secret: str) -> bool:
    """What `authenticate` accepts at all: a secret outside this shape can never work."""
    return _SECRET_RE.match(secret) is not None


def check_revocable(target: ApiKey, *, by_key_id: str | None, active_admin_keys: int) -> None:
    """An admin key cannot revoke itself, and nobody revokes the account's last admin key: either
    would lock the operator out of the admin API (the way back is a new THREADGATE_MASTER_KEY)."""
    if target.id == by_key_id:
        raise Conflict("an admin key cannot revoke itself: revoke it with another admin key")
    if target.scope == "admin" and not target.revoked and active_admin_keys <= 1:
        raise Conflict("this is the account's last admin key: create another admin key first")


def authenticate(keys: KeyStore, presented: str | None) -> ApiKey:
    """Resolve a presented secret. Unknown, malformed and revoked keys all answer 401.

    The lookup is by SHA-256 of the secret: comparing hashes through an index lookup does not
    leak the secret's bytes through timing the way a string compare of secrets would.
    """
    if not presented:
        raise AuthenticationFailed("missing API key: send it as x-api-key or Authorization: Bearer")
    if not is_well_formed(presented):
        raise AuthenticationFailed("malformed API key")
    key = keys.find_by_hash(hash_secret(presented))
    if key is None or key.revoked:
        raise AuthenticationFailed("invalid or revoked API key")
    return key


def principal_of(key: ApiKey) -> Principal:
    return Principal(key_id=key.id, account_id=key.account_id, scope=key.scope, end_user_id=key.end_user_id)


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("this route needs an admin key")


def scoped_end_user(principal: Principal, requested: str | None) -> str | None:
    """The end user a request may act for. A bound key acts only for its own end user; naming
    another one is answered 404 (API.md §1), as if nothing were there, never 403."""
    if principal.end_user_id is None:
        return requested
    if requested is not None and requested != principal.end_user_id:
        raise NotFound("end user not found", param="end_user_id")
    return principal.end_user_id
