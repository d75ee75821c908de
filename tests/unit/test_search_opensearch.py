"""The OpenSearch adapter's request bodies, asserted against OpenSearch's documented k-NN DSL
(docs.opensearch.org: "k-NN vector" field type, "Spaces", "Efficient k-NN filtering", Bulk and
Delete by query APIs), and the SigV4 client wiring."""

from __future__ import annotations

import pytest
import requests

from threadgate.config import Settings
from threadgate.search.opensearch import (
    OpenSearchIndex,
    cosine_from_score,
    index_body,
    make_client,
    open_index,
)

DOC = {
    "id": "thr_1#4",
    "account_id": "acct",
    "end_user_id": "alice",
    "thread_id": "thr_1",
    "seq": 4,
    "role": "assistant",
    "text": "Your refund is on its way.",
    "created_at": 1_700_000_000_000,
    "vector": [0.6, 0.8, 0.0],
}


def test_mapping_is_a_filterable_hnsw_cosine_knn_vector() -> None:
    assert index_body(256) == {
        "settings": {"index": {"knn": True, "refresh_interval": "1s"}},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "doc_id": {"type": "keyword"},
                "account_id": {"type": "keyword"},
                "end_user_id": {"type": "keyword"},
                "thread_id": {"type": "keyword"},
                "seq": {"type": "integer"},
                "role": {"type": "keyword"},
                "text": {"type": "text", "index": False, "fields": {"words": {"type": "text", "analyzer": "english"}}},
                "created_at": {"type": "long"},
                "vector": {
                    "type": "knn_vector",
                    "dimension": 256,
                    "method": {
                        "name": "hnsw",
                        "space_type": "cosinesimil",
                        "engine": "lucene",
                        "parameters": {"m": 16, "ef_construction": 128},
                    },
                },
            },
        },
    }


def test_bulk_indexes_with_the_idempotent_id_on_a_domain() -> None:
    index = OpenSearchIndex(object(), "threadgate-messages", 3)
    assert index.bulk_body([DOC]) == [
        {"index": {"_index": "threadgate-messages", "_id": "thr_1#4"}},
        {
            "doc_id": "thr_1#4",
            "account_id": "acct",
            "end_user_id": "alice",
            "thread_id": "thr_1",
            "seq": 4,
            "role": "assistant",
            "text": "Your refund is on its way.",
            "created_at": 1_700_000_000_000,
            "vector": [0.6, 0.8, 0.0],
        },
    ]


def test_bulk_on_serverless_sends_no_custom_id_and_deletes_earlier_copies() -> None:
    index = OpenSearchIndex(object(), "msgs", 3, serverless=True)
    body = index.bulk_body([DOC], replace_ids=["srv-generated-1"])
    assert body[0] == {"delete": {"_index": "msgs", "_id": "srv-generated-1"}}
    assert body[1] == {"index": {"_index": "msgs"}}
    assert body[2]["doc_id"] == "thr_1#4"


def test_a_vector_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError):
        OpenSearchIndex(object(), "msgs", 4).bulk_body([DOC])


def test_search_puts_the_scope_filter_inside_the_knn_clause() -> None:
    index = OpenSearchIndex(object(), "msgs", 3)
    body = index.search_body([0.6, 0.8, 0.0], account_id="acct", end_user_id="alice", thread_id="thr_1", limit=5)
    assert body == {
        "size": 5,
        "_source": ["doc_id", "account_id", "end_user_id", "thread_id", "seq", "role", "text", "created_at"],
        "query": {
            "knn": {
                "vector": {
                    "vector": [0.6, 0.8, 0.0],
                    "k": 100,  # the HNSW candidate queue; `size` returns the limit
                    "filter": {
                        "bool": {
                            "filter": [
                                {"term": {"account_id": "acct"}},
                                {"term": {"end_user_id": "alice"}},
                                {"term": {"thread_id": "thr_1"}},
                            ]
                        }
                    },
                }
            }
        },
    }
    # No end user / thread: the account term is always there.
    unscoped = index.search_body([1, 0, 0], account_id="acct", limit=3)
    assert unscoped["query"]["knn"]["vector"]["filter"] == {"bool": {"filter": [{"term": {"account_id": "acct"}}]}}


def test_lexical_search_matches_the_words_inside_the_same_scope() -> None:
    index = OpenSearchIndex(object(), "msgs", 3)
    body = index.lexical_body("ORD-48213", account_id="acct", end_user_id="alice", limit=4)
    assert body["size"] == 4
    assert body["query"] == {
        "bool": {
            "must": [{"match": {"text.words": {"query": "ORD-48213", "operator": "and"}}}],
            "filter": [{"term": {"account_id": "acct"}}, {"term": {"end_user_id": "alice"}}],
        }
    }


def test_serverless_indexes_have_no_refresh_setting_and_fetch_room_for_copies() -> None:
    assert index_body(3, engine="faiss", serverless=True)["settings"] == {"index": {"knn": True}}
    index = OpenSearchIndex(object(), "msgs", 3, serverless=True)
    assert index.search_body([1, 0, 0], account_id="a", limit=5)["size"] == 10


def test_a_zero_or_nan_vector_is_stored_without_one() -> None:
    index = OpenSearchIndex(object(), "msgs", 3)
    for vector in ([0.0, 0.0, 0.0], [float("nan"), 0.0, 1.0]):
        [_, source] = index.bulk_body([{**DOC, "vector": vector}])
        assert "vector" not in source and source["text"] == DOC["text"]


def test_delete_queries_are_scoped_by_account() -> None:
    index = OpenSearchIndex(object(), "msgs", 3)
    assert index.delete_query("acct", "thr_1") == {
        "query": {"bool": {"filter": [{"term": {"account_id": "acct"}}, {"term": {"thread_id": "thr_1"}}]}}
    }
    assert index.delete_query("acct") == {"query": {"bool": {"filter": [{"term": {"account_id": "acct"}}]}}}


def test_cosinesimil_scores_convert_back_to_cosine() -> None:
    # OpenSearch: score = (2 - d) / 2 with d = 1 - cos
    for cos in (1.0, 0.5, 0.0, -0.25, -1.0):
        assert cosine_from_score((2 - (1 - cos)) / 2) == pytest.approx(cos)


@pytest.mark.parametrize("service", ["es", "aoss"])
def test_the_client_signs_with_sigv4_for_the_configured_service(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings = Settings(opensearch_endpoint="abc123.eu-west-1.aoss.amazonaws.com", opensearch_service=service)
    client = make_client(settings)
    connection = client.transport.get_connection()
    assert connection.host == "https://abc123.eu-west-1.aoss.amazonaws.com:443"
    signed = connection.session.auth(requests.Request("GET", connection.host + "/msgs").prepare())
    assert f"/eu-west-1/{service}/aws4_request" in signed.headers["Authorization"]
    assert signed.headers["Authorization"].startswith("AWS4-HMAC-SHA256")
    assert open_index(settings, client).serverless is (service == "aoss")
    # Built from the client alone (as the runtime does), the signing service decides the mode.
    index = OpenSearchIndex(client, "msgs", 256)
    assert index.serverless is (service == "aoss")
    assert index.engine == ("faiss" if service == "aoss" else "lucene")


def test_the_client_needs_an_endpoint_and_a_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ValueError, match="ENDPOINT"):
        make_client(Settings(opensearch_endpoint=None))
    with pytest.raises(ValueError, match="AWS_REGION"):
        make_client(Settings(opensearch_endpoint="https://x.es.amazonaws.com"))
