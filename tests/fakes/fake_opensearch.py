"""A small OpenSearch fake, served over real HTTP for opensearch-py: the stand-in where a test
cannot wait for the real node (tests/real_opensearch.py), e.g. the Lambda handler tests. The
adapter's behaviour is proven against the real node (tests/integration/test_opensearch_adapter.py);
this fake implements the subset of the DSL those handler tests touch, as documented:

- `PUT /<index>` with a `knn_vector` mapping (dimension, `method.space_type`), `HEAD /<index>`;
  `resource_already_exists_exception` on a second create;
- `POST /_bulk` (NDJSON `index` with or without `_id`, `delete`), `dynamic: strict` mappings;
- `POST /<index>/_search` with `knn` + `filter` (efficient filtering: the filter restricts the
  candidates BEFORE the k nearest are chosen, so k results come back when k documents match),
  `term`, `terms`, `bool.filter`/`bool.must`, `match_all`, `size`, `_source`;
  `cosinesimil` scores as (2 - d) / 2 with d = 1 - cos;
- `POST /<index>/_delete_by_query`; `GET`/`PUT /<index>/_mapping`; `/<index>/_refresh` (a no-op:
  unlike the real node, every write here is searchable at once).

With `serverless=True` it also enforces what OpenSearch Serverless vector collections refuse:
custom `_id`s on index actions and `_delete_by_query`.

    with running_fake_opensearch() as fake:
        client = OpenSearch(hosts=[fake.url])
        fake.requests   # [(method, path, params, body)] as received
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.servers import serve_asgi


def _error(status: int, kind: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "reason": reason}, "status": status}, status_code=status)


@dataclass
class _Index:
    body: dict[str, Any]
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def properties(self) -> dict[str, Any]:
        return self.body.get("mappings", {}).get("properties", {})

    @property
    def strict(self) -> bool:
        return self.body.get("mappings", {}).get("dynamic") == "strict"

    def knn_field(self, name: str) -> dict[str, Any]:
        spec = self.properties.get(name)
        if not spec or spec.get("type") != "knn_vector":
            raise ValueError(f"field [{name}] is not a knn_vector field")
        return spec


def _matches(query: dict[str, Any], source: dict[str, Any]) -> bool:
    if not query or "match_all" in query:
        return True
    [(kind, arg)] = query.items()
    if kind == "term":
        [(fld, value)] = arg.items()
        value = value["value"] if isinstance(value, dict) else value
        return source.get(fld) == value
    if kind == "terms":
        [(fld, values)] = arg.items()
        return source.get(fld) in values
    if kind == "bool":
        def clauses(name: str) -> list[dict[str, Any]]:
            c = arg.get(name, [])
            return c if isinstance(c, list) else [c]

        return all(_matches(c, source) for c in clauses("filter") + clauses("must")) and not any(
            _matches(c, source) for c in clauses("must_not")
        )
    raise ValueError(f"unsupported query [{kind}]")


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    if na == 0 or nb == 0:
        raise ValueError("zero vector is invalid for cosinesimil")
    return dot / (na * nb)


class FakeOpenSearch:
    def __init__(self, *, serverless: bool = False) -> None:
        self.serverless = serverless
        self.indices: dict[str, _Index] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self._lock = threading.Lock()
        self.url = ""
        self.app = Starlette(
            routes=[
                Route("/_bulk", self._bulk, methods=["POST", "PUT"]),
                Route("/{index}/_bulk", self._bulk, methods=["POST", "PUT"]),
                Route("/{index}/_search", self._search, methods=["POST", "GET"]),
                Route("/{index}/_delete_by_query", self._delete_by_query, methods=["POST"]),
                Route("/{index}/_mapping", self._mapping, methods=["GET", "PUT"]),
                Route("/{index}/_refresh", self._refresh, methods=["POST", "GET"]),
                Route("/{index}", self._index_admin, methods=["PUT", "HEAD", "GET", "DELETE"]),
            ]
        )

    async def _record(self, request: Request, ndjson: bool = False) -> Any:
        raw = (await request.body()).decode()
        if ndjson:
            body: Any = [json.loads(line) for line in raw.splitlines() if line.strip()]
        else:
            body = json.loads(raw) if raw.strip() else None
        self.requests.append((request.method, request.url.path, dict(request.query_params), body))
        return body

    # --- index admin ---------------------------------------------------------------------------

    async def _index_admin(self, request: Request) -> Response:
        name = request.path_params["index"]
        body = await self._record(request)
        with self._lock:
            if request.method == "HEAD":
                return Response(status_code=200 if name in self.indices else 404)
            if request.method == "GET":
                if name not in self.indices:
                    return _error(404, "index_not_found_exception", f"no such index [{name}]")
                return JSONResponse({name: self.indices[name].body})
            if request.method == "DELETE":
                self.indices.pop(name, None)
                return JSONResponse({"acknowledged": True})
            if name in self.indices:
                return _error(400, "resource_already_exists_exception", f"index [{name}] already exists")
            for fld, spec in (body or {}).get("mappings", {}).get("properties", {}).items():
                if spec.get("type") == "knn_vector":
                    if not isinstance(spec.get("dimension"), int):
                        return _error(400, "mapper_parsing_exception", f"[{fld}] needs a dimension")
                    if spec.get("method", {}).get("space_type", "l2") not in {"l2", "cosinesimil", "innerproduct"}:
                        return _error(400, "mapper_parsing_exception", "unsupported space_type")
            self.indices[name] = _Index(body or {})
            return JSONResponse({"acknowledged": True, "shards_acknowledged": True, "index": name})

    async def _refresh(self, request: Request) -> Response:
        """Every write is visible at once here (unlike the real node): nothing to do."""
        await self._record(request)
        return JSONResponse({"_shards": {"total": 1, "successful": 1, "failed": 0}})

    async def _mapping(self, request: Request) -> Response:
        """GET: `{index: {"mappings": ...}}`; PUT: new fields (and sub-fields) merge in."""
        name = request.path_params["index"]
        body = await self._record(request)
        with self._lock:
            if name not in self.indices:
                return _error(404, "index_not_found_exception", f"no such index [{name}]")
            mappings = self.indices[name].body.setdefault("mappings", {})
            if request.method == "PUT":
                mappings.setdefault("properties", {}).update((body or {}).get("properties", {}))
                return JSONResponse({"acknowledged": True})
            return JSONResponse({name: {"mappings": mappings}})

    # --- documents -------------------------------------------------------------------------

    def _validate(self, index: _Index, source: dict[str, Any]) -> str | None:
        for fld, value in source.items():
            spec = index.properties.get(fld)
            if spec is None:
                if index.strict:
                    return "strict_dynamic_mapping_exception"
                continue
            if spec.get("type") == "knn_vector" and (not isinstance(value, list) or len(value) != spec["dimension"]):
                return "mapper_parsing_exception"
        return None

    async def _bulk(self, request: Request) -> Response:
        lines = await self._record(request, ndjson=True)
        default_index = request.path_params.get("index")
        items: list[dict[str, Any]] = []
        with self._lock:
            i = 0
            while i < len(lines):
                [(op, meta)] = lines[i].items()
                i += 1
                name = meta.get("_index", default_index)
                index = self.indices.get(name)
                doc_id = meta.get("_id")
                if op == "delete":
                    if index is None or doc_id not in index.docs:
                        items.append({op: {"_index": name, "_id": doc_id, "status": 404, "result": "not_found"}})
                    else:
                        del index.docs[doc_id]
                        items.append({op: {"_index": name, "_id": doc_id, "status": 200, "result": "deleted"}})
                    continue
                source = lines[i]
                i += 1
                if index is None:
                    items.append({op: {"_index": name, "status": 404, "error": {"type": "index_not_found_exception", "reason": name}}})
                    continue
                if self.serverless and doc_id is not None:
                    items.append({op: {"_index": name, "_id": doc_id, "status": 400, "error": {"type": "illegal_argument_exception", "reason": "Document ID is not supported in create/index operation request"}}})
                    continue
                problem = self._validate(index, source)
                if problem:
                    items.append({op: {"_index": name, "_id": doc_id, "status": 400, "error": {"type": problem, "reason": problem}}})
                    continue
                doc_id = doc_id or uuid.uuid4().hex
                created = doc_id not in index.docs
                index.docs[doc_id] = source
                items.append({op: {"_index": name, "_id": doc_id, "status": 201 if created else 200, "result": "created" if created else "updated"}})
        errors = any("error" in next(iter(item.values())) for item in items)
        return JSONResponse({"took": 1, "errors": errors, "items": items})

    # --- search ------------------------------------------------------------------------------

    async def _search(self, request: Request) -> Response:
        name = request.path_params["index"]
        body = await self._record(request) or {}
        with self._lock:
            index = self.indices.get(name)
            if index is None:
                return _error(404, "index_not_found_exception", f"no such index [{name}]")
            query = body.get("query", {"match_all": {}})
            size = int(body.get("size", 10))
            try:
                if "knn" in query:
                    hits = self._knn(index, query["knn"])
                else:
                    hits = [(doc_id, 1.0) for doc_id, src in index.docs.items() if _matches(query, src)]
            except ValueError as exc:
                return _error(400, "illegal_argument_exception", str(exc))
            hits = hits[:size]
            return JSONResponse(
                {
                    "took": 1,
                    "timed_out": False,
                    "hits": {
                        "total": {"value": len(hits), "relation": "eq"},
                        "max_score": hits[0][1] if hits else None,
                        "hits": [
                            {"_index": name, "_id": doc_id, "_score": score, **self._source(index.docs[doc_id], body.get("_source", True))}
                            for doc_id, score in hits
                        ],
                    },
                }
            )

    def _knn(self, index: _Index, knn: dict[str, Any]) -> list[tuple[str, float]]:
        [(fld, spec)] = knn.items()
        mapping = index.knn_field(fld)
        space = mapping.get("method", {}).get("space_type", mapping.get("space_type", "l2"))
        if space != "cosinesimil":
            raise ValueError("the fake implements cosinesimil only")
        vector, k = spec["vector"], int(spec["k"])
        if len(vector) != mapping["dimension"]:
            raise ValueError("query vector dimension mismatch")
        flt = spec.get("filter")
        scored = [
            (doc_id, (2 - (1 - _cosine(vector, src[fld]))) / 2)
            for doc_id, src in index.docs.items()
            if fld in src and (flt is None or _matches(flt, src))
        ]
        scored.sort(key=lambda item: -item[1])
        return scored[:k]

    @staticmethod
    def _source(source: dict[str, Any], spec: Any) -> dict[str, Any]:
        if spec is False:
            return {}
        if isinstance(spec, list):
            return {"_source": {k: v for k, v in source.items() if k in spec}}
        if isinstance(spec, dict) and "excludes" in spec:
            return {"_source": {k: v for k, v in source.items() if k not in spec["excludes"]}}
        return {"_source": source}

    async def _delete_by_query(self, request: Request) -> Response:
        name = request.path_params["index"]
        body = await self._record(request) or {}
        if self.serverless:
            return _error(404, "unsupported_operation_exception", "_delete_by_query is not supported")
        with self._lock:
            index = self.indices.get(name)
            if index is None:
                return _error(404, "index_not_found_exception", f"no such index [{name}]")
            doomed = [doc_id for doc_id, src in index.docs.items() if _matches(body.get("query", {}), src)]
            for doc_id in doomed:
                del index.docs[doc_id]
        return JSONResponse({"took": 1, "deleted": len(doomed), "total": len(doomed), "failures": []})


@contextlib.contextmanager
def running_fake_opensearch(*, serverless: bool = False) -> Iterator[FakeOpenSearch]:
    fake = FakeOpenSearch(serverless=serverless)
    with serve_asgi(fake.app) as url:
        fake.url = url
        yield fake
