"""The admin (master) key: a malformed THREADGATE_MASTER_KEY is refused at start; an admin key
cannot revoke itself or the account's last admin key; a restart with a revoked master key says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_settings

GOOD = "qlk_live_" + "ab" * 32


def run_cli(tmp_path: Path, *args: str, master_key: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADGATE_")}
    # A documentation address: were the key accepted, listening would fail at once, not hang.
    env.update(THREADGATE_DATA_DIR=str(tmp_path / "data"), THREADGATE_HOST="203.0.113.1")
    if master_key is not None:
        env["THREADGATE_MASTER_KEY"] = master_key
    return subprocess.run([sys.executable, "-m", "threadgate", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("bad", ["changeme", "short key with spaces", "x" * 15, "é" * 20, "k" * 257])
def test_a_malformed_master_key_is_refused_at_start_with_a_clear_message(tmp_path: Path, bad: str) -> None:
    done = run_cli(tmp_path, "serve", master_key=bad)
    assert done.returncode == 2, done
    assert "THREADGATE_MASTER_KEY" in done.stderr and "16" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert bad not in done.stderr + done.stdout  # a secret is never echoed, even a bad one
    assert not (tmp_path / "data" / "threadgate.db").exists()  # refused before anything was created


def test_a_well_formed_master_key_is_the_admin_key(gateway_factory) -> None:
    gw = gateway_factory(master_key=GOOD)
    with gw.client(GOOD) as c:
        assert c.get("/v1/key").json()["scope"] == "admin"


def test_an_admin_key_cannot_revoke_itself(gateway) -> None:
    with gateway.admin() as c:
        me = c.get("/v1/key").json()
        r = c.delete(f"/v1/keys/{me['id']}")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["type"] == "conflict_error"
        assert "itself" in r.json()["error"]["message"]
        assert c.get("/v1/key").status_code == 200  # still works


def test_another_admin_key_can_revoke_it(gateway) -> None:
    second = gateway.mint(scope="admin")
    with gateway.admin() as c:
        me = c.get("/v1/key").json()
    with gateway.client(second["secret"]) as c:
        assert c.delete(f"/v1/keys/{me['id']}").status_code == 200
    with gateway.admin() as c:
        assert c.get("/v1/key").status_code == 401


def test_the_cli_cannot_revoke_the_last_admin_key(tmp_path: Path) -> None:
    created = run_cli(tmp_path, "keys", "list", master_key=GOOD)
    assert created.returncode == 0, created
    master_id = created.stdout.split()[0]
    done = run_cli(tmp_path, "keys", "revoke", master_id, master_key=GOOD)
    assert done.returncode == 1, done
    assert "last admin key" in done.stdout + done.stderr
    listing = run_cli(tmp_path, "keys", "list", master_key=GOOD).stdout
    assert "active" in listing and "revoked" not in listing


def test_a_restart_with_a_revoked_master_key_is_refused_and_says_why(tmp_path: Path) -> None:
    from threadgate.bootstrap import StartRefused, ensure_first_admin
    from threadgate.runtime import build

    settings = make_settings(tmp_path, mode="local", master_key=GOOD)
    rt = build(settings)
    rt.indexer = None
    assert ensure_first_admin(rt.stores, rt.clock, settings) is None
    account = rt.stores.keys.first_account()
    master = next(k for k in rt.stores.keys.list_keys(account.id) if k.name == "master")
    rt.stores.keys.revoke_key(account.id, master.id, rt.clock.now_ms())
    with pytest.raises(StartRefused) as refused:
        ensure_first_admin(rt.stores, rt.clock, settings)
    assert "revoked" in str(refused.value) and "THREADGATE_MASTER_KEY" in str(refused.value)
    # A new master key is the way back: it is registered as a new admin key of the same account.
    fresh = "qlk_live_" + "cd" * 32
    assert ensure_first_admin(rt.stores, rt.clock, make_settings(tmp_path, mode="local", master_key=fresh)) is None
    admins = [k for k in rt.stores.keys.list_keys(account.id) if k.scope == "admin" and not k.revoked]
    assert len(admins) == 1 and admins[0].account_id == account.id
    rt.stores.close()
