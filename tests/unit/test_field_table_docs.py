"""The field tables in README.md and docs/api.md are the ones the code runs on."""

from __future__ import annotations

from pathlib import Path

import pytest
from threadgate.providers import field_map

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("doc", ["README.md", "docs/api.md"])
def test_the_documented_field_table_is_the_one_the_code_uses(doc):
    text = (ROOT / doc).read_text()
    assert field_map.with_table(text) == text, "stale: run .venv/bin/python -m threadgate.providers.field_map"

