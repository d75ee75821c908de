"""Search shaping: snippets around the best-matching part, text extraction, indexability."""

from __future__ import annotations

from threadgate.domain.models import Message
from threadgate.domain.search import (
    SNIPPET_CHARS,
    index_document,
    is_indexable,
    message_text,
    snippet,
)

FILLER = (
    "We talked about the garden first. The tomatoes need more sun and less water this month. "
    "Then we discussed the new bicycle and whether the gears should be replaced before winter. "
)
REFUND_PART = "Finally the store agreed to refund the full price of the broken blender within ten days."
LONG = FILLER * 3 + REFUND_PART + " " + FILLER * 2


def test_a_short_message_is_returned_whole() -> None:
    assert snippet("  Refund is on its way.  ", "refund") == "Refund is on its way."


def test_a_long_message_is_cut_around_the_matching_part() -> None:
    got = snippet(LONG, "refund for the blender")
    assert "refund the full price of the broken blender" in got
    assert got.startswith("…") and got.endswith("…")
    assert len(got) <= SNIPPET_CHARS + 2
    assert len(got) >= SNIPPET_CHARS // 2


def test_snippets_do_not_cut_words() -> None:
    got = snippet(LONG, "bicycle gears").strip("…")
    words = set(LONG.split())
    assert all(word in words for word in got.split())


def test_inflected_forms_match_the_query() -> None:
    assert "refund" in snippet(LONG, "refunds")


def test_without_lexical_overlap_a_semantic_scorer_picks_the_window() -> None:
    def scorer(windows):
        return [1.0 if "blender" in w else 0.0 for w in windows]

    assert "blender" in snippet(LONG, "money back", window_scorer=scorer)
    # no scorer and no shared word: the start of the message
    assert snippet(LONG, "money back").startswith("We talked about the garden")


def test_a_single_long_sentence_is_still_centred_on_the_match() -> None:
    words = [f"word{i}" for i in range(200)]
    words[150] = "refund"
    got = snippet(" ".join(words), "refund")
    assert "refund" in got and got.startswith("…")


def _message(content, kind="user") -> Message:
    return Message("t", 3, "user", content, kind, None, None, 5, "acct", "eu")


def test_text_comes_from_strings_and_text_blocks_only() -> None:
    assert message_text(" hello ") == "hello"
    blocks = [
        {"type": "text", "text": "first"},
        {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
        {"type": "tool_use", "id": "x", "name": "n", "input": {"text": "not me"}},
        {"type": "text", "text": "second"},
    ]
    assert message_text(blocks) == "first\n\nsecond"


def test_indexable_kinds() -> None:
    assert is_indexable(_message("hi", "user"))
    assert is_indexable(_message([{"type": "text", "text": "hi"}], "assistant"))
    assert not is_indexable(_message([{"type": "text", "text": "hi"}], "tool_use"))
    assert not is_indexable(_message([{"type": "tool_result", "tool_use_id": "x", "content": "hi"}], "tool_result"))
    assert not is_indexable(_message("", "user"))


def test_index_document_carries_scope_and_an_idempotent_id() -> None:
    doc = index_document(_message("hello"))
    assert doc == {
        "id": "t#3",
        "account_id": "acct",
        "end_user_id": "eu",
        "thread_id": "t",
        "seq": 3,
        "role": "user",
        "text": "hello",
        "created_at": 5,
    }
