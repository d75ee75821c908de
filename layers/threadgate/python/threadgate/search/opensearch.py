"""`VectorIndex` on OpenSearch k-NN (an OpenSearch Service domain or OpenSearch Serverless).

Engine on a domain: `lucene` HNSW with `cosinesimil`. Lucene has supported efficient filtering (the filter
inside the `knn` clause, applied during the graph search, so `k` results come back when `k`
matching documents exist) since OpenSearch 2.4, and cosine natively since 2.2; when the filter
leaves few documents (one end user's history) Lucene switches to an exact search over them,
so per-user results are exact. Faiss gained efficient filtering only in 2.9 and cosine in 2.19,
so lucene works on any domain version we could meet.

Lexical search: `match` on `text.words` (the message text, english analyzer), with the same scope
filter; `candidates` sends it and the filtered `knn` in one `_msearch`, and the caller fuses the
two rankings (reciprocal rank fusion, domain/search.py), which works on domains and Serverless
alike (OpenSearch's own hybrid query needs a search pipeline that Serverless lacks).

Visibility (API.md §9, "searchable within 5 s"): on a domain every upsert waits for the refresh
that makes it searchable (`refresh=wait_for`, `index.refresh_interval` 1 s), and a delete
refreshes first, so `_delete_by_query` sees every document written before it, then checks the
response and retries what a concurrent write made conflict.

OpenSearch Serverless (`aoss`) differences handled here (service "aoss", `serverless=True`):
- the engine is `faiss` HNSW (cosine and efficient filtering supported there; Serverless's
  newer vector collections convert other engines to Faiss anyway);
- vector search collections refuse custom document ids (`_id`) on index/bulk, so documents get
  server-generated ids and carry our id in the `doc_id` keyword field; an upsert deletes the
  earlier copies it can find (by `doc_id` in the index, and the ids this process wrote in the
  last minute, which a search cannot see yet), and searches collapse any copy left by `doc_id`;
- `_delete_by_query` and `refresh` are not among Serverless's supported operations: deletions
  search the matching `_id`s and bulk-delete them, and (given `deleted_at`) repeat until every
  write made before the deletion has become visible (`SERVERLESS_VISIBILITY_S`, an assumption
  about the service that only AWS can confirm; README "Tests").

The index is created once by `bootstrap_index` at deploy time (a custom resource), never on the
request path.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections import OrderedDict
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

log = logging.getLogger(__name__)

VECTOR_FIELD = "vector"
LEXICAL_FIELD = "text.words"
SOURCE_FIELDS = ["doc_id", "account_id", "end_user_id", "thread_id", "seq", "role", "text", "created_at"]
DELETE_PAGE = 1_000
# The `k` of every knn query: with the lucene engine `k` is also the HNSW search's candidate
# queue (ef_search), so a small `limit` would search a small neighbourhood and miss (measured:
# hit@3 0.78 with k = 3, see bench). 100 is faiss's default ef_search; `size` returns `limit`.
KNN_CANDIDATES = 100
DELETE_ATTEMPTS = 5
REFRESH_INTERVAL = "1s"
# How long Serverless may take to show a write to searches (it refreshes on its own schedule).
SERVERLESS_VISIBILITY_S = 10.0
# Serverless: remember the server-generated ids this process wrote for this long (and at most
# this many), so a record delivered twice before the service refreshes still replaces its copy.
RECENT_WRITES_S = 60.0
RECENT_WRITES_MAX = 10_000
# Error reasons can quote a field's value ("Preview of field's value: '...'"): message text
# must not reach logs, so that part is cut.
_PREVIEW = re.compile(r"Preview of field's value:.*", re.DOTALL)
REASON_CHARS = 400


class OpenSearchError(RuntimeError):
    """A call failed or reported failures. The message carries the server's error types and
    reasons (values quoted from documents removed), never message content."""

    loggable = True  # see Indexer: its message may go to logs

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _reason(error: Any) -> str:
    """`type: reason` of an OpenSearch error object, then its root cause and innermost cause
    (a search failure says "all shards failed" at the top and why only in its root cause)."""
    if not isinstance(error, dict):
        return str(error)[:REASON_CHARS]
    chain = [error, *(error.get("root_cause") or [])[:1]]
    while isinstance(chain[-1].get("caused_by"), dict) and len(chain) < 4:
        chain.append(chain[-1]["caused_by"])
    parts = []
    for part in chain:
        reason = _PREVIEW.sub("", str(part.get("reason") or "")).strip()
        text = f"{part.get('type', 'error')}: {reason}" if reason else str(part.get("type", "error"))
        if text not in parts:
            parts.append(text)
    return " / ".join(parts)[:REASON_CHARS]


def _call(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Run one client call; a transport error becomes an `OpenSearchError` with the server's
    reason (opensearch-py's own message embeds the whole response, which may quote content)."""
    try:
        return fn(**kwargs)
    except Exception as exc:
        status = getattr(exc, "status_code", None)
        if status is None:  # not an opensearch-py TransportError
            raise
        info = getattr(exc, "info", None)
        error = info.get("error") if isinstance(info, dict) else getattr(exc, "error", exc)
        raise OpenSearchError(
            f"{what}: HTTP {status}: {_reason(error)}", status=status if isinstance(status, int) else None
        ) from exc


