"""The CLI prints what a person reads: real characters (the key prefix's "…", not "\\u2026"),
and `keys list` shows which end user each key is bound to."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_master_key import GOOD, run_cli


def test_keys_create_and_list_print_real_characters_and_the_end_user(tmp_path: Path) -> None:
    created = run_cli(tmp_path, "keys", "create", "--name", "café", "--end-user", "u_42", "--max-spend", "5",
                      master_key=GOOD)
    assert created.returncode == 0, created
    assert "\\u" not in created.stdout
    key = json.loads(created.stdout)
    assert "…" in key["prefix"] and key["end_user_id"] == "u_42"
    listing = run_cli(tmp_path, "keys", "list", master_key=GOOD)
    assert listing.returncode == 0, listing
    [line] = [row for row in listing.stdout.splitlines() if key["id"] in row]
    assert "u_42" in line and "café" in line and "…" in line and "\\u" not in line
