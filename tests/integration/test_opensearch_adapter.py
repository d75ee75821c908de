"""The OpenSearch adapter end to end with opensearch-py over real HTTP on 127.0.0.1:

- against osmem-server (an in-memory OpenSearch-compatible server from PyPI): index creation
  with the knn mapping, bulk upserts, delete by query — everything but `knn`, which it refuses;
- against tests/fakes/fake_opensearch.py, which executes `knn` with a filter as documented, in
  domain mode and in Serverless mode (no custom ids, no delete by query).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest
from opensearchpy import OpenSearch

from tests.fakes.fake_opensearch import running_fake_opensearch
from threadgate.config import Settings
from threadgate.domain.models import Message
from threadgate.search.embedders import load_local_embedder
from threadgate.search.indexing import Indexer
from threadgate.search.opensearch import OpenSearchIndex, bootstrap_index

EMBEDDER = load_local_embedder()
INDEX = "threadgate-messages"


def message(thread: str, seq: int, text: str, *, account: str = "acct_a", user: str | None = "alice", kind: str = "user") -> Message:
    return Message(thread, seq, "assistant" if kind == "assistant" else "user", text, kind, None, None, 1_000 + seq, account, user)  # type: ignore[arg-type]


def seed(ix: Indexer) -> None:
    assert ix.index_messages(
        [
            message("t_alice", 1, "I need a refund for the broken blender."),
            message("t_alice", 2, "The refund was approved and will arrive in 5 days.", kind="assistant"),
            message("t_alice_trip", 1, "Plan a weekend in Lisbon for me."),
            message("t_bob", 1, "I need a refund for the broken blender!", user="bob"),
            message("t_other_acct", 1, "I need a refund for the broken blender.", account="acct_b"),
        ]
    ) == 5


def search(ix: Indexer, q: str, **scope):
    scope.setdefault("account_id", "acct_a")
    scope.setdefault("end_user_id", None)
    scope.setdefault("thread_id", None)
    return ix.search(q=q, limit=scope.pop("limit", 10), **scope)


# --- the fake that runs knn --------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["domain", "serverless"])
def fake_and_indexer(request: pytest.FixtureRequest) -> Iterator[tuple[object, Indexer]]:
    with running_fake_opensearch(serverless=request.param) as fake:
        client = OpenSearch(hosts=[fake.url])
        settings = Settings(opensearch_index=INDEX, embedding_dimensions=EMBEDDER.dimensions, opensearch_service="aoss" if request.param else "es")
        bootstrap_index(settings, client)
        bootstrap_index(settings, client)  # idempotent
        index = OpenSearchIndex(client, INDEX, EMBEDDER.dimensions, serverless=request.param)
        yield fake, Indexer(EMBEDDER, index)


def test_filtered_knn_returns_only_the_callers_scope(fake_and_indexer) -> None:
    fake, ix = fake_and_indexer
    seed(ix)
    everyone = search(ix, "money back for a blender")
    assert {r["thread_id"] for r in everyone} == {"t_alice", "t_alice_trip", "t_bob"}
    alice = search(ix, "money back for a blender", end_user_id="alice")
    assert {r["end_user_id"] for r in alice} == {"alice"} and len(alice) == 3
    assert alice[0]["thread_id"] == "t_alice" and alice[0]["seq"] in (1, 2)
    assert [r["thread_id"] for r in search(ix, "refund", end_user_id="alice", thread_id="t_alice_trip")] == ["t_alice_trip"]
    assert [r["thread_id"] for r in search(ix, "refund", account_id="acct_b")] == ["t_other_acct"]
    assert search(ix, "refund", end_user_id="mallory") == []
    # The filter travelled inside the knn clause of the request that was actually sent.
    knn = [body["query"]["knn"]["vector"] for method, path, _, body in fake.requests if path.endswith("/_search") and "knn" in body.get("query", {})]
    assert knn and all({"term": {"account_id": "acct_a"}} in q["filter"]["bool"]["filter"] or {"term": {"account_id": "acct_b"}} in q["filter"]["bool"]["filter"] for q in knn)


def test_scores_are_cosines_best_first(fake_and_indexer) -> None:
    _, ix = fake_and_indexer
    seed(ix)
    got = search(ix, "refund for the broken blender", end_user_id="alice")
    scores = [r["score"] for r in got]
    assert scores == sorted(scores, reverse=True)
    [q] = EMBEDDER.embed(["refund for the broken blender"])
    [d] = EMBEDDER.embed(["I need a refund for the broken blender."])
    assert got[0]["score"] == pytest.approx(float(np.dot(q, d)), abs=1e-4)


def test_reindexing_is_idempotent(fake_and_indexer) -> None:
    fake, ix = fake_and_indexer
    seed(ix)
    seed(ix)  # the stream may deliver a record twice
    docs = fake.indices[INDEX].docs
    assert len(docs) == 5
    assert sorted(d["doc_id"] for d in docs.values()) == sorted(["t_alice#1", "t_alice#2", "t_alice_trip#1", "t_bob#1", "t_other_acct#1"])
    assert len(search(ix, "refund", end_user_id="alice")) == 3


def test_thread_and_account_deletion(fake_and_indexer) -> None:
    _, ix = fake_and_indexer
    seed(ix)
    ix.delete_thread("acct_a", "t_alice")
    assert {r["thread_id"] for r in search(ix, "refund")} == {"t_alice_trip", "t_bob"}
    ix.delete_thread("acct_b", "t_bob")  # another account's delete touches nothing of acct_a
    assert {r["thread_id"] for r in search(ix, "refund")} == {"t_alice_trip", "t_bob"}
    ix.delete_account("acct_a")
    assert search(ix, "refund") == []
    assert [r["thread_id"] for r in search(ix, "refund", account_id="acct_b")] == ["t_other_acct"]


def test_the_wire_requests_follow_the_documented_apis(fake_and_indexer) -> None:
    fake, ix = fake_and_indexer
    seed(ix)
    ix.delete_thread("acct_a", "t_bob")
    calls = [(method, path) for method, path, _, _ in fake.requests]
    assert calls[0] == ("HEAD", f"/{INDEX}") and calls[1] == ("PUT", f"/{INDEX}")
    bulk = [body for method, path, _, body in fake.requests if path == "/_bulk"]
    assert bulk, "documents go through _bulk"
    index_actions = [line["index"] for body in bulk for line in body if "index" in line]
    if fake.serverless:
        assert all("_id" not in a for a in index_actions)
        assert not any(path.endswith("_delete_by_query") for _, path in calls)
    else:
        assert {a["_id"] for a in index_actions} == {"t_alice#1", "t_alice#2", "t_alice_trip#1", "t_bob#1", "t_other_acct#1"}
        [dbq] = [(params, body) for _, path, params, body in fake.requests if path == f"/{INDEX}/_delete_by_query"]
        assert dbq[0] == {"conflicts": "proceed", "refresh": "true"}
        assert dbq[1] == {"query": {"bool": {"filter": [{"term": {"account_id": "acct_a"}}, {"term": {"thread_id": "t_bob"}}]}}}


def test_an_unreachable_cluster_does_not_fail_indexing() -> None:
    client = OpenSearch(hosts=["http://127.0.0.1:9"], max_retries=0, timeout=1)
    ix = Indexer(EMBEDDER, OpenSearchIndex(client, INDEX, EMBEDDER.dimensions))
    assert ix.index_messages([message("t", 1, "hello there")]) == 0


# --- osmem-server: a real OpenSearch-compatible HTTP server without knn ----------------------


@pytest.fixture(scope="module")
def osmem_url() -> Iterator[str]:
    osmem = pytest.importorskip("osmem_server", reason="osmem-server is not installed (pip install osmem-server)")
    try:
        server = osmem.OsmemServer.start(addr="127.0.0.1:0", japanese=False, startup_timeout=20)
    except Exception as exc:  # noqa: BLE001 - a missing platform binary is a skip, not a failure
        pytest.skip(f"osmem-server could not start here: {exc}")
    try:
        yield server.url
    finally:
        server.close()


def test_osmem_accepts_our_mapping_bulk_and_delete_by_query(osmem_url: str) -> None:
    client = OpenSearch(hosts=[osmem_url])
    settings = Settings(opensearch_index="tg-osmem", embedding_dimensions=EMBEDDER.dimensions)
    bootstrap_index(settings, client)
    bootstrap_index(settings, client)  # second run: already there, no error
    mapping = client.indices.get_mapping(index="tg-osmem")["tg-osmem"]["mappings"]
    assert mapping["properties"]["vector"]["type"] == "knn_vector"
    assert mapping["properties"]["vector"]["method"]["space_type"] == "cosinesimil"

    index = OpenSearchIndex(client, "tg-osmem", EMBEDDER.dimensions, refresh=True)
    ix = Indexer(EMBEDDER, index)
    seed(ix)
    seed(ix)  # idempotent ids: still five documents
    assert client.count(index="tg-osmem")["count"] == 5
    stored = client.get(index="tg-osmem", id="t_alice#2")["_source"]
    assert stored["role"] == "assistant" and stored["end_user_id"] == "alice" and len(stored["vector"]) == EMBEDDER.dimensions

    ix.delete_thread("acct_a", "t_alice")
    client.indices.refresh(index="tg-osmem")
    remaining = client.search(index="tg-osmem", body={"size": 20, "_source": ["doc_id"], "query": {"match_all": {}}})
    assert sorted(h["_source"]["doc_id"] for h in remaining["hits"]["hits"]) == ["t_alice_trip#1", "t_bob#1", "t_other_acct#1"]
    ix.delete_account("acct_a")
    client.indices.refresh(index="tg-osmem")
    assert client.count(index="tg-osmem")["count"] == 1

    # The strict mapping refuses a document shaped differently, and the adapter reports it.
    with pytest.raises(Exception, match="strict_dynamic_mapping_exception"):
        index._bulk([{"index": {"_index": "tg-osmem", "_id": "x"}}, {"doc_id": "x", "unexpected": 1}])


def test_osmem_serverless_path_deletes_by_ids(osmem_url: str) -> None:
    """The Serverless delete path (search ids, bulk delete) against a real server."""
    client = OpenSearch(hosts=[osmem_url])
    settings = Settings(opensearch_index="tg-osmem-aoss", embedding_dimensions=EMBEDDER.dimensions, opensearch_service="aoss")
    bootstrap_index(settings, client)
    index = OpenSearchIndex(client, "tg-osmem-aoss", EMBEDDER.dimensions, serverless=True)
    ix = Indexer(EMBEDDER, index)
    seed(ix)
    client.indices.refresh(index="tg-osmem-aoss")
    seed(ix)  # replaces the earlier copies found by doc_id
    client.indices.refresh(index="tg-osmem-aoss")
    assert client.count(index="tg-osmem-aoss")["count"] == 5
    ix.delete_thread("acct_a", "t_alice")
    client.indices.refresh(index="tg-osmem-aoss")
    assert client.count(index="tg-osmem-aoss")["count"] == 3


def test_osmem_refuses_knn_so_the_fake_covers_it(osmem_url: str) -> None:
    client = OpenSearch(hosts=[osmem_url])
    bootstrap_index(Settings(opensearch_index="tg-osmem-knn", embedding_dimensions=4), client)
    index = OpenSearchIndex(client, "tg-osmem-knn", 4)
    with pytest.raises(Exception, match="knn|unsupported"):
        index.search([1.0, 0.0, 0.0, 0.0], account_id="acct_a")
