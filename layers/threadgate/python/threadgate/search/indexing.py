"""Indexing and searching messages: ties an `Embedder` to a `VectorIndex`.

Indexing never fails the caller (a turn must not fail because search is down): errors are
logged without message text, retried once, and reported as a smaller count.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from threadgate.domain.errors import InvalidRequest, UpstreamOverloaded
from threadgate.domain.models import Message
from threadgate.domain.search import SEARCH_MODES, fuse, index_document, search_result, snippet
from threadgate.ports import Embedder, VectorIndex

log = logging.getLogger(__name__)

EMBED_BATCH = 256
# Hybrid search fuses this many candidates of each ranking: documents just below `limit` in one
# ranking and high in the other are what fusion brings up.
FUSION_POOL_MIN, FUSION_POOL_MAX = 20, 100


class Indexer:
    def __init__(self, embedder: Embedder, index: VectorIndex, *, semantic_snippets: bool | None = None):
        self.embedder = embedder
        self.index = index
        # Re-embedding snippet windows at query time is only worth it for a cheap local model.
        self.semantic_snippets = (
            bool(getattr(embedder, "cheap", False)) if semantic_snippets is None else semantic_snippets
        )

    # --- writes ---------------------------------------------------------------------------

    def index_messages(self, messages: Sequence[Message]) -> int:
        """Embed and upsert the indexable messages (user and final assistant turns, text only).
        Returns how many were indexed; never raises."""
        return self.index_documents([doc for doc in (index_document(m) for m in messages) if doc is not None])

    def index_documents(self, docs: Sequence[dict[str, Any]]) -> int:
        """`index_messages` for documents made by `domain.search.index_document`."""
        indexed = 0
        for start in range(0, len(docs), EMBED_BATCH):
            batch = docs[start : start + EMBED_BATCH]
            if self._index_batch(batch):
                indexed += len(batch)
        return indexed

    def _index_batch(self, batch: list[dict[str, Any]]) -> bool:
        for attempt in (1, 2):
            try:
                # The local model's matrix goes to the local index as is (no list round trip).
                embed = getattr(self.embedder, "embed_matrix", self.embedder.embed)
                vectors = embed([doc["text"] for doc in batch])
                self.index.upsert([{**doc, "vector": vec} for doc, vec in zip(batch, vectors)])
                return True
            except Exception as exc:  # noqa: BLE001 - indexing must never fail a turn
                # Ids and the error class only: message text and provider payloads stay out of logs.
                log.warning(
                    "search indexing failed (attempt %d/2) for %d message(s) %s: %s",
                    attempt,
                    len(batch),
                    [doc["id"] for doc in batch[:5]],
                    _describe(exc),
                )
        return False

    def delete_thread(self, account_id: str, thread_id: str, *, deleted_at: float | None = None) -> bool:
        """Remove a thread's entries at once. Retried once; False (logged) if the index stays
        unreachable — the thread itself is already gone and, on AWS, the stream consumer
        deletes the entries again when the thread's META removal arrives, with `deleted_at`
        (epoch s) so that an eventually consistent index is swept until every earlier write
        shows."""
        for attempt in (1, 2):
            try:
                self.index.delete_thread(account_id, thread_id, deleted_at=deleted_at)
                return True
            except Exception as exc:  # noqa: BLE001 - the thread deletion itself succeeded
                log.warning("search entries of thread %s not deleted (attempt %d/2): %s", thread_id, attempt, _describe(exc))
        return False

    def delete_account(self, account_id: str) -> None:
        self.index.delete_account(account_id)

    # --- reads ----------------------------------------------------------------------------

    def search(
        self,
        *,
        account_id: str,
        end_user_id: str | None,
        thread_id: str | None,
        q: str,
        limit: int,
        mode: str = "hybrid",
    ) -> list[dict[str, Any]]:
        """API.md §9 items, best first. Scoping (account, end user, thread) happens inside the
        index queries. `limit` is validated by the route (1–50). Modes: `semantic` (cosine of
        the embeddings), `lexical` (BM25 on the words), `hybrid` (both, fused by rank)."""
        query = (q or "").strip()
        if not query:
            raise InvalidRequest("q: must be a non-empty search query", param="q")
        if mode not in SEARCH_MODES:
            raise InvalidRequest(f"mode: must be one of {', '.join(SEARCH_MODES)}", param="mode")
        pool = limit if mode != "hybrid" else min(FUSION_POOL_MAX, max(2 * limit, FUSION_POOL_MIN))
        vector = None
        try:
            if mode != "lexical":
                [vector] = self.embedder.embed([query])
            semantic, lexical = self.index.candidates(
                vector=vector,
                text=query if mode != "semantic" else None,
                account_id=account_id,
                end_user_id=end_user_id,
                thread_id=thread_id,
                limit=pool,
            )
        except Exception as exc:  # noqa: BLE001 - the embedder or the index is unreachable
            log.warning("search backend failed: %s", _describe(exc))
            raise UpstreamOverloaded("search is temporarily unavailable, retry shortly") from exc
        # Lexical first: on a tie, a message holding every word of the query wins.
        hits = semantic if mode == "semantic" else lexical if mode == "lexical" else fuse([lexical, semantic], limit)
        scorer = self._window_scorer(vector) if self.semantic_snippets and vector is not None else None
        return [
            search_result(doc, score, snippet(doc["text"], query, window_scorer=scorer)) for doc, score in hits[:limit]
        ]

    def _window_scorer(self, query_vector: Sequence[float]):
        # Plain Python on purpose: a handful of short dot products, and this module also runs on
        # Lambda, whose layer ships no numpy.
        query = [float(x) for x in query_vector]

        def score(windows: Sequence[str]) -> list[float]:
            return [sum(a * b for a, b in zip(vec, query)) for vec in self.embedder.embed(list(windows))]

        return score


def _describe(exc: Exception) -> str:
    """The class of an error, plus its message when the error says it is `loggable` (the
    OpenSearch adapter's: server reasons, never message text); other messages may quote content."""
    return f"{type(exc).__name__}: {exc}" if getattr(exc, "loggable", False) else type(exc).__name__
