"""KeyStore on the `keys` table.

Items (pk only):
- `KEY#<sha256>`: the key's identity (id, account, name, prefix, scope, end user, revoked, cap) so
  authentication is one GetItem.
- `KEYID#<id>`: the full key record with its balance; gsi1 = `ACCOUNT#<account>` x
  `<created_at:015d>#<id>` lists an account's keys newest first.
- `ACCOUNT#<id>`: the account and its budget; gsi1 = `ACCOUNTS` x `<created_at:015d>#<id>`.

Balances carry `headroom_micros = cap - spent - reserved`, kept in step by the same expressions
that move spent/reserved, because a ConditionExpression cannot add numbers: the cap check of a
reservation becomes `attribute_not_exists(cap_micros) OR headroom_micros >= :estimate`. An
absent `cap_micros` means unlimited (its headroom is then meaningless).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from threadgate.domain.billing import remaining
from threadgate.domain.errors import Conflict
from threadgate.domain.models import UNSET, Account, ApiKey
from threadgate.stores.dynamodb._items import (
    TransactionCancelled,
    decode,
    dumps,
    encode,
    encode_values,
    is_condition_failure,
    loads,
    query_all,
    transact,
    ts_key,
)

_CAP_UPDATE_ATTEMPTS = 10


def account_pk(account_id: str) -> str:
    return f"ACCOUNT#{account_id}"


def key_pk(key_id: str) -> str:
    return f"KEYID#{key_id}"


def hash_pk(secret_hash: str) -> str:
    return f"KEY#{secret_hash}"


class DynamoKeyStore:
    def __init__(self, client: Any, table: str):
        self._db = client
        self._table = table

    # -- accounts ---------------------------------------------------------------------------

    def create_account(self, account: Account) -> None:
        item = {
            "pk": account_pk(account.id),
            "type": "account",
            "id": account.id,
            "name": account.name,
            "cap_micros": account.cap_micros,
            "spent_micros": account.spent_micros,
            "reserved_micros": account.reserved_micros,
            "headroom_micros": remaining(account.cap_micros, account.spent_micros, account.reserved_micros),
            "created_at": account.created_at,
            "gsi1pk": "ACCOUNTS",
            "gsi1sk": f"{ts_key(account.created_at)}#{account.id}",
        }
        try:
            self._db.put_item(
                TableName=self._table, Item=encode(item), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as err:
            if is_condition_failure(err):
                raise Conflict(f"Account {account.id} already exists.") from None
            raise

    def get_account(self, account_id: str) -> Account | None:
        item = self._get(account_pk(account_id))
        return _account(item) if item else None

    def first_account(self) -> Account | None:
        page = self._db.query(
            TableName=self._table,
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :p",
            ExpressionAttributeValues=encode_values({":p": "ACCOUNTS"}),
            Limit=1,
        )
        items = page.get("Items", [])
        return self.get_account(decode(items[0])["id"]) if items else None  # type: ignore[index]

    def update_account(self, account_id: str, *, name: Any = UNSET, cap_micros: Any = UNSET) -> Account | None:
        item = self._update_record(account_pk(account_id), None, name=name, cap_micros=cap_micros)
        return _account(item) if item else None

    # -- keys -------------------------------------------------------------------------------

    def create_key(self, key: ApiKey, secret_hash: str) -> None:
        record = {
            "pk": key_pk(key.id),
            "type": "key",
            **_identity(key),
            "secret_hash": secret_hash,
            "metadata": dumps(key.metadata),
            "spent_micros": key.spent_micros,
            "reserved_micros": key.reserved_micros,
            "headroom_micros": remaining(key.cap_micros, key.spent_micros, key.reserved_micros),
            "created_at": key.created_at,
            "last_used_at": key.last_used_at,
            "gsi1pk": account_pk(key.account_id),
            "gsi1sk": f"{ts_key(key.created_at)}#{key.id}",
        }
        lookup = {"pk": hash_pk(secret_hash), "type": "key_hash", **_identity(key)}
        try:
            transact(
                self._db,
                [
                    {"Put": self._new(record)},
                    {"Put": self._new(lookup)},
                ],
            )
        except TransactionCancelled:
            raise Conflict("A key with this id or secret already exists.") from None

    def find_by_hash(self, secret_hash: str) -> ApiKey | None:
        item = self._get(hash_pk(secret_hash))
        return _key(item) if item else None

    def get_key(self, account_id: str, key_id: str) -> ApiKey | None:
        item = self._get(key_pk(key_id))
        if not item or item.get("account_id") != account_id:
            return None
        return _key(item)

    def list_keys(self, account_id: str) -> list[ApiKey]:
        items = query_all(
            self._db,
            TableName=self._table,
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :p",
            ExpressionAttributeValues=encode_values({":p": account_pk(account_id)}),
            ScanIndexForward=False,
        )
        return [_key(item) for item in items]

    def update_key(
        self, account_id: str, key_id: str, *, name: Any = UNSET, cap_micros: Any = UNSET, metadata: Any = UNSET
    ) -> ApiKey | None:
        item = self._update_record(key_pk(key_id), account_id, name=name, cap_micros=cap_micros, metadata=metadata)
        return _key(item) if item else None

    def revoke_key(self, account_id: str, key_id: str, now_ms: int) -> bool:
        item = self._get(key_pk(key_id))
        if not item or item.get("account_id") != account_id or item.get("revoked"):
            return False
        values = encode_values({":acc": account_id, ":yes": True, ":no": False, ":now": now_ms})
        try:
            transact(
                self._db,
                [
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": encode({"pk": key_pk(key_id)}),
                            "UpdateExpression": "SET revoked = :yes, revoked_at = :now",
                            "ConditionExpression": "account_id = :acc AND revoked = :no",
                            "ExpressionAttributeValues": values,
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": encode({"pk": hash_pk(item["secret_hash"])}),
                            "UpdateExpression": "SET revoked = :yes",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": encode_values({":yes": True}),
                        }
                    },
                ],
            )
        except TransactionCancelled:
            return False
        return True

    def touch_key(self, key_id: str, now_ms: int) -> None:
        try:
            self._db.update_item(
                TableName=self._table,
                Key=encode({"pk": key_pk(key_id)}),
                UpdateExpression="SET last_used_at = :now",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=encode_values({":now": now_ms}),
            )
        except ClientError as err:
            if not is_condition_failure(err):
                raise

    # -- helpers ----------------------------------------------------------------------------

    def _get(self, pk: str) -> dict[str, Any] | None:
        raw = self._db.get_item(TableName=self._table, Key=encode({"pk": pk}), ConsistentRead=True)
        return decode(raw.get("Item"))

    def _new(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"TableName": self._table, "Item": encode(item), "ConditionExpression": "attribute_not_exists(pk)"}

    def _update_record(
        self, pk: str, account_id: str | None, *, name: Any, cap_micros: Any, metadata: Any = UNSET
    ) -> dict[str, Any] | None:
        """PATCH a key (account_id given: it must own the key) or an account record.

        A new cap needs the current balance to recompute headroom, so the write is conditional
        on the balance it read and retried if a reservation moved it meanwhile. A key's name and
        cap are mirrored on its `KEY#<hash>` item in the same transaction."""
        for _ in range(_CAP_UPDATE_ATTEMPTS):
            item = self._get(pk)
            if not item or (account_id is not None and item.get("account_id") != account_id):
                return None
            sets: dict[str, Any] = {}
            removes: list[str] = []
            if name is not UNSET:
                sets["name"] = name
            if metadata is not UNSET:
                sets["metadata"] = dumps(metadata)
            if cap_micros is not UNSET:
                if cap_micros is None:
                    removes += ["cap_micros", "headroom_micros"]
                else:
                    sets["cap_micros"] = cap_micros
                    sets["headroom_micros"] = remaining(cap_micros, item["spent_micros"], item["reserved_micros"])
            if not sets and not removes:
                return item
            if "headroom_micros" in sets:
                condition = "spent_micros = :spent AND reserved_micros = :reserved"
                guard = {":spent": item["spent_micros"], ":reserved": item["reserved_micros"]}
            else:
                condition, guard = "attribute_exists(pk)", {}
            actions = [_update_action(self._table, pk, sets, removes, condition=condition, values=guard)]
            mirrored = {k: v for k, v in sets.items() if k in ("name", "cap_micros")}
            mirrored_removes = [k for k in removes if k == "cap_micros"]
            if item.get("secret_hash") and (mirrored or mirrored_removes):
                actions.append(
                    _update_action(
                        self._table,
                        hash_pk(item["secret_hash"]),
                        mirrored,
                        mirrored_removes,
                        condition="attribute_exists(pk)",
                        values={},
                    )
                )
            try:
                transact(self._db, actions)
            except TransactionCancelled as cancelled:
                if cancelled.condition_failed(0):
                    continue  # the balance moved (or the record vanished): read again
                raise
            return self._get(pk)
        raise Conflict("The record is too busy to update; try again.")


def _update_action(
    table: str, pk: str, sets: dict[str, Any], removes: list[str], *, condition: str, values: dict[str, Any]
) -> dict[str, Any]:
    names: dict[str, str] = {}
    all_values = dict(values)
    clauses = []
    for i, (field, value) in enumerate(sets.items()):
        names[f"#s{i}"] = field
        all_values[f":s{i}"] = value
        clauses.append(f"#s{i} = :s{i}")
    removed = []
    for i, field in enumerate(removes):
        names[f"#r{i}"] = field
        removed.append(f"#r{i}")
    expression = ""
    if clauses:
        expression += "SET " + ", ".join(clauses)
    if removed:
        expression += " REMOVE " + ", ".join(removed)
    action: dict[str, Any] = {
        "TableName": table,
        "Key": encode({"pk": pk}),
        "UpdateExpression": expression.strip(),
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
    }
    if all_values:
        action["ExpressionAttributeValues"] = encode_values(all_values)
    return {"Update": action}


def _identity(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "account_id": key.account_id,
        "name": key.name,
        "prefix": key.prefix,
        "scope": key.scope,
        "end_user_id": key.end_user_id,
        "cap_micros": key.cap_micros,
        "revoked": key.revoked,
    }


def _key(item: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=item["id"],
        account_id=item["account_id"],
        name=item["name"],
        prefix=item["prefix"],
        scope=item["scope"],
        cap_micros=item.get("cap_micros"),
        end_user_id=item.get("end_user_id"),
        metadata=loads(item.get("metadata")),
        spent_micros=item.get("spent_micros", 0),
        reserved_micros=item.get("reserved_micros", 0),
        created_at=item.get("created_at", 0),
        last_used_at=item.get("last_used_at"),
        revoked=bool(item.get("revoked", False)),
    )


def _account(item: dict[str, Any]) -> Account:
    return Account(
        id=item["id"],
        name=item["name"],
        cap_micros=item.get("cap_micros"),
        spent_micros=item.get("spent_micros", 0),
        reserved_micros=item.get("reserved_micros", 0),
        created_at=item.get("created_at", 0),
    )
