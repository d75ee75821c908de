"""ToolStore on SQLite. Names are unique among an account's live tools (a partial unique index).

The webhook secret is stored as is: the local data directory is the trust boundary on one machine.
On AWS the DynamoDB adapter encrypts it with KMS.
"""

from __future__ import annotations

import sqlite3

from threadgate.domain.errors import Conflict
from threadgate.domain.models import Tool
from threadgate.stores.sqlite.db import Database, dumps, loads


def _tool(row: sqlite3.Row, with_secret: bool) -> Tool:
    return Tool(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        description=row["description"],
        input_schema=loads(row["input_schema"]),
        webhook_url=row["webhook_url"],
        timeout_ms=row["timeout_ms"],
        secret=row["secret"] if with_secret else "",
        created_at=row["created_at"],
        deleted=bool(row["deleted"]),
    )


class SqliteToolStore:
    def __init__(self, db: Database):
        self.db = db

    def create_tool(self, tool: Tool) -> None:
        try:
            with self.db.tx() as c:
                c.execute(
                    "INSERT INTO tools (id, account_id, name, description, input_schema, webhook_url,"
                    " timeout_ms, secret, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (tool.id, tool.account_id, tool.name, tool.description, dumps(tool.input_schema),
                     tool.webhook_url, tool.timeout_ms, tool.secret, tool.created_at),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"a tool named {tool.name!r} already exists", param="name") from None

    def get_tool(self, account_id: str, tool_id: str, *, with_secret: bool = False) -> Tool | None:
        row = self.db.one(
            "SELECT * FROM tools WHERE id = ? AND account_id = ? AND deleted = 0", (tool_id, account_id)
        )
        return _tool(row, with_secret) if row else None

    def list_tools(self, account_id: str) -> list[Tool]:
        rows = self.db.query(
            "SELECT * FROM tools WHERE account_id = ? AND deleted = 0 ORDER BY created_at DESC, id DESC",
            (account_id,),
        )
        return [_tool(r, False) for r in rows]

    def delete_tool(self, account_id: str, tool_id: str) -> bool:
        with self.db.tx() as c:
            cur = c.execute(
                "UPDATE tools SET deleted = 1 WHERE id = ? AND account_id = ? AND deleted = 0",
                (tool_id, account_id),
            )
            return cur.rowcount == 1
