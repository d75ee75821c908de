"""Reciprocal rank fusion (domain/search.py): how hybrid search orders what both rankings found."""

from __future__ import annotations

import pytest

from threadgate.domain.search import RRF_K, fuse


def ranking(*ids: str) -> list[tuple[dict, float]]:
    return [({"id": i, "text": i}, 100.0 - n) for n, i in enumerate(ids)]


def test_a_document_found_by_both_rankings_beats_one_found_by_a_single_ranking() -> None:
    fused = fuse([ranking("a", "shared"), ranking("b", "shared")], limit=10)
    assert [doc["id"] for doc, _ in fused] == ["shared", "a", "b"]


def test_scores_depend_on_ranks_only_and_lie_in_0_1() -> None:
    fused = fuse([ranking("x", "y"), ranking("x")], limit=10)
    assert fused[0] == ({"id": "x", "text": "x"}, pytest.approx(1.0))  # first everywhere
    assert fused[1][1] == pytest.approx((1 / (RRF_K + 2)) / (2 / (RRF_K + 1)))
    # Raw scores of another scale change nothing.
    rescaled = [[(doc, score * 1e6) for doc, score in ranking("x", "y")], ranking("x")]
    assert fuse(rescaled, limit=10) == fused


def test_limit_ties_and_empty_rankings() -> None:
    assert fuse([[], []], limit=5) == []
    only_lexical = fuse([[], ranking("p", "q", "r")], limit=2)
    assert [doc["id"] for doc, _ in only_lexical] == ["p", "q"]
    assert only_lexical[0][1] == pytest.approx(0.5)  # first in one of two rankings
    # Equal fused scores keep the first ranking's document first.
    assert [doc["id"] for doc, _ in fuse([ranking("s"), ranking("l")], limit=2)] == ["s", "l"]
