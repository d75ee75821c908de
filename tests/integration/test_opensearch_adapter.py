"""The OpenSearch adapter against a real OpenSearch 2.19.1 node with the k-NN plugin 2.19.1.0
(the session's node: tests/real_opensearch.py; skipped where Java 17 / Maven are absent).

Each test runs twice: as on a managed domain, and on the Serverless code path (no custom ids, no
`refresh`, no `_delete_by_query`). Serverless runs the `lucene` engine here, because the Maven
k-NN zip has no native faiss library; what only AWS can show is listed in README "Tests".
A spy on the client's transport records what went over the wire, without changing it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import numpy as np
import pytest
from opensearchpy import OpenSearch

from tests.unit.test_search_relevance import IDENTIFIER_QUERIES, QUERIES, STORED
from threadgate.config import Settings
from threadgate.domain.models import Message
from threadgate.search.embedders import load_local_embedder
from threadgate.search.indexing import Indexer
from threadgate.search.opensearch import OpenSearchError, OpenSearchIndex, bootstrap_index, index_body

EMBEDDER = load_local_embedder()
DIM = EMBEDDER.dimensions
# This node refreshes every second: the bound the Serverless path waits for when deleting.
VISIBILITY_S = 3.0


def message(thread: str, seq: int, text: str, *, account: str = "acct_a", user: str | None = "alice", kind: str = "user") -> Message:
    return Message(thread, seq, "assistant" if kind == "assistant" else "user", text, kind, None, None, 1_000 + seq, account, user)  # type: ignore[arg-type]


SEED = [
    message("t_alice", 1, "I need a refund for the broken blender."),
    message("t_alice", 2, "The refund was approved and will arrive in 5 days.", kind="assistant"),
    message("t_alice_trip", 1, "Plan a weekend in Lisbon for me."),
    message("t_bob", 1, "I need a refund for the broken blender!", user="bob"),
    message("t_other_acct", 1, "I need a refund for the broken blender.", account="acct_b"),
]


class Spy:
    """Records (method, path, params) of every request the client sends."""

    def __init__(self, client: OpenSearch) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        original = client.transport.perform_request

        def perform_request(method: str, url: str, params: Any = None, body: Any = None, **kw: Any) -> Any:
            self.calls.append((method, url, dict(params or {})))
            return original(method, url, params=params, body=body, **kw)

        client.transport.perform_request = perform_request  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def client(opensearch_url: str) -> OpenSearch:
    return OpenSearch(hosts=[opensearch_url], timeout=60)


@pytest.fixture(params=[False, True], ids=["domain", "serverless"])
def serverless(request: pytest.FixtureRequest) -> bool:
    return request.param


@pytest.fixture
def index(client: OpenSearch, serverless: bool) -> Iterator[OpenSearchIndex]:
    name = f"tg-test-{uuid.uuid4().hex[:10]}"
    # Serverless on AWS runs faiss; this node has lucene only (see the module docstring).
    index = OpenSearchIndex(OpenSearch(hosts=client.transport.hosts, timeout=60), name, DIM, serverless=serverless,
                            engine="lucene", serverless_visibility_s=VISIBILITY_S)
    assert index.ensure_index() and not index.ensure_index()  # idempotent
    yield index
    client.indices.delete(index=name, ignore_unavailable=True)


def indexer(index: OpenSearchIndex) -> Indexer:
    return Indexer(EMBEDDER, index)


def settle(index: OpenSearchIndex) -> None:
    """What time does on Serverless (its own refresh): used only where the adapter cannot refresh."""
    index.client.indices.refresh(index=index.index_name)


def copies(index: OpenSearchIndex, doc_id: str | None = None) -> int:
    settle(index)
    query = {"term": {"doc_id": doc_id}} if doc_id else {"match_all": {}}
    return index.client.count(index=index.index_name, body={"query": query})["count"]


def search(ix: Indexer, q: str, **scope: Any) -> list[dict[str, Any]]:
    scope.setdefault("account_id", "acct_a")
    scope.setdefault("end_user_id", None)
    scope.setdefault("thread_id", None)
    return ix.search(q=q, limit=scope.pop("limit", 10), mode=scope.pop("mode", "hybrid"), **scope)


def seed(ix: Indexer) -> None:
    assert ix.index_messages(SEED) == len(SEED)
    if ix.index.serverless:
        settle(ix.index)


# --- scoping and scores -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["semantic", "lexical", "hybrid"])
def test_every_mode_returns_only_the_callers_scope(index: OpenSearchIndex, mode: str) -> None:
    ix = indexer(index)
    seed(ix)
    q = "refund for a broken blender" if mode != "semantic" else "money back for a blender"
    everyone = search(ix, q, mode=mode)
    assert {r["thread_id"] for r in everyone} <= {"t_alice", "t_alice_trip", "t_bob"}
    assert {"t_alice", "t_bob"} <= {r["thread_id"] for r in everyone}
    alice = search(ix, q, end_user_id="alice", mode=mode)
    assert alice and {r["end_user_id"] for r in alice} == {"alice"}
    assert alice[0]["thread_id"] == "t_alice"
    assert {r["thread_id"] for r in search(ix, q, end_user_id="alice", thread_id="t_alice_trip", mode=mode)} <= {"t_alice_trip"}
    assert [r["thread_id"] for r in search(ix, q, account_id="acct_b", mode=mode)] == ["t_other_acct"]
    assert search(ix, q, end_user_id="mallory", mode=mode) == []


def test_semantic_scores_are_cosines_best_first(index: OpenSearchIndex) -> None:
    ix = indexer(index)
    seed(ix)
    got = search(ix, "refund for the broken blender", end_user_id="alice", mode="semantic")
    scores = [r["score"] for r in got]
    assert scores == sorted(scores, reverse=True) and len(got) == 3
    [q, d] = EMBEDDER.embed(["refund for the broken blender", "I need a refund for the broken blender."])
    assert got[0]["score"] == pytest.approx(float(np.dot(q, d)), abs=1e-4)


def test_filtered_knn_returns_k_results_when_k_documents_match(index: OpenSearchIndex) -> None:
    """Efficient filtering: one end user's few messages among many others' still fill `limit`."""
    ix = indexer(index)
    crowd = [message(f"t_crowd{i}", 1, f"I need a refund for order {i}", user=f"u{i % 7}") for i in range(200)]
    mine = [message(f"t_mine{i}", 1, f"Weekend plans number {i} in Lisbon", user="alice") for i in range(12)]
    assert ix.index_messages(crowd + mine) == 212
    if index.serverless:
        settle(index)
    got = search(ix, "refund for my order", end_user_id="alice", limit=10, mode="semantic")
    assert len(got) == 10 and {r["end_user_id"] for r in got} == {"alice"}


# --- defect 2: writes are searchable when indexing returns (API.md §9) -------------------------


def test_indexed_messages_are_searchable_as_soon_as_indexing_returns(index: OpenSearchIndex) -> None:
    if index.serverless:
        pytest.skip("Serverless refreshes on its own schedule; no request can wait for it (README)")
    ix = indexer(index)
    msgs = [message(f"t_{i}", 1, f"Question {i} about my refund for the blender") for i in range(50)]
    assert ix.index_messages(msgs) == 50
    assert len(search(ix, "refund blender", limit=50, mode="semantic")) == 50
    assert len(search(ix, "refund blender", limit=50, mode="lexical")) == 50


# --- defect 1: deletes cannot miss fresh documents ----------------------------------------------


def test_a_thread_deleted_right_after_indexing_is_gone(index: OpenSearchIndex) -> None:
    ix = indexer(index)
    msgs = [message("t_gone", seq, f"secret plan number {seq}") for seq in range(1, 11)]
    keep = message("t_keep", 1, "secret plan to keep")
    assert ix.index_messages([*msgs, keep]) == 11
    assert ix.delete_thread("acct_a", "t_gone", deleted_at=time.time())  # no refresh in between
    assert copies(index) == 1
    assert [r["thread_id"] for r in search(ix, "secret plan")] == ["t_keep"]


def test_a_thread_overwritten_then_deleted_is_gone(index: OpenSearchIndex) -> None:
    """Overwritten documents were skipped as version conflicts by `_delete_by_query`."""
    ix = indexer(index)
    msgs = [message("t_gone", seq, f"draft {seq}") for seq in range(1, 11)]
    assert ix.index_messages(msgs) == 10
    settle(index)
    assert ix.index_messages(msgs) == 10  # re-delivered: new versions, not yet refreshed
    assert ix.delete_thread("acct_a", "t_gone", deleted_at=time.time())
    assert copies(index) == 0


def test_thread_and_account_deletion_respect_accounts(index: OpenSearchIndex) -> None:
    ix = indexer(index)
    seed(ix)
    assert ix.delete_thread("acct_a", "t_alice")
    assert {r["thread_id"] for r in search(ix, "refund")} == {"t_alice_trip", "t_bob"} or index.serverless
    assert ix.delete_thread("acct_b", "t_bob")  # another account's delete touches nothing of acct_a
    ix.delete_account("acct_a")
    assert search(ix, "refund") == [] or index.serverless
    settle(index)
    assert search(ix, "refund") == []
    assert [r["thread_id"] for r in search(ix, "refund", account_id="acct_b")] == ["t_other_acct"]


# --- defect 3: a record delivered twice stays one document -------------------------------------


def test_a_message_delivered_twice_within_the_refresh_interval_is_stored_once(index: OpenSearchIndex) -> None:
    ix = indexer(index)
    assert ix.index_messages(SEED) == 5
    assert ix.index_messages(SEED) == 5  # the stream retried the batch before any refresh
    assert copies(index) == 5
    assert copies(index, "t_alice#1") == 1
    assert len(search(ix, "refund blender", end_user_id="alice", limit=3, mode="semantic")) == 3


def test_duplicates_never_take_result_slots(index: OpenSearchIndex) -> None:
    """Even copies that slipped through (another process wrote them) are collapsed at query time."""
    ix = indexer(index)
    assert ix.index_messages(SEED) == 5
    other_process = indexer(OpenSearchIndex(index.client, index.index_name, DIM, serverless=index.serverless, engine="lucene"))
    assert other_process.index_messages(SEED[:2]) == 2
    settle(index)
    got = search(ix, "refund blender", end_user_id="alice", limit=3, mode="semantic")
    assert sorted((r["thread_id"], r["seq"]) for r in got) == [("t_alice", 1), ("t_alice", 2), ("t_alice_trip", 1)]


# --- defect 4: a zero vector is neither indexed as such nor sent as a query ---------------------


def test_a_zero_vector_document_is_stored_and_found_lexically(index: OpenSearchIndex) -> None:
    doc = {"id": "t_z#1", "account_id": "acct_a", "end_user_id": "alice", "thread_id": "t_z", "seq": 1,
           "role": "user", "text": "zebra crossing ZX-81", "created_at": 1, "vector": [0.0] * DIM}
    index.upsert([doc])
    settle(index)
    assert copies(index, "t_z#1") == 1
    semantic, lexical = index.candidates(vector=[0.0] * DIM, text="ZX-81", account_id="acct_a", limit=5)
    assert semantic == [] and [d["id"] for d, _ in lexical] == ["t_z#1"]
    assert index.search([0.0] * DIM, account_id="acct_a") == []


# --- defect 5: the server's reasons reach the error ---------------------------------------------


def test_errors_keep_the_servers_reason(index: OpenSearchIndex) -> None:
    with pytest.raises(OpenSearchError) as bulk:
        index._bulk([{"index": {"_index": index.index_name, "_id": "x"}}, {"doc_id": "x", "unexpected": 1}])
    assert "strict_dynamic_mapping_exception" in str(bulk.value)
    assert "dynamic introduction of [unexpected]" in str(bulk.value)
    wrong = OpenSearchIndex(index.client, index.index_name, DIM + 1, serverless=index.serverless, engine="lucene")
    with pytest.raises(OpenSearchError) as query:
        wrong.search([1.0] * (DIM + 1), account_id="acct_a")
    assert query.value.status == 400 and "dimension" in str(query.value).lower()


# --- what goes over the wire in each mode -------------------------------------------------------


def test_serverless_mode_sends_only_what_serverless_accepts(index: OpenSearchIndex) -> None:
    spy = Spy(index.client)
    ix = indexer(index)
    assert ix.index_messages(SEED) == len(SEED)
    search(ix, "refund")
    ix.delete_thread("acct_a", "t_bob", deleted_at=time.time())
    paths = [path for _, path, _ in spy.calls]
    if index.serverless:
        assert not any(p.endswith(("_delete_by_query", "_refresh")) for p in paths)
        assert not any("refresh" in params for _, _, params in spy.calls)
        stored = index.client.search(index=index.index_name, body={"size": 10, "query": {"match_all": {}}})
        assert all(h["_id"] != h["_source"]["doc_id"] for h in stored["hits"]["hits"])  # server-generated ids
    else:
        assert any(p.endswith("_delete_by_query") for p in paths)
        assert index.client.get(index=index.index_name, id="t_alice#2")["_source"]["role"] == "assistant"


def test_an_index_created_before_lexical_search_gains_it_at_bootstrap(client: OpenSearch) -> None:
    """Round-1 indexes stored `text` without indexing it; bootstrap adds the lexical field and
    (on a domain) re-indexes the existing documents in place."""
    name = f"tg-test-old-{uuid.uuid4().hex[:8]}"
    old = index_body(DIM)
    old["mappings"]["properties"]["text"] = {"type": "text", "index": False}
    client.indices.create(index=name, body=old)
    try:
        legacy = OpenSearchIndex(client, name, DIM)
        legacy.upsert([{"id": "t#1", "account_id": "a", "end_user_id": None, "thread_id": "t", "seq": 1, "role": "user",
                        "text": "warranty claim W-7781", "created_at": 1, "vector": EMBEDDER.embed(["warranty claim"])[0]}])
        bootstrap_index(Settings(opensearch_index=name, embedding_dimensions=DIM), client)
        deadline = time.monotonic() + 60  # the in-place re-index runs as a background task
        while True:
            _, lexical = legacy.candidates(vector=None, text="W-7781", account_id="a", limit=5)
            if lexical or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert [d["id"] for d, _ in lexical] == ["t#1"]
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)


# --- relevance of each mode on the real node ----------------------------------------------------


def test_hybrid_finds_identifiers_and_paraphrases(index: OpenSearchIndex) -> None:
    if index.serverless:
        pytest.skip("same queries as the domain run; the Serverless path differs only in writes")
    ix = indexer(index)
    msgs = [message(f"thr_{key}", 1, text, user="u", kind=role) for key, role, text in STORED]
    assert ix.index_messages(msgs) == len(msgs)

    def hit_at_3(queries: list[tuple[str, str]], mode: str) -> float:
        hits = sum(
            f"thr_{key}" in [r["thread_id"] for r in search(ix, q, end_user_id="u", limit=3, mode=mode)]
            for q, key in queries
        )
        return hits / len(queries)

    table = {mode: (hit_at_3(QUERIES, mode), hit_at_3(IDENTIFIER_QUERIES, mode)) for mode in ("semantic", "lexical", "hybrid")}
    print("\nreal OpenSearch hit@3 (paraphrases, identifiers):", table)
    assert table["hybrid"][1] >= 0.9 and table["hybrid"][1] > table["semantic"][1]
    assert table["hybrid"][0] >= table["semantic"][0]  # lexical noise does not cost paraphrases


def test_a_client_signing_for_aoss_takes_the_serverless_path_without_refresh(client: OpenSearch, opensearch_url: str) -> None:
    """Round 1 read the `serverless` argument instead of the detected mode, so a client built
    for `aoss` (serverless left unset, as the runtime does) sent `refresh`, which Serverless refuses.
    The node ignores SigV4 signatures: the request is signed as it would be on AWS."""
    from botocore.credentials import Credentials
    from opensearchpy import AWSV4SignerAuth, RequestsHttpConnection

    signed = OpenSearch(hosts=[opensearch_url], http_auth=AWSV4SignerAuth(Credentials("AKIDEXAMPLE", "secret"), "eu-west-1", "aoss"),
                        connection_class=RequestsHttpConnection, timeout=60)
    name = f"tg-test-aoss-{uuid.uuid4().hex[:8]}"
    index = OpenSearchIndex(signed, name, DIM, engine="lucene")
    assert index.serverless
    index.ensure_index()
    try:
        spy = Spy(signed)
        assert indexer(index).index_messages(SEED) == len(SEED)
        assert spy.calls and not any("refresh" in params for _, _, params in spy.calls)
        assert copies(index) == len(SEED)
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)


def test_the_handler_tests_fake_answers_like_the_real_node(client: OpenSearch) -> None:
    """tests/fakes/fake_opensearch.py stands in for the node in the Lambda handler tests: the
    calls those tests make get the same answers from both (the fields the adapter reads)."""
    from tests.fakes.fake_opensearch import running_fake_opensearch

    def session(c: OpenSearch) -> list[Any]:
        name = f"tg-test-cmp-{uuid.uuid4().hex[:8]}"
        index = OpenSearchIndex(c, name, 4, serverless=True, engine="lucene")
        out: list[Any] = [index.ensure_index(), index.ensure_index()]
        docs = [{"id": f"t#{i}", "account_id": "a", "end_user_id": "u", "thread_id": "t", "seq": i, "role": "user",
                 "text": f"hello {i}", "created_at": i, "vector": [1.0, float(i), 0.0, 0.0]} for i in (1, 2)]
        index.upsert(docs)
        c.indices.refresh(index=name)
        out.append(sorted(d["id"] for d, _ in index.search([1.0, 0.0, 0.0, 0.0], account_id="a", limit=5)))
        with pytest.raises(OpenSearchError) as refused:
            index._bulk([{"index": {"_index": name}}, {"doc_id": "x", "unexpected": 1}])
        out.append("strict_dynamic_mapping_exception" in str(refused.value))
        mapping = c.indices.get_mapping(index=name)[name]["mappings"]["properties"]
        out.append((mapping["vector"]["type"], mapping["vector"]["dimension"], sorted(mapping["text"]["fields"])))
        c.indices.delete(index=name)
        return out

    with running_fake_opensearch(serverless=True) as fake:
        assert session(OpenSearch(hosts=[fake.url])) == session(client)
