"""Local search: isolation, persistence, deletion, what is indexed, and failure handling."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from threadgate.domain.errors import InvalidRequest
from threadgate.domain.models import Message
from threadgate.search.embedders import load_local_embedder
from threadgate.search.indexing import Indexer
from threadgate.search.local_index import LocalVectorIndex

EMBEDDER = load_local_embedder()


def msg(
    thread: str,
    seq: int,
    text: str | list,
    *,
    account: str = "acct_a",
    user: str | None = "alice",
    kind: str = "user",
    role: str | None = None,
) -> Message:
    return Message(
        thread_id=thread,
        seq=seq,
        role=role or ("assistant" if kind in ("assistant", "tool_use") else "user"),  # type: ignore[arg-type]
        content=text,
        kind=kind,  # type: ignore[arg-type]
        model=None,
        request_id=None,
        created_at=1_700_000_000_000 + seq,
        account_id=account,
        end_user_id=user,
    )


@pytest.fixture
def indexer(tmp_path: Path) -> Indexer:
    return Indexer(EMBEDDER, LocalVectorIndex(tmp_path / "search", dimensions=EMBEDDER.dimensions))


def search(ix: Indexer, q: str, *, account: str = "acct_a", user: str | None = None, thread: str | None = None, limit: int = 10, mode: str = "hybrid"):
    return ix.search(account_id=account, end_user_id=user, thread_id=thread, q=q, limit=limit, mode=mode)


# --- isolation --------------------------------------------------------------------------------

REFUND = "I would like a refund for my order 1234, it arrived broken."


def seed_isolation(ix: Indexer) -> None:
    assert ix.index_messages(
        [
            msg("t_alice", 1, REFUND, account="acct_a", user="alice"),
            msg("t_bob", 1, REFUND.replace("1234", "1235"), account="acct_a", user="bob"),
            msg("t_other", 1, REFUND, account="acct_b", user="alice"),  # same end user id, other tenant
            msg("t_unbound", 1, "Refund request for a broken order.", account="acct_a", user=None),
        ]
    ) == 4


def test_results_never_cross_accounts(indexer: Indexer) -> None:
    seed_isolation(indexer)
    a = search(indexer, "refund broken order", account="acct_a")
    b = search(indexer, "refund broken order", account="acct_b")
    assert {r["thread_id"] for r in a} == {"t_alice", "t_bob", "t_unbound"}
    assert [r["thread_id"] for r in b] == ["t_other"]
    assert search(indexer, "refund", account="acct_nobody") == []


def test_an_end_user_filter_never_returns_another_users_text(indexer: Indexer) -> None:
    seed_isolation(indexer)
    for limit in (1, 10, 50):
        alice = search(indexer, "refund for order 1235", user="alice", limit=limit)
        assert [(r["thread_id"], r["end_user_id"]) for r in alice] == [("t_alice", "alice")]
    assert search(indexer, "refund", user="mallory") == []


def test_a_thread_filter_returns_only_that_thread(indexer: Indexer) -> None:
    seed_isolation(indexer)
    indexer.index_messages([msg("t_alice2", 1, "Another refund question about order 99", user="alice")])
    got = search(indexer, "refund", user="alice", thread="t_alice2")
    assert [r["thread_id"] for r in got] == ["t_alice2"]
    # A thread of another end user is invisible through that end user's filter.
    assert search(indexer, "refund", user="alice", thread="t_bob") == []


def test_results_have_the_api_shape_best_first(indexer: Indexer) -> None:
    seed_isolation(indexer)
    indexer.index_messages([msg("t_alice", 2, "The weather in Lisbon is sunny.", kind="assistant", user="alice")])
    got = search(indexer, "refund", user="alice", mode="semantic")
    assert [r["seq"] for r in got] == [1, 2]
    first = got[0]
    assert set(first) == {"thread_id", "seq", "role", "score", "snippet", "end_user_id", "created_at"}
    assert first["role"] == "user" and first["snippet"] == REFUND and first["created_at"] == 1_700_000_000_001
    assert -1.0 <= got[1]["score"] < first["score"] <= 1.0
    # score is the cosine of the two unit vectors
    [qv] = EMBEDDER.embed(["refund"])
    [dv] = EMBEDDER.embed([REFUND])
    assert first["score"] == pytest.approx(float(np.dot(qv, dv)), abs=1e-4)


def test_limit_caps_the_results(indexer: Indexer) -> None:
    indexer.index_messages([msg(f"t{i}", 1, f"refund number {i}") for i in range(30)])
    assert len(search(indexer, "refund", limit=7)) == 7


def test_empty_query_is_an_invalid_request(indexer: Indexer) -> None:
    with pytest.raises(InvalidRequest) as err:
        search(indexer, "   ")
    assert err.value.param == "q"


# --- what is indexed ----------------------------------------------------------------------------


def test_only_user_and_final_assistant_text_is_indexed(indexer: Indexer) -> None:
    messages = [
        msg("t", 1, "How is the weather in Lisbon?"),
        msg("t", 2, [{"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Lisbon"}}], kind="tool_use"),
        msg("t", 3, [{"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny 25C"}], kind="tool_result", role="user"),
        msg("t", 4, [{"type": "text", "text": "It is sunny in Lisbon."}, {"type": "image", "source": {}}], kind="assistant"),
        msg("t", 5, "   ", kind="user"),
        msg("t", 6, [{"type": "image", "source": {}}], kind="user"),
    ]
    assert indexer.index_messages(messages) == 2
    assert sorted(r["seq"] for r in search(indexer, "sunny 25C weather tool", limit=50)) == [1, 4]


def test_reindexing_a_message_replaces_it(indexer: Indexer) -> None:
    indexer.index_messages([msg("t", 1, "first draft about gardening")])
    indexer.index_messages([msg("t", 1, "final text about refunds")])
    got = search(indexer, "anything", limit=50)
    assert [(r["seq"], r["snippet"]) for r in got] == [(1, "final text about refunds")]


# --- deletion and persistence --------------------------------------------------------------------


def test_deleting_a_thread_removes_its_entries_at_once(indexer: Indexer) -> None:
    indexer.index_messages([msg("t1", 1, "refund please"), msg("t1", 2, "refund sent", kind="assistant"), msg("t2", 1, "refund again")])
    assert len(search(indexer, "refund")) == 3
    indexer.delete_thread("acct_a", "t1")
    assert [r["thread_id"] for r in search(indexer, "refund")] == ["t2"]
    indexer.delete_thread("acct_a", "t_unknown")  # no-op
    indexer.delete_thread("acct_b", "t2")  # another account cannot delete it
    assert [r["thread_id"] for r in search(indexer, "refund")] == ["t2"]


def test_deleting_an_account_removes_only_that_account(indexer: Indexer) -> None:
    indexer.index_messages([msg("t1", 1, "refund please", account="acct_a"), msg("t2", 1, "refund please", account="acct_b")])
    indexer.delete_account("acct_a")
    assert search(indexer, "refund", account="acct_a") == []
    assert len(search(indexer, "refund", account="acct_b")) == 1


def test_the_index_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "search"
    first = LocalVectorIndex(path, dimensions=EMBEDDER.dimensions)
    ix = Indexer(EMBEDDER, first)
    ix.index_messages([msg("t_old", 1, "We agreed on a refund of 40 dollars last week."), msg("t_gone", 1, "refund thread deleted")])
    search(ix, "refund")  # loads the partition before the delete
    ix.delete_thread("acct_a", "t_gone")
    first.close()

    reopened = Indexer(EMBEDDER, LocalVectorIndex(path, dimensions=EMBEDDER.dimensions))
    got = search(reopened, "money back", user="alice")
    assert [r["thread_id"] for r in got] == ["t_old"]


def test_a_write_by_another_process_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "search"
    reader = Indexer(EMBEDDER, LocalVectorIndex(path, dimensions=EMBEDDER.dimensions))
    assert search(reader, "refund") == []  # partition loaded (empty)
    writer = Indexer(EMBEDDER, LocalVectorIndex(path, dimensions=EMBEDDER.dimensions))  # another connection
    writer.index_messages([msg("t", 1, "refund please")])
    assert [r["thread_id"] for r in search(reader, "refund")] == ["t"]


def test_reopening_with_other_dimensions_is_refused(tmp_path: Path) -> None:
    LocalVectorIndex(tmp_path, dimensions=256).close()
    with pytest.raises(ValueError, match="256-d"):
        LocalVectorIndex(tmp_path, dimensions=64)


def test_many_deletions_compact_without_losing_live_rows(tmp_path: Path) -> None:
    index = LocalVectorIndex(tmp_path, dimensions=4)
    rng = np.random.default_rng(1)
    docs = []
    for t in range(600):
        for s in range(4):
            v = rng.normal(size=4).astype(np.float32)
            docs.append({"id": f"t{t}#{s}", "account_id": "a", "end_user_id": "u", "thread_id": f"t{t}", "seq": s, "role": "user", "text": f"x{t}", "created_at": 0, "vector": (v / np.linalg.norm(v)).tolist()})
    index.upsert(docs)
    index.search([1, 0, 0, 0], account_id="a")  # load
    for t in range(0, 590):
        index.delete_thread("a", f"t{t}")
    got = index.search([1, 0, 0, 0], account_id="a", limit=100)
    assert sorted({d["thread_id"] for d, _ in got}) == sorted(f"t{t}" for t in range(590, 600))
    assert len(got) == 40
    assert index.count("a") == 40


def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    index = LocalVectorIndex(tmp_path, dimensions=EMBEDDER.dimensions)
    ix = Indexer(EMBEDDER, index)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(20):
                ix.index_messages([msg(f"t{worker}_{i}", 1, f"refund request {worker} {i}")])
                search(ix, "refund")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert index.count("acct_a") == 80
    assert len(search(ix, "refund", limit=50)) == 50


# --- failures --------------------------------------------------------------------------------------


class FlakyIndex(LocalVectorIndex):
    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path, dimensions=EMBEDDER.dimensions)
        self.failures = failures
        self.calls = 0

    def upsert(self, docs):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("index down: secret-ish detail")
        super().upsert(docs)


def test_a_failed_upsert_is_retried_once(tmp_path: Path) -> None:
    index = FlakyIndex(tmp_path, failures=1)
    ix = Indexer(EMBEDDER, index)
    assert ix.index_messages([msg("t", 1, "refund please")]) == 1
    assert index.calls == 2


def test_indexing_never_raises_and_logs_no_message_text(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    index = FlakyIndex(tmp_path, failures=5)
    ix = Indexer(EMBEDDER, index)
    with caplog.at_level(logging.WARNING):
        assert ix.index_messages([msg("t", 1, "my private refund story")]) == 0
    assert index.calls == 2
    assert "t#1" in caplog.text
    assert "private refund story" not in caplog.text and "secret-ish" not in caplog.text


def test_a_search_backend_failure_is_a_503_without_details(tmp_path: Path) -> None:
    from threadgate.domain.errors import UpstreamOverloaded

    class DownIndex(LocalVectorIndex):
        def search(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise ConnectionError("opensearch at 10.0.0.1 refused")

    ix = Indexer(EMBEDDER, DownIndex(tmp_path, dimensions=EMBEDDER.dimensions))
    with pytest.raises(UpstreamOverloaded) as err:
        search(ix, "refund")
    assert err.value.status == 503 and "10.0.0.1" not in err.value.message


def test_a_failed_thread_deletion_is_retried_and_reported_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class FlakyDelete(LocalVectorIndex):
        failures = 1

        def delete_thread(self, account_id, thread_id, *, deleted_at=None):  # type: ignore[no-untyped-def]
            if self.failures:
                self.failures -= 1
                raise ConnectionError("down")
            super().delete_thread(account_id, thread_id)

    index = FlakyDelete(tmp_path, dimensions=EMBEDDER.dimensions)
    ix = Indexer(EMBEDDER, index)
    ix.index_messages([msg("t1", 1, "refund please")])
    assert ix.delete_thread("acct_a", "t1") is True  # second attempt
    assert search(ix, "refund") == []
    index.failures = 2
    with caplog.at_level(logging.WARNING):
        assert ix.delete_thread("acct_a", "t1") is False
    assert "ConnectionError" in caplog.text
