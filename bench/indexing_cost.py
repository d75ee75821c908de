"""CPU per thread turn spent on search indexing, local mode, on the real stores: before issue 13
(`inline-library`: `Indexer.index_messages` on the turn with the `wordllama` library's own
embedder, as round 1 did), inline with our embedder over the memory-mapped weights (`inline`),
and the background batch (`batched`: the journal write on the turn + the flusher's share), (SQLite threads, the local
vector index with FTS5, the bundled model). Process CPU time, so the flusher thread counts.

    .venv/bin/python bench/indexing_cost.py [--turns 2000] [--concurrency 32]

Turns hand over in groups of `concurrency` per 10 ms (as 32 clients would); the batched run ends
with a flush so every message is indexed in both. Writes bench/results/indexing_cost.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import write  # noqa: E402
from threadgate.background.search_batcher import BatchedIndexer  # noqa: E402
from threadgate.domain.models import NewMessage, Thread  # noqa: E402
from threadgate.search.embedders import load_local_embedder  # noqa: E402
from threadgate.search.indexing import Indexer  # noqa: E402
from threadgate.search.local_index import LocalVectorIndex  # noqa: E402
from threadgate.stores.sqlite import open_sqlite  # noqa: E402

ASK = "Can you summarize where we are on order ORD-{n}: the parcel left the warehouse on Monday?"
ANSWER = "Order ORD-{n} left the warehouse on Monday and should arrive by Thursday; tracking is live now."


def turns(stores, n: int) -> list[list]:
    """n threads with one user and one assistant message each (what a turn hands over)."""
    out = []
    for i in range(n):
        thread = Thread(id=f"thr_{i}", account_id="acct_bench", end_user_id="eu", metadata=None, title=None,
                        created_at=1, last_active_at=1)
        stores.threads.create_thread(thread)
        out.append(stores.threads.append_messages("acct_bench", thread.id, [
            NewMessage("user", ASK.format(n=i), "user"), NewMessage("assistant", ANSWER.format(n=i), "assistant")], 2))
    return out


class LibraryEmbedder:
    """Round 1's local embedder: `wordllama.WordLlama` itself (float32 weights, encode_batch)."""

    dimensions = 256

    def __init__(self) -> None:
        import wordllama

        self.model = wordllama.WordLlama.load(dim=256, cache_dir=Path(wordllama.__file__).parent,
                                              disable_download=True)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.model.embed(list(texts), norm=True).astype("float32").tolist()


def run(kind: str, n: int, concurrency: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-indexing-{kind}-"))
    stores = open_sqlite(str(tmp / "threadgate.db"))
    embedder = LibraryEmbedder() if kind == "inline-library" else load_local_embedder()
    embedder.embed(["warm up"])
    indexer = Indexer(embedder, LocalVectorIndex(tmp / "vectors", embedder.dimensions))
    if kind == "batched":
        indexer = BatchedIndexer(indexer, lambda: stores.threads, tmp / "vectors" / "pending.sqlite3")
    work = turns(stores, n)
    start = time.process_time()
    for i, messages in enumerate(work):
        indexer.index_messages(messages)
        if i % concurrency == concurrency - 1:
            time.sleep(0.01)
    if kind == "batched":
        indexer.flush()
    cpu = time.process_time() - start
    assert indexer.index.count("acct_bench") == 2 * n
    return cpu * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    rounds: dict[str, list[float]] = {"inline-library": [], "inline": [], "batched": []}
    for _ in range(3):  # interleaved: the machine's noise hits both alike
        for kind in rounds:
            rounds[kind].append(round(run(kind, args.turns, args.concurrency), 3))
    result = {kind: {"cpu_ms_per_turn": min(v), "rounds": v} for kind, v in rounds.items()}
    write("indexing_cost", {**result, "turns": args.turns, "concurrency": args.concurrency,
                            "load_average_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)]})


if __name__ == "__main__":
    main()
