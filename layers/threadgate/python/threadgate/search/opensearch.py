"""`VectorIndex` on OpenSearch k-NN (an OpenSearch Service domain or OpenSearch Serverless).

Engine on a domain: `lucene` HNSW with `cosinesimil`. Lucene has supported efficient filtering (the filter
inside the `knn` clause, applied during the graph search, so `k` results come back when `k`
matching documents exist) since OpenSearch 2.4, and cosine natively since 2.2; when the filter
leaves few documents (one end user's history) Lucene switches to an exact search over them,
so per-user results are exact. Faiss gained efficient filtering only in 2.9 and cosine in 2.19,
so lucene works on any domain version we could meet.

OpenSearch Serverless (`aoss`) differences handled here (service "aoss", `serverless=True`):
- the engine is `faiss` HNSW (cosine and efficient filtering supported there; Serverless's
  newer vector collections convert other engines to Faiss anyway);
- vector search collections refuse custom document ids (`_id`) on index/bulk, so documents get
  server-generated ids and carry our id in the `doc_id` keyword field; an upsert first deletes
  earlier copies found by `doc_id`, and search collapses any remaining duplicate by `doc_id`;
- `_delete_by_query` is not among Serverless's supported operations, so deletions search the
  matching `_id`s and bulk-delete them;
- Serverless refreshes on its own schedule (no `refresh` parameter): new and deleted documents
  become visible after a short delay rather than at once.

The index is created once by `bootstrap_index` at deploy time (a custom resource), never on the
request path.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence
from urllib.parse import urlparse

log = logging.getLogger(__name__)

VECTOR_FIELD = "vector"
SOURCE_FIELDS = ["doc_id", "account_id", "end_user_id", "thread_id", "seq", "role", "text", "created_at"]
DELETE_PAGE = 1_000


class OpenSearchError(RuntimeError):
    """A bulk or search call reported failures (message carries error types, never content)."""


def index_body(dimensions: int, *, engine: str = "lucene") -> dict[str, Any]:
    """Settings and mappings of the messages index (documented k-NN DSL)."""
    return {
        "settings": {"index": {"knn": True}},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "doc_id": {"type": "keyword"},
                "account_id": {"type": "keyword"},
                "end_user_id": {"type": "keyword"},
                "thread_id": {"type": "keyword"},
                "seq": {"type": "integer"},
                "role": {"type": "keyword"},
                # Shown in snippets, never searched lexically: keep it out of the inverted index.
                "text": {"type": "text", "index": False},
                "created_at": {"type": "long"},
                VECTOR_FIELD: {
                    "type": "knn_vector",
                    "dimension": dimensions,
                    "method": {
                        "name": "hnsw",
                        "space_type": "cosinesimil",
                        "engine": engine,
                        "parameters": {"m": 16, "ef_construction": 128},
                    },
                },
            },
        },
    }


def scope_filter(account_id: str, end_user_id: str | None = None, thread_id: str | None = None) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = [{"term": {"account_id": account_id}}]
    if end_user_id is not None:
        clauses.append({"term": {"end_user_id": end_user_id}})
    if thread_id is not None:
        clauses.append({"term": {"thread_id": thread_id}})
    return {"bool": {"filter": clauses}}


def signing_service(client: Any) -> str | None:
    """The SigV4 service a client built by `make_client` signs for ("es" | "aoss"), else None."""
    transport = getattr(client, "transport", None)
    auth = (getattr(transport, "kwargs", None) or {}).get("http_auth")
    return getattr(auth, "service", None)


def cosine_from_score(score: float) -> float:
    """OpenSearch scores `cosinesimil` as (2 - d) / 2 with d = 1 - cos, i.e. (1 + cos) / 2."""
    return max(-1.0, min(1.0, 2.0 * float(score) - 1.0))


class OpenSearchIndex:
    def __init__(
        self,
        client: Any,
        index_name: str,
        dimensions: int,
        *,
        serverless: bool | None = None,
        engine: str | None = None,
        refresh: bool | None = None,
    ) -> None:
        self.client = client
        self.index_name = index_name
        self.dimensions = dimensions
        # Unset: the client's SigV4 service decides ("aoss" is OpenSearch Serverless).
        self.serverless = signing_service(client) == "aoss" if serverless is None else serverless
        self.engine = engine or ("faiss" if self.serverless else "lucene")
        # Upserts ride the index's refresh interval (1 s) unless told otherwise; deletions refresh
        # at once on a domain so a deleted thread disappears from the next search.
        self.refresh_writes = bool(refresh) and not serverless

    # --- lifecycle --------------------------------------------------------------------------

    def ensure_index(self) -> bool:
        """Create the index if absent. True if created now. Safe to run concurrently."""
        if self.client.indices.exists(index=self.index_name):
            return False
        try:
            self.client.indices.create(index=self.index_name, body=index_body(self.dimensions, engine=self.engine))
        except Exception as exc:
            if "resource_already_exists_exception" in str(exc):
                return False
            raise
        return True

    # --- writes -----------------------------------------------------------------------------

    def _source(self, doc: dict[str, Any]) -> dict[str, Any]:
        vector = [float(x) for x in doc["vector"]]
        if len(vector) != self.dimensions:
            raise ValueError(f"vector has {len(vector)} dimensions, index expects {self.dimensions}")
        return {
            "doc_id": doc["id"],
            "account_id": doc["account_id"],
            "end_user_id": doc.get("end_user_id"),
            "thread_id": doc["thread_id"],
            "seq": int(doc["seq"]),
            "role": doc["role"],
            "text": doc["text"],
            "created_at": int(doc["created_at"]),
            VECTOR_FIELD: vector,
        }

    def bulk_body(self, docs: Sequence[dict[str, Any]], replace_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The `_bulk` actions of an upsert. Domain: `index` with `_id` = `<thread>#<seq>`
        (re-indexing overwrites). Serverless: deletes of earlier copies, then id-less `index`."""
        body: list[dict[str, Any]] = [{"delete": {"_index": self.index_name, "_id": _id}} for _id in replace_ids]
        for doc in docs:
            action: dict[str, Any] = {"_index": self.index_name}
            if not self.serverless:
                action["_id"] = doc["id"]
            body.append({"index": action})
            body.append(self._source(doc))
        return body

    def upsert(self, docs: Sequence[dict[str, Any]]) -> None:
        if not docs:
            return
        replace: list[str] = []
        if self.serverless:
            query = {"terms": {"doc_id": [doc["id"] for doc in docs]}}
            replace = self._matching_ids(query, limit=len(docs) * 4)
        params = {"refresh": "true"} if self.refresh_writes else None
        self._bulk(self.bulk_body(docs, replace), params)

    def _bulk(self, body: list[dict[str, Any]], params: dict[str, Any] | None = None) -> None:
        response = self.client.bulk(body=body, params=params)
        if response.get("errors"):
            failures = [
                item
                for entry in response.get("items", [])
                for op, item in entry.items()
                if item.get("error") and not (op == "delete" and item.get("status") == 404)
            ]
            if failures:
                kinds = sorted({str(f["error"].get("type", "error")) for f in failures})
                raise OpenSearchError(f"bulk: {len(failures)} action(s) failed: {', '.join(kinds)}")

    def delete_query(self, account_id: str, thread_id: str | None = None) -> dict[str, Any]:
        return {"query": scope_filter(account_id, thread_id=thread_id)}

    def delete_thread(self, account_id: str, thread_id: str) -> None:
        self._delete(self.delete_query(account_id, thread_id))

    def delete_account(self, account_id: str) -> None:
        self._delete(self.delete_query(account_id))

    def _delete(self, body: dict[str, Any]) -> None:
        if not self.serverless:
            self.client.delete_by_query(
                index=self.index_name, body=body, params={"conflicts": "proceed", "refresh": "true"}
            )
            return
        while True:  # Serverless: find the ids, bulk-delete them, until none is left
            ids = self._matching_ids(body["query"], limit=DELETE_PAGE)
            if not ids:
                return
            self._bulk([{"delete": {"_index": self.index_name, "_id": _id}} for _id in ids])
            if len(ids) < DELETE_PAGE:
                return

    def _matching_ids(self, query: dict[str, Any], limit: int) -> list[str]:
        response = self.client.search(
            index=self.index_name, body={"size": limit, "_source": False, "query": query}
        )
        return [hit["_id"] for hit in response["hits"]["hits"]]

    # --- reads ------------------------------------------------------------------------------

    def search_body(
        self,
        vector: Sequence[float],
        *,
        account_id: str,
        end_user_id: str | None = None,
        thread_id: str | None = None,
        limit: int = 10,
    ) -> dict[str, Any]:
        """A k-NN query with the scope filter INSIDE the `knn` clause (efficient filtering)."""
        k = limit * 2 if self.serverless else limit  # room to collapse not-yet-deleted copies
        return {
            "size": k,
            "_source": SOURCE_FIELDS,
            "query": {
                "knn": {
                    VECTOR_FIELD: {
                        "vector": [float(x) for x in vector],
                        "k": k,
                        "filter": scope_filter(account_id, end_user_id, thread_id),
                    }
                }
            },
        }

    def search(
        self,
        vector: Sequence[float],
        *,
        account_id: str,
        end_user_id: str | None = None,
        thread_id: str | None = None,
        limit: int = 10,
    ) -> list[tuple[dict[str, Any], float]]:
        if limit <= 0:
            return []
        body = self.search_body(
            vector, account_id=account_id, end_user_id=end_user_id, thread_id=thread_id, limit=limit
        )
        response = self.client.search(index=self.index_name, body=body)
        results: list[tuple[dict[str, Any], float]] = []
        seen: set[str] = set()
        for hit in response["hits"]["hits"]:
            source = hit["_source"]
            # Defence in depth: the filter already scoped the query; never let a stray hit out.
            if source.get("account_id") != account_id:
                continue
            doc_id = source.get("doc_id") or hit["_id"]
            if doc_id in seen:
                continue
            seen.add(doc_id)
            doc = {"id": doc_id, **{f: source.get(f) for f in SOURCE_FIELDS if f != "doc_id"}}
            results.append((doc, cosine_from_score(hit["_score"])))
            if len(results) == limit:
                break
        return results


