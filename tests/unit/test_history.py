"""threadgate.domain.history.build_history: whatever the thread holds, upstream gets a valid
conversation (user first, roles alternate, every tool_use answered right after) that fits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadgate.domain.errors import InvalidRequest
from threadgate.domain.history import INTERRUPTED, build_history
from threadgate.domain.models import Message

BIG = 10**9


def msg(seq: int, role: str, content: Any, kind: str | None = None) -> Message:
    kind = kind or role
    return Message("thr_1", seq, role, content, kind, None, None, seq)  # type: ignore[arg-type]


def text(t: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": t}]


def use(id_: str, name: str = "f") -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": {}}


def result(id_: str, out: str = "ok") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": id_, "content": out}


def thread(*items: tuple[str, Any]) -> list[Message]:
    return [msg(i + 1, role, content) for i, (role, content) in enumerate(items)]


def size(messages: list[dict[str, Any]]) -> int:
    return len(json.dumps(messages, separators=(",", ":"), ensure_ascii=False).encode())


def assert_valid(messages: list[dict[str, Any]]) -> None:
    """The Anthropic Messages rules the gateway must never break."""
    assert messages and messages[0]["role"] == "user"
    for a, b in zip(messages, messages[1:]):
        assert a["role"] != b["role"], messages
    for i, m in enumerate(messages):
        uses = [b["id"] for b in m["content"] if b.get("type") == "tool_use"]
        results = [b["tool_use_id"] for b in m["content"] if b.get("type") == "tool_result"]
        if m["role"] == "assistant":
            assert not results
            if uses:  # answered, all of them, by the very next message
                assert i + 1 < len(messages), messages
                nxt = messages[i + 1]["content"]
                answered = [b["tool_use_id"] for b in nxt if b.get("type") == "tool_result"]
                assert sorted(answered) == sorted(uses), messages
                kinds = [b.get("type") for b in nxt]
                assert kinds[: len(answered)] == ["tool_result"] * len(answered)  # results first
        else:
            assert not uses
            prev_uses = [] if i == 0 else [b["id"] for b in messages[i - 1]["content"] if b.get("type") == "tool_use"]
            assert set(results) <= set(prev_uses), messages


def test_plain_history_plus_new_turn():
    stored = thread(("user", "hi"), ("assistant", text("hello")))
    out = build_history(stored, text("how are you"), BIG)
    assert out == [{"role": "user", "content": text("hi")}, {"role": "assistant", "content": text("hello")},
                   {"role": "user", "content": text("how are you")}]


def test_orphan_tool_use_gets_a_synthetic_error_result():
    stored = thread(("user", text("weather?")), ("assistant", [*text("checking"), use("t1"), use("t2")]))
    out = build_history(stored, text("still there?"), BIG)
    assert_valid(out)
    last = out[-1]["content"]
    synthetic = [b for b in last if b.get("type") == "tool_result"]
    assert [b["tool_use_id"] for b in synthetic] == ["t1", "t2"]
    assert all(b["is_error"] is True and b["content"] == INTERRUPTED for b in synthetic)
    assert last[-1] == text("still there?")[0]  # the new turn follows the results in one message


def test_partly_answered_tool_use_gets_only_the_missing_results():
    stored = thread(("user", text("q")), ("assistant", [use("a"), use("b")]), ("user", [result("b", "B")]),
                    ("assistant", text("done")))
    out = build_history(stored, text("next"), BIG)
    assert_valid(out)
    answers = {b["tool_use_id"]: b for b in out[2]["content"]}
    assert answers["b"]["content"] == "B" and answers["a"]["is_error"] is True


def test_orphan_tool_use_followed_by_an_assistant_message():
    stored = thread(("user", text("q")), ("assistant", [use("x")]), ("assistant", text("sorry")))
    out = build_history(stored, text("ok"), BIG)
    assert_valid(out)
    assert out[2]["content"][0]["tool_use_id"] == "x"


def test_stray_tool_results_are_dropped():
    stored = thread(("user", text("q")), ("assistant", text("a")), ("user", [result("ghost"), *text("more")]),
                    ("assistant", text("b")), ("user", [result("ghost2")]))
    out = build_history(stored, text("new"), BIG)
    assert_valid(out)
    assert "ghost" not in json.dumps(out)
    assert out[-1] == {"role": "user", "content": text("new")}


def test_repeated_tool_results_keep_only_the_first():
    stored = thread(("user", text("q")), ("assistant", [use("t")]), ("user", [result("t", "1"), result("t", "2")]))
    out = build_history(stored, text("next"), BIG)
    assert_valid(out)
    assert [b.get("content") for b in out[-1]["content"]] == ["1", None]


def test_tool_results_come_before_text():
    stored = thread(("user", text("q")), ("assistant", [use("t")]), ("user", [*text("here you go"), result("t")]))
    out = build_history(stored, text("next"), BIG)
    assert_valid(out)
    assert [b["type"] for b in out[-1]["content"]] == ["tool_result", "text", "text"]


def test_consecutive_same_role_messages_are_merged():
    # A failed model call leaves the user turn without an answer: the next one follows it.
    stored = thread(("user", text("first")), ("user", text("second")), ("assistant", text("a")),
                    ("assistant", text("b")))
    out = build_history(stored, text("third"), BIG)
    assert_valid(out)
    assert out == [{"role": "user", "content": text("first") + text("second")},
                   {"role": "assistant", "content": text("a") + text("b")},
                   {"role": "user", "content": text("third")}]


def test_merged_user_message_keeps_tool_results_first():
    stored = thread(("user", text("q")), ("assistant", [use("t")]), ("user", [result("t")]))
    out = build_history(stored, text("and now?"), BIG)
    assert_valid(out)
    assert [b["type"] for b in out[-1]["content"]] == ["tool_result", "text"]


def test_leading_assistant_tool_use_goes_with_its_results():
    # The oldest stored message is an assistant tool call: dropping it must drop its answers too.
    stored = thread(("assistant", [use("t1")]), ("user", [result("t1"), *text("thanks")]), ("assistant", text("np")))
    out = build_history(stored, text("q"), BIG)
    assert_valid(out)
    assert out[0] == {"role": "user", "content": text("thanks")}
    only_call = build_history(thread(("assistant", [use("t1")])), text("q"), BIG)
    assert only_call == [{"role": "user", "content": text("q")}]


def test_first_message_is_user():
    stored = thread(("assistant", text("greeting from a template")), ("user", text("hi")), ("assistant", text("yo")))
    out = build_history(stored, text("q"), BIG)
    assert_valid(out)
    assert out[0] == {"role": "user", "content": text("hi")}


def test_without_a_new_turn_the_stored_history_is_repaired():
    stored = thread(("user", text("q")), ("assistant", [use("t")]))
    out = build_history(stored, None, BIG)
    assert_valid(out)
    assert out[-1]["role"] == "user" and out[-1]["content"][0]["tool_use_id"] == "t"


def test_fitting_drops_whole_oldest_exchanges():
    stored = thread(("user", text("old " * 50)), ("assistant", text("old answer " * 50)),
                    ("user", text("mid")), ("assistant", [use("t1")]), ("user", [result("t1", "r" * 40)]),
                    ("assistant", text("mid answer")))
    new = text("newest")
    everything = build_history(stored, new, BIG)
    assert len(everything) == 7
    tail = everything[2:]  # the second exchange (with its tool round trip) plus the new turn
    # Room for the tail (with a little slack for per-exchange framing) but not for the oldest.
    out = build_history(stored, new, size(tail) + 8)
    assert out == tail
    # Less than the tail: the tool exchange cannot be split, so only the new turn remains.
    for budget in (size(tail) - 1, size(tail) // 2, size(everything[-1:]) + 8):
        assert build_history(stored, new, budget) == [{"role": "user", "content": new}]
    assert build_history(stored, new, size(everything) + 16) == everything


def test_a_new_message_that_cannot_fit_is_refused():
    stored = thread(("user", text("q")), ("assistant", text("a")))
    new = text("x" * 1_000)
    with pytest.raises(InvalidRequest) as err:
        build_history(stored, new, size([{"role": "user", "content": new}]) - 1)
    assert err.value.status == 400 and err.value.param == "content"
    with pytest.raises(InvalidRequest):
        build_history([], new, 10)


# --- any thread the store might hold -----------------------------------------------------------

@st.composite
def stored_threads(draw) -> list[Message]:
    """Arbitrary sequences a crash-prone writer could leave: any role order, tool_use with or
    without results, results for unknown ids, string or block content."""
    n = draw(st.integers(0, 12))
    items, ids = [], 0
    for _ in range(n):
        role = draw(st.sampled_from(["user", "assistant"]))
        blocks: list[dict[str, Any]] = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["text", "tool_use", "tool_result"]))
            if kind == "text":
                blocks.append({"type": "text", "text": draw(st.text(max_size=20))})
            elif kind == "tool_use" and role == "assistant":
                ids += 1
                blocks.append(use(f"t{ids}"))
            elif kind == "tool_result" and role == "user":
                blocks.append(result(f"t{draw(st.integers(0, ids + 1))}"))
        if not blocks:
            blocks = text("filler")
        content: Any = blocks[0]["text"] if len(blocks) == 1 and blocks[0]["type"] == "text" and draw(st.booleans()) else blocks
        items.append((role, content))
    return thread(*items)


@settings(max_examples=300, deadline=None)
@given(stored_threads(), st.integers(50, 2_000))
def test_any_stored_thread_becomes_a_valid_fitting_history(stored, budget):
    new = text("the new question")
    full = build_history(stored, new, BIG)
    assert_valid(full)
    # Fitting may count a few bytes of framing per exchange on top of the exact JSON size.
    slack = 2 * len(full) + 2
    try:
        out = build_history(stored, new, budget)
    except InvalidRequest:
        assert budget < size(full) + slack  # refused only when something had to be dropped
        return
    assert_valid(out)
    assert size(out) <= budget
    assert out[-1]["content"][-1] == new[0]  # the new turn is always last and whole
    # Fitting keeps a suffix of the unlimited history: whole exchanges, nothing reordered; only
    # the first kept message loses tool_results whose tool_use was in a dropped exchange.
    suffix = full[len(full) - len(out):]
    assert suffix[1:] == out[1:]
    assert out[0]["content"] == [b for b in suffix[0]["content"] if b.get("type") != "tool_result" or len(out) == len(full)]
    if size(full) + slack <= budget:
        assert out == full


def test_exchange_after_a_loop_that_hit_its_limit_can_be_dropped_to_fit():
    """A loop that ended at its iteration limit leaves tool_results as the thread's last message;
    the next user text merges into it. The older exchange must still be droppable, and the
    results of its dropped tool calls must not survive as orphans."""
    from threadgate.domain.history import build_history
    from threadgate.domain.models import Message

    big = "x" * 5000
    stored = [
        Message("t", 1, "user", big, "user", None, None, 0),
        Message("t", 2, "assistant", [{"type": "tool_use", "id": "tu1", "name": "f", "input": {}}], "tool_use", None, None, 0),
        Message("t", 3, "user", [{"type": "tool_result", "tool_use_id": "tu1", "content": "not executed", "is_error": True}], "tool_result", None, None, 0),
    ]
    out = build_history(stored, [{"type": "text", "text": "next question"}], budget_tokens=1000)
    assert out == [{"role": "user", "content": [{"type": "text", "text": "next question"}]}]
