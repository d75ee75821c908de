"""ToolStore on SQLite. Names are unique among an account's live tools (a partial unique index).

The webhook secret is sealed (AES-GCM, stores/sqlite/sealing.py) with a local key file, as the
DynamoDB adapter seals it with KMS; rows an older version wrote in clear are sealed on open.
"""

from __future__ import annotations

import sqlite3

from threadgate.domain.errors import Conflict
from threadgate.domain.models import Tool
from threadgate.stores.sqlite.db import Database, dumps, loads
from threadgate.stores.sqlite.sealing import SEALED_PREFIX, LocalSecretBox


def _context(account_id: str, tool_id: str) -> dict[str, str]:
    return {"account_id": account_id, "tool_id": tool_id}


def _tool(row: sqlite3.Row, secret: str) -> Tool:
    return Tool(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        description=row["description"],
        input_schema=loads(row["input_schema"]),
        webhook_url=row["webhook_url"],
        timeout_ms=row["timeout_ms"],
        secret=secret,
        created_at=row["created_at"],
        deleted=bool(row["deleted"]),
    )


class SqliteToolStore:
    def __init__(self, db: Database, secrets: LocalSecretBox):
        self.db = db
        self._secrets = secrets
        self._seal_legacy_rows()

    def _seal_legacy_rows(self) -> None:
        with self.db.tx() as c:
            rows = c.execute(
                "SELECT id, account_id, secret FROM tools WHERE secret NOT LIKE ? AND secret != ''",
                (SEALED_PREFIX + "%",),
            ).fetchall()
            for r in rows:
                sealed = self._secrets.seal(r["secret"], _context(r["account_id"], r["id"]))
                c.execute("UPDATE tools SET secret = ? WHERE id = ?", (sealed, r["id"]))

    def create_tool(self, tool: Tool) -> None:
        try:
            with self.db.tx() as c:
                c.execute(
                    "INSERT INTO tools (id, account_id, name, description, input_schema, webhook_url,"
                    " timeout_ms, secret, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (tool.id, tool.account_id, tool.name, tool.description, dumps(tool.input_schema),
                     tool.webhook_url, tool.timeout_ms,
                     self._secrets.seal(tool.secret, _context(tool.account_id, tool.id)), tool.created_at),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"a tool named {tool.name!r} already exists", param="name") from None

    def get_tool(self, account_id: str, tool_id: str, *, with_secret: bool = False) -> Tool | None:
        row = self.db.one(
            "SELECT * FROM tools WHERE id = ? AND account_id = ? AND deleted = 0", (tool_id, account_id)
        )
        if row is None:
            return None
        return _tool(row, self._secrets.open(row["secret"], _context(account_id, tool_id)) if with_secret else "")

    def list_tools(self, account_id: str) -> list[Tool]:
        rows = self.db.query(
            "SELECT * FROM tools WHERE account_id = ? AND deleted = 0 ORDER BY created_at DESC, id DESC",
            (account_id,),
        )
        return [_tool(r, "") for r in rows]

    def delete_tool(self, account_id: str, tool_id: str) -> bool:
        with self.db.tx() as c:
            cur = c.execute(
                "UPDATE tools SET deleted = 1 WHERE id = ? AND account_id = ? AND deleted = 0",
                (tool_id, account_id),
            )
            return cur.rowcount == 1