def _raise_failures(items: list[dict[str, Any]]) -> None:
    """Raise with the reasons of the failed `_bulk` actions (a delete of a missing id is fine)."""
    failures = [
        item
        for entry in items
        for op, item in entry.items()
        if item.get("error") and not (op == "delete" and item.get("status") == 404)
    ]
    if failures:
        reasons = sorted({_reason(f["error"]) for f in failures})
        raise OpenSearchError(f"bulk: {len(failures)} action(s) failed: {'; '.join(reasons)}"[:1000])


def usable_vector(vector: Sequence[float] | None) -> bool:
    """`cosinesimil` refuses a zero vector (HTTP 400, on index and on query); NaN is no vector."""
    if vector is None:
        return False
    norm = math.fsum(float(x) * float(x) for x in vector)
    return norm > 0.0 and math.isfinite(norm)


def index_body(dimensions: int, *, engine: str = "lucene", serverless: bool = False) -> dict[str, Any]:
    """Settings and mappings of the messages index (documented k-NN DSL)."""
    settings: dict[str, Any] = {"knn": True}
    if not serverless:
        # Explicit, so a search-idle shard still refreshes on schedule and `wait_for` returns.
        settings["refresh_interval"] = REFRESH_INTERVAL
    return {
        "settings": {"index": settings},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "doc_id": {"type": "keyword"},
                "account_id": {"type": "keyword"},
                "end_user_id": {"type": "keyword"},
                "thread_id": {"type": "keyword"},
                "seq": {"type": "integer"},
                "role": {"type": "keyword"},
                # Stored for snippets; searched through its `words` sub-field (lexical search),
                # which a round-1 index gains at bootstrap (a sub-field can be added in place).
                "text": {"type": "text", "index": False, "fields": {"words": {"type": "text", "analyzer": "english"}}},
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


Hits = list[tuple[dict[str, Any], float]]


class OpenSearchIndex:
    def __init__(
        self,
        client: Any,
        index_name: str,
        dimensions: int,
        *,
        serverless: bool | None = None,
        engine: str | None = None,
        serverless_visibility_s: float = SERVERLESS_VISIBILITY_S,
    ) -> None:
        self.client = client
        self.index_name = index_name
        self.dimensions = dimensions
        # Unset: the client's SigV4 service decides ("aoss" is OpenSearch Serverless).
        self.serverless = signing_service(client) == "aoss" if serverless is None else serverless
        self.engine = engine or ("faiss" if self.serverless else "lucene")
        self.serverless_visibility_s = serverless_visibility_s
        # Serverless: doc_id -> (account_id, [server-generated _id], written at), oldest first.
        self._recent: OrderedDict[str, tuple[str, list[str], float]] = OrderedDict()

    # --- lifecycle --------------------------------------------------------------------------

    def ensure_index(self) -> bool:
        """Create the index if absent (True), else bring its mapping up to date (False: a
        round-1 index gains the lexical sub-field, and on a domain its documents are re-indexed
        in place in the background). Safe to run concurrently and repeatedly."""
        body = index_body(self.dimensions, engine=self.engine, serverless=self.serverless)
        if not _call("exists", self.client.indices.exists, index=self.index_name):
            try:
                _call("create index", self.client.indices.create, index=self.index_name, body=body)
                return True
            except OpenSearchError as exc:
                if "resource_already_exists_exception" not in str(exc):
                    raise
        self._upgrade(body)
        return False

    def _upgrade(self, body: dict[str, Any]) -> None:
        mapping = _call("get mapping", self.client.indices.get_mapping, index=self.index_name)
        text = mapping[self.index_name]["mappings"]["properties"].get("text", {})
        if "words" in text.get("fields", {}):
            return
        properties = {"text": body["mappings"]["properties"]["text"]}
        _call("put mapping", self.client.indices.put_mapping, index=self.index_name, body={"properties": properties})
        if not self.serverless:  # Serverless has no _update_by_query: re-index from the table
            _call("put settings", self.client.indices.put_settings, index=self.index_name,
                  body={"index": {"refresh_interval": REFRESH_INTERVAL}})
            _call("update by query", self.client.update_by_query, index=self.index_name,
                  params={"conflicts": "proceed", "wait_for_completion": "false"})
        log.info("opensearch index %s: lexical field added", self.index_name)

    # --- writes -----------------------------------------------------------------------------

    def _source(self, doc: dict[str, Any]) -> dict[str, Any]:
        source = {
            "doc_id": doc["id"],
            "account_id": doc["account_id"],
            "end_user_id": doc.get("end_user_id"),
            "thread_id": doc["thread_id"],
            "seq": int(doc["seq"]),
            "role": doc["role"],
            "text": doc["text"],
            "created_at": int(doc["created_at"]),
        }
        vector = doc.get("vector")
        if vector is not None and len(vector) != self.dimensions:
            raise ValueError(f"vector has {len(vector)} dimensions, index expects {self.dimensions}")
        if usable_vector(vector):  # else indexed without one: found lexically, never by knn
            source[VECTOR_FIELD] = [float(x) for x in vector]
        return source

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
        if not self.serverless:
            self._bulk(self.bulk_body(docs), {"refresh": "wait_for"})
            return
        ids = [doc["id"] for doc in docs]
        replace = set(self._matching_ids({"terms": {"doc_id": ids}}, limit=len(docs) * 4))
        replace.update(_id for doc_id in ids for _id in self._recent_ids(doc_id))
        items = self._send_bulk(self.bulk_body(docs, sorted(replace)))
        # Remembered before failures are raised: a retry of this batch must replace these.
        for doc, entry in zip(docs, items[len(replace):]):
            item = entry.get("index", {})
            if item.get("_id") and not item.get("error"):
                self._remember(doc["account_id"], doc["id"], item["_id"])
        _raise_failures(items)

    def _recent_ids(self, doc_id: str) -> list[str]:
        entry = self._recent.get(doc_id)
        return entry[1] if entry and time.monotonic() - entry[2] < RECENT_WRITES_S else []

    def _remember(self, account_id: str, doc_id: str, _id: str) -> None:
        self._recent.pop(doc_id, None)
        self._recent[doc_id] = (account_id, [_id], time.monotonic())
        while len(self._recent) > RECENT_WRITES_MAX:
            self._recent.popitem(last=False)

    def _send_bulk(self, body: list[dict[str, Any]], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The `_bulk` response's items (each action succeeds or fails on its own). Sent to
        `/<index>/_bulk`, which an index-scoped IAM grant on a domain covers (`/_bulk` is not)."""
        return _call("bulk", self.client.bulk, index=self.index_name, body=body, params=params).get("items", [])

    def _bulk(self, body: list[dict[str, Any]], params: dict[str, Any] | None = None) -> None:
        _raise_failures(self._send_bulk(body, params))

    def delete_query(self, account_id: str, thread_id: str | None = None) -> dict[str, Any]:
        return {"query": scope_filter(account_id, thread_id=thread_id)}

    def delete_thread(self, account_id: str, thread_id: str, *, deleted_at: float | None = None) -> None:
        self._forget(account_id, thread_id)
        self._delete(self.delete_query(account_id, thread_id), deleted_at)

    def delete_account(self, account_id: str) -> None:
        self._forget(account_id, None)
        self._delete(self.delete_query(account_id), None)

    def _forget(self, account_id: str, thread_id: str | None) -> None:
        """Serverless: delete, by id, the copies this process wrote that searches cannot see yet."""
        prefix = None if thread_id is None else f"{thread_id}#"
        gone = [
            doc_id for doc_id, (account, _, _) in self._recent.items()
            if account == account_id and (prefix is None or doc_id.startswith(prefix))
        ]
        ids = [_id for doc_id in gone for _id in self._recent.pop(doc_id)[1]]
        if ids:
            self._bulk([{"delete": {"_index": self.index_name, "_id": _id}} for _id in ids])

    def _delete(self, body: dict[str, Any], deleted_at: float | None) -> None:
        if self.serverless:
            self._delete_serverless(body, deleted_at)
            return
        for _ in range(DELETE_ATTEMPTS):
            # `_delete_by_query` deletes what the last refresh shows: refresh first so every
            # document written before this call is seen; a version conflict means a write raced
            # us (it is skipped, not deleted): go again.
            _call("refresh", self.client.indices.refresh, index=self.index_name)
            response = _call(
                "delete by query", self.client.delete_by_query, index=self.index_name, body=body,
                params={"conflicts": "proceed", "refresh": "true"},
            )
            if response.get("failures"):
                raise OpenSearchError(f"delete by query: {_reason(response['failures'][0].get('cause'))}")
            if not response.get("version_conflicts"):
                return
        raise OpenSearchError(f"delete by query: still {response['version_conflicts']} version conflict(s)")

    def _delete_serverless(self, body: dict[str, Any], deleted_at: float | None) -> None:
        """Search the ids, bulk-delete them, until none is left; with `deleted_at` (epoch s),
        keep going until everything written before then has had time to become visible."""
        settle_until = (deleted_at + self.serverless_visibility_s) if deleted_at is not None else 0.0
        while True:
            ids = self._matching_ids(body["query"], limit=DELETE_PAGE)
            if ids:
                self._bulk([{"delete": {"_index": self.index_name, "_id": _id}} for _id in ids])
                if len(ids) == DELETE_PAGE:
                    continue
            wait = settle_until - time.time()
            if wait <= 0:
                return
            time.sleep(min(1.0, wait))

    def _matching_ids(self, query: dict[str, Any], limit: int) -> list[str]:
        response = _call(
            "search ids", self.client.search, index=self.index_name,
            body={"size": limit, "_source": False, "query": query},
        )
        return [hit["_id"] for hit in response["hits"]["hits"]]

    # --- reads ------------------------------------------------------------------------------

    def _pool(self, limit: int) -> int:
        return limit * 2 if self.serverless else limit  # room to collapse not-yet-deleted copies

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
        k = self._pool(limit)
        return {
            "size": k,
            "_source": SOURCE_FIELDS,
            "query": {
                "knn": {
                    VECTOR_FIELD: {
                        "vector": [float(x) for x in vector],
                        "k": max(k, KNN_CANDIDATES),
                        "filter": scope_filter(account_id, end_user_id, thread_id),
                    }
                }
            },
        }

    def lexical_body(
        self,
        text: str,
        *,
        account_id: str,
        end_user_id: str | None = None,
        thread_id: str | None = None,
        limit: int = 10,
    ) -> dict[str, Any]:
        """BM25 `match` on the message words, scoped by the same filter (a filter clause: it
        restricts the candidates and does not score). Every word must be there (`operator: and`):
        lexical search is the precise side of hybrid search (an order number, a name, a rare
        word); with any-word matching, incidental words of a paraphrase pulled wrong messages
        to the top of the fused ranking (labelled set, hybrid hit@1 on paraphrases 0.61 vs 0.78)."""
        return {
            "size": self._pool(limit),
            "_source": SOURCE_FIELDS,
            "query": {
                "bool": {
                    "must": [{"match": {LEXICAL_FIELD: {"query": text, "operator": "and"}}}],
                    "filter": scope_filter(account_id, end_user_id, thread_id)["bool"]["filter"],
                }
            },
        }

    def candidates(
        self,
        *,
        vector: Sequence[float] | None,
        text: str | None,
        account_id: str,
        end_user_id: str | None = None,
        thread_id: str | None = None,
        limit: int = 10,
    ) -> tuple[Hits, Hits]:
        """(semantic hits with cosine scores, lexical hits with BM25 scores), each best first.
        A side is skipped (empty) without a usable vector / without text; both in one
        `_msearch` round trip when both are asked."""
        if limit <= 0:
            return [], []
        scope = dict(account_id=account_id, end_user_id=end_user_id, thread_id=thread_id, limit=limit)
        bodies: dict[str, dict[str, Any]] = {}
        if usable_vector(vector):
            bodies["semantic"] = self.search_body(vector, **scope)  # type: ignore[arg-type]
        if text:
            bodies["lexical"] = self.lexical_body(text, **scope)
        responses: dict[str, Any] = {}
        if len(bodies) == 1:
            [(side, body)] = bodies.items()
            responses[side] = _call("search", self.client.search, index=self.index_name, body=body)
        elif bodies:
            lines = [line for body in bodies.values() for line in ({}, body)]
            answer = _call("msearch", self.client.msearch, index=self.index_name, body=lines)
            for side, response in zip(bodies, answer["responses"]):
                if "error" in response:
                    raise OpenSearchError(f"msearch {side}: HTTP {response.get('status')}: {_reason(response['error'])}",
                                          status=response.get("status"))
                responses[side] = response
        semantic = self._hits(responses.get("semantic"), account_id, limit, cosine_from_score)
        lexical = self._hits(responses.get("lexical"), account_id, limit, float)
        return semantic, lexical

    def _hits(self, response: Any, account_id: str, limit: int, score: Callable[[float], float]) -> Hits:
        if response is None:
            return []
        results: Hits = []
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
            results.append((doc, score(hit["_score"])))
            if len(results) == limit:
                break
        return results

    def search(
        self,
        vector: Sequence[float],
        *,
        account_id: str,
        end_user_id: str | None = None,
        thread_id: str | None = None,
        limit: int = 10,
    ) -> Hits:
        """Semantic hits only (cosine), best first."""
        semantic, _ = self.candidates(
            vector=vector, text=None, account_id=account_id, end_user_id=end_user_id, thread_id=thread_id, limit=limit
        )
        return semantic


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
