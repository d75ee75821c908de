"""ToolStore on the `tools` table.

- `TOOL#<id>`: the tool; live tools carry gsi1 = `ACCOUNT#<account>` x `<name>`. Deleting marks
  it deleted, drops the secret and the gsi1 attributes (the id stays unusable, not reusable).
- `TOOLNAME#<account>#<name>`: a guard written in the same transaction as the tool, so two live
  tools of one account can never share a name, even when created concurrently.

The webhook secret is stored KMS-encrypted (`secret_enc`, encryption context = account and tool)
when a KMS key is configured, as plain `secret` otherwise (local emulators, tests).
"""

from __future__ import annotations

from typing import Any

from threadgate.domain.errors import Conflict
from threadgate.domain.models import Tool
from threadgate.stores.dynamodb._items import (
    TransactionCancelled,
    decode,
    dumps,
    encode,
    encode_values,
    loads,
    query_all,
    transact,
)


def _tool_pk(tool_id: str) -> str:
    return f"TOOL#{tool_id}"


def _name_pk(account_id: str, name: str) -> str:
    return f"TOOLNAME#{account_id}#{name}"


class SecretBox:
    """Encrypts webhook secrets with KMS; without a key id it stores them as they are."""

    def __init__(self, kms_client: Any | None, key_id: str | None):
        self._kms = kms_client
        self._key_id = key_id

    @property
    def encrypts(self) -> bool:
        return bool(self._key_id)

    def seal(self, secret: str, context: dict[str, str]) -> bytes:
        answer = self._kms.encrypt(KeyId=self._key_id, Plaintext=secret.encode(), EncryptionContext=context)
        return answer["CiphertextBlob"]

    def open(self, sealed: bytes, context: dict[str, str]) -> str:
        answer = self._kms.decrypt(CiphertextBlob=sealed, EncryptionContext=context, KeyId=self._key_id)
        return answer["Plaintext"].decode()


class DynamoToolStore:
    def __init__(self, client: Any, table: str, secrets: SecretBox):
        self._db = client
        self._table = table
        self._secrets = secrets

    def create_tool(self, tool: Tool) -> None:
        context = {"account_id": tool.account_id, "tool_id": tool.id}
        item = {
            "pk": _tool_pk(tool.id),
            "type": "tool",
            "id": tool.id,
            "account_id": tool.account_id,
            "name": tool.name,
            "description": tool.description,
            "input_schema": dumps(tool.input_schema),
            "webhook_url": tool.webhook_url,
            "timeout_ms": tool.timeout_ms,
            "created_at": tool.created_at,
            "deleted": False,
            "gsi1pk": f"ACCOUNT#{tool.account_id}",
            "gsi1sk": tool.name,
        }
        if self._secrets.encrypts:
            item["secret_enc"] = self._secrets.seal(tool.secret, context)
        else:
            item["secret"] = tool.secret
        guard = {"pk": _name_pk(tool.account_id, tool.name), "type": "tool_name", "tool_id": tool.id}
        try:
            transact(
                self._db,
                [
                    {"Put": self._new(guard)},
                    {"Put": self._new(item)},
                ],
            )
        except TransactionCancelled as cancelled:
            if cancelled.condition_failed(0):
                raise Conflict(f"A tool named {tool.name!r} already exists.", param="name") from None
            raise Conflict(f"Tool {tool.id} already exists.") from None

    def get_tool(self, account_id: str, tool_id: str, *, with_secret: bool = False) -> Tool | None:
        raw = self._db.get_item(TableName=self._table, Key=encode({"pk": _tool_pk(tool_id)}), ConsistentRead=True)
        item = decode(raw.get("Item"))
        if not item or item.get("account_id") != account_id or item.get("deleted"):
            return None
        tool = _tool(item)
        if with_secret:
            tool.secret = self._reveal(item)
        return tool

    def list_tools(self, account_id: str) -> list[Tool]:
        items = query_all(
            self._db,
            TableName=self._table,
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :p",
            ExpressionAttributeValues=encode_values({":p": f"ACCOUNT#{account_id}"}),
        )
        tools = [_tool(item) for item in items]
        tools.sort(key=lambda t: (t.created_at, t.id), reverse=True)  # newest first
        return tools

    def delete_tool(self, account_id: str, tool_id: str) -> bool:
        tool = self.get_tool(account_id, tool_id)
        if tool is None:
            return False
        try:
            transact(
                self._db,
                [
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": encode({"pk": _tool_pk(tool_id)}),
                            "UpdateExpression": "SET deleted = :yes REMOVE gsi1pk, gsi1sk, secret, secret_enc",
                            "ConditionExpression": "account_id = :acc AND deleted = :no",
                            "ExpressionAttributeValues": encode_values(
                                {":acc": account_id, ":yes": True, ":no": False}
                            ),
                        }
                    },
                    {
                        "Delete": {
                            "TableName": self._table,
                            "Key": encode({"pk": _name_pk(account_id, tool.name)}),
                            "ConditionExpression": "tool_id = :id",
                            "ExpressionAttributeValues": encode_values({":id": tool_id}),
                        }
                    },
                ],
            )
        except TransactionCancelled:
            return False
        return True

    def _new(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"TableName": self._table, "Item": encode(item), "ConditionExpression": "attribute_not_exists(pk)"}

    def _reveal(self, item: dict[str, Any]) -> str:
        if "secret_enc" in item:
            context = {"account_id": item["account_id"], "tool_id": item["id"]}
            return self._secrets.open(item["secret_enc"], context)
        return item.get("secret", "")


def _tool(item: dict[str, Any]) -> Tool:
    return Tool(
        id=item["id"],
        account_id=item["account_id"],
        name=item["name"],
        description=item["description"],
        input_schema=loads(item["input_schema"]),
        webhook_url=item["webhook_url"],
        timeout_ms=item["timeout_ms"],
        secret="",
        created_at=item["created_at"],
        deleted=bool(item.get("deleted", False)),
    )
