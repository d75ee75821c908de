"""ToolStore contract: unique live names per account, secrets never listed, soft deletion."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from threadgate.domain.errors import Conflict

from tests.contract.records import tool


def test_a_tool_is_read_back_without_its_secret_unless_asked(stores):
    t = tool("acct_a", "get_weather")
    stores.tools.create_tool(t)

    assert stores.tools.get_tool("acct_a", t.id) == replace(t, secret="")
    assert stores.tools.get_tool("acct_a", t.id, with_secret=True) == t
    assert stores.tools.get_tool("acct_b", t.id) is None
    assert stores.tools.get_tool("acct_b", t.id, with_secret=True) is None
    assert stores.tools.get_tool("acct_a", "tool_missing") is None


def test_list_tools_is_newest_first_without_secrets_and_per_account(stores):
    older = tool("acct_a", "alpha", created_at=1_000)
    newer = tool("acct_a", "beta", created_at=2_000)
    foreign = tool("acct_b", "gamma")
    for t in (older, newer, foreign):
        stores.tools.create_tool(t)

    listed = stores.tools.list_tools("acct_a")
    assert listed == [replace(newer, secret=""), replace(older, secret="")]
    assert [t.id for t in stores.tools.list_tools("acct_b")] == [foreign.id]
    assert stores.tools.list_tools("acct_c") == []


def test_a_live_name_is_unique_per_account(stores):
    stores.tools.create_tool(tool("acct_a", "lookup"))
    with pytest.raises(Conflict):
        stores.tools.create_tool(tool("acct_a", "lookup"))
    stores.tools.create_tool(tool("acct_b", "lookup"))  # other accounts are independent
    assert len(stores.tools.list_tools("acct_a")) == 1


def test_concurrent_creates_with_one_name_leave_one_tool(stores):
    def create(i: int) -> bool:
        try:
            stores.tools.create_tool(tool("acct_a", "race"))
            return True
        except Conflict:
            return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(create, range(8)))
    assert outcomes.count(True) == 1
    assert [t.name for t in stores.tools.list_tools("acct_a")] == ["race"]


def test_delete_hides_the_tool_and_frees_its_name(stores):
    t = tool("acct_a", "lookup")
    stores.tools.create_tool(t)

    assert stores.tools.delete_tool("acct_b", t.id) is False
    assert stores.tools.get_tool("acct_a", t.id) is not None
    assert stores.tools.delete_tool("acct_a", t.id) is True
    assert stores.tools.get_tool("acct_a", t.id) is None
    assert stores.tools.get_tool("acct_a", t.id, with_secret=True) is None
    assert stores.tools.list_tools("acct_a") == []
    assert stores.tools.delete_tool("acct_a", t.id) is False
    assert stores.tools.delete_tool("acct_a", "tool_missing") is False

    again = tool("acct_a", "lookup")
    stores.tools.create_tool(again)
    assert [x.id for x in stores.tools.list_tools("acct_a")] == [again.id]
