"""Local mode's data at rest: the data directory is 0700 and every file in it 0600 (database,
WAL, SHM, vector index, key file), also when an older version left them 0755/0644; webhook
secrets are sealed with a local key file (as KMS seals them on AWS), never stored in clear."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from tests.conftest import make_settings

SCHEMA = {"type": "object", "properties": {}}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def local_runtime(data_dir: Path):
    from threadgate.runtime import build

    return build(make_settings(data_dir, mode="local"))


def every_file(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.is_file()]


def test_a_new_data_directory_and_its_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / ".threadgate"
    rt = local_runtime(data)
    try:
        rt.stores.keys.first_account()  # touch the database: WAL and SHM exist while it is open
        if rt.indexer is not None:
            rt.indexer.index  # noqa: B018 - the vector index is created with the runtime
        files = every_file(data)
        names = {p.name for p in files}
        assert {"threadgate.db", "threadgate.db-wal", "threadgate.db-shm"} <= names, names
        assert mode(data) == 0o700
        for d in (p for p in data.rglob("*") if p.is_dir()):
            assert mode(d) == 0o700, d
        for f in files:
            assert mode(f) == 0o600, (f, oct(mode(f)))
    finally:
        rt.stores.close()


def test_an_existing_world_readable_data_directory_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / ".threadgate"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    db = data / "threadgate.db"
    sqlite3.connect(db).execute("PRAGMA journal_mode=WAL").fetchone()
    for f in every_file(data):
        os.chmod(f, 0o644)
    rt = local_runtime(data)
    try:
        rt.stores.keys.first_account()
        assert mode(data) == 0o700
        for f in every_file(data):
            assert mode(f) == 0o600, (f, oct(mode(f)))
    finally:
        rt.stores.close()


def test_webhook_secrets_are_sealed_at_rest_and_survive_a_restart(tmp_path: Path, gateway_factory) -> None:
    gw = gateway_factory(mode="local", data_dir=tmp_path / "data")
    with gw.admin() as c:
        r = c.post("/v1/tools", json={"name": "t", "description": "d", "input_schema": SCHEMA,
                                      "webhook_url": "http://127.0.0.1:9/hook"})
        assert r.status_code == 201, r.text
        tool_id, secret = r.json()["id"], r.json()["secret"]
    on_disk = b"".join(f.read_bytes() for f in every_file(tmp_path / "data"))
    assert secret.encode() not in on_disk
    assert secret.split("_", 1)[1].encode() not in on_disk
    account = gw.runtime.stores.keys.first_account()
    # A second process on the same directory (a restart) opens it with the key file.
    again = local_runtime(tmp_path / "data")
    try:
        assert again.stores.tools.get_tool(account.id, tool_id, with_secret=True).secret == secret
        assert again.stores.tools.get_tool(account.id, tool_id).secret == ""
    finally:
        again.stores.close()
    key_files = [f for f in every_file(tmp_path / "data") if f.suffix == ".key"]
    assert len(key_files) == 1 and mode(key_files[0]) == 0o600


def test_secrets_stored_in_clear_by_an_older_version_are_sealed_on_open(tmp_path: Path) -> None:
    from threadgate.domain.models import Tool

    data = tmp_path / "data"
    rt = local_runtime(data)
    account_id = "acct_old"
    rt.stores.close()
    legacy = "wsk_" + "5" * 64
    with sqlite3.connect(data / "threadgate.db") as conn:
        conn.execute(
            "INSERT INTO tools (id, account_id, name, description, input_schema, webhook_url, timeout_ms,"
            " secret, created_at) VALUES ('tool_old', ?, 'old', 'd', '{}', 'http://127.0.0.1:9/', 1000, ?, 1)",
            (account_id, legacy),
        )
    rt = local_runtime(data)
    try:
        tool = rt.stores.tools.get_tool(account_id, "tool_old", with_secret=True)
        assert isinstance(tool, Tool) and tool.secret == legacy
        stored = rt.stores.tools.db.one("SELECT secret FROM tools WHERE id = 'tool_old'")["secret"]
        assert legacy not in stored
    finally:
        rt.stores.close()