# --- wiring -------------------------------------------------------------------------------------


def make_client(settings: Any) -> Any:
    """An opensearch-py client for `settings.opensearch_endpoint`, signing every request with
    SigV4 for service `settings.opensearch_service` ("es" domain | "aoss" Serverless) in the
    region of AWS_REGION, with the function's own credentials."""
    import boto3
    from opensearchpy import AWSV4SignerAuth, OpenSearch, RequestsHttpConnection

    endpoint = settings.opensearch_endpoint
    if not endpoint:
        raise ValueError("THREADGATE_OPENSEARCH_ENDPOINT is not set")
    if "://" not in endpoint:
        endpoint = f"https://{endpoint}"
    url = urlparse(endpoint)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ValueError("AWS_REGION is not set")
    credentials = boto3.Session().get_credentials()
    return OpenSearch(
        hosts=[{"host": url.hostname, "port": url.port or (443 if url.scheme == "https" else 80)}],
        http_auth=AWSV4SignerAuth(credentials, region, settings.opensearch_service),
        use_ssl=url.scheme == "https",
        verify_certs=url.scheme == "https",
        connection_class=RequestsHttpConnection,
        timeout=10,
        max_retries=2,
        retry_on_timeout=True,
        pool_maxsize=10,
    )


def open_index(settings: Any, client: Any | None = None) -> OpenSearchIndex:
    """The messages index described by `settings` (service "aoss" selects the Serverless path)."""
    return OpenSearchIndex(
        client if client is not None else make_client(settings),
        settings.opensearch_index,
        settings.embedding_dimensions,
        serverless=settings.opensearch_service == "aoss",
    )


def bootstrap_index(settings: Any, client: Any | None = None) -> None:
    """Create the messages index if it does not exist (idempotent; deploy-time only)."""
    created = open_index(settings, client).ensure_index()
    log.info("opensearch index %s %s", settings.opensearch_index, "created" if created else "already present")
