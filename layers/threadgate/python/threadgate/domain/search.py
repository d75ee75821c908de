"""Search shaping: what gets indexed, the text we embed, how rankings fuse, and the snippet we
show (pure code).

Indexed (API.md §9): every user turn and every final assistant turn, text blocks only.
Intermediate `tool_use` / `tool_result` messages and non-text blocks (images, documents,
tool calls inside an assistant message) are never indexed.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from threadgate.domain.models import Message

INDEXED_KINDS = frozenset({"user", "assistant"})
SEARCH_MODES = ("semantic", "lexical", "hybrid")
# The constant of reciprocal rank fusion (Cormack, Clarke & Buettcher 2009; also OpenSearch's
# and Elasticsearch's default): a document's fused score is the sum of 1 / (RRF_K + rank).
RRF_K = 60
SNIPPET_CHARS = 240
# Embedding models read a bounded prefix anyway; cap what we send and store per message.
MAX_INDEXED_CHARS = 8_000

_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_START = re.compile(r"(?:^|(?<=[.!?;:\n])\s+)(?=\S)")
_STOPWORDS = frozenset(
    "a an and are as at be but by did do does for from had has have how i in is it its me my "
    "of on or our so that the their them then there these they this to was we were what when "
    "where which who why will with you your about can could would should".split()
)


def document_id(thread_id: str, seq: int) -> str:
    """Idempotent index id of one message (re-indexing the same message overwrites it)."""
    return f"{thread_id}#{seq}"


def message_text(content: str | list[dict[str, Any]]) -> str:
    """The searchable text of a message: a plain string, or its `text` blocks joined."""
    if isinstance(content, str):
        return content.strip()
    parts = [
        str(block.get("text") or "").strip()
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    ]
    return "\n\n".join(p for p in parts if p)


def is_indexable(message: Message) -> bool:
    return message.kind in INDEXED_KINDS and bool(message_text(message.content))


def index_document(message: Message) -> dict[str, Any] | None:
    """The index document of a message (without its vector), or None if it is not indexed."""
    if message.kind not in INDEXED_KINDS:
        return None
    text = message_text(message.content)[:MAX_INDEXED_CHARS]
    if not text:
        return None
    return {
        "id": document_id(message.thread_id, message.seq),
        "account_id": message.account_id,
        "end_user_id": message.end_user_id,
        "thread_id": message.thread_id,
        "seq": message.seq,
        "role": message.role,
        "text": text,
        "created_at": message.created_at,
    }


def search_result(doc: dict[str, Any], score: float, snippet: str) -> dict[str, Any]:
    """One item of the §9 `data` list."""
    return {
        "thread_id": doc["thread_id"],
        "seq": doc["seq"],
        "role": doc["role"],
        "score": round(float(score), 6),
        "snippet": snippet,
        "end_user_id": doc.get("end_user_id"),
        "created_at": doc["created_at"],
    }


def fuse(rankings: Sequence[Sequence[tuple[dict[str, Any], float]]], limit: int) -> list[tuple[dict[str, Any], float]]:
    """Reciprocal rank fusion of rankings of `(doc, score)` (best first), keyed by `doc["id"]`.
    Only ranks count, so cosines and BM25 scores need no common scale. The fused score is
    divided by its maximum (first in every ranking), so it lies in (0, 1]; ties keep the order
    of first appearance (the first ranking wins)."""
    fused: dict[str, float] = {}
    docs: dict[str, dict[str, Any]] = {}
    for ranking in rankings:
        for rank, (doc, _) in enumerate(ranking, start=1):
            fused[doc["id"]] = fused.get(doc["id"], 0.0) + 1.0 / (RRF_K + rank)
            docs.setdefault(doc["id"], doc)
    best = len(rankings) / (RRF_K + 1)
    order = sorted(fused, key=lambda doc_id: -fused[doc_id])
    return [(docs[doc_id], fused[doc_id] / best) for doc_id in order[:limit]]


def query_terms(text: str) -> list[str]:
    """The words of a search query that carry meaning (stopwords dropped), in order, once."""
    return list(dict.fromkeys(w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS))


# --- snippets ---------------------------------------------------------------------------------

WindowScorer = Callable[[Sequence[str]], Sequence[float]]


def _terms(text: str) -> set[str]:
    return set(query_terms(text))


def _term_matches(query_terms: set[str], window: str) -> int:
    """Query terms found in the window; a shared 5-letter prefix counts ("refunds" ~ "refunded")."""
    words = _terms(window)
    prefixes = {w[:5] for w in words if len(w) >= 5}
    hits = 0
    for term in query_terms:
        if term in words or (len(term) >= 5 and term[:5] in prefixes):
            hits += 1
    return hits


def candidate_windows(text: str, width: int = SNIPPET_CHARS) -> list[tuple[int, int]]:
    """(start, end) spans of about `width` characters starting at sentence boundaries (and every
    half width inside long sentences), cut at word boundaries so a snippet never starts or ends
    mid-word."""
    starts = {m.start() for m in _SENTENCE_START.finditer(text)} | {0}
    for pos in range(width // 2, len(text), width // 2):
        space = text.find(" ", pos)
        if 0 < space < len(text) - 1:
            starts.add(space + 1)
    starts = sorted(s for s in starts if s == 0 or len(text) - s > width // 4)
    spans: list[tuple[int, int]] = []
    for start in starts:
        end = min(len(text), start + width)
        if end < len(text):
            cut = text.rfind(" ", start + width // 2, end)
            end = cut if cut > start else end
        spans.append((start, end))
    return spans


def snippet(
    text: str,
    query: str,
    *,
    width: int = SNIPPET_CHARS,
    window_scorer: WindowScorer | None = None,
) -> str:
    """About `width` characters of `text` around its best-matching part; short texts whole.

    The best window is the one sharing most query terms; when no window shares any (the query
    is phrased differently, "money back" vs "refund") and a `window_scorer` is given (e.g. the
    cosine of each window's embedding to the query), that decides instead; otherwise the start.
    """
    text = text.strip()
    if len(text) <= width:
        return text
    spans = candidate_windows(text, width)
    windows = [text[s:e] for s, e in spans]
    terms = _terms(query)
    lexical = [_term_matches(terms, w) for w in windows]
    best = max(range(len(spans)), key=lambda i: (lexical[i], -i))
    if lexical[best] == 0 and window_scorer is not None and len(windows) > 1:
        scores = list(window_scorer(windows))
        best = max(range(len(spans)), key=lambda i: (scores[i], -i))
    start, end = spans[best]
    out = " ".join(text[start:end].split())
    return ("…" if start > 0 else "") + out + ("…" if end < len(text) else "")
