"""Embedders: the bundled offline model (local mode) and Bedrock Titan Text Embeddings V2 (AWS).

Both return L2-normalized float vectors, so cosine similarity is a dot product everywhere.
Nothing heavy happens at import time: the local model loads on first use.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

LOCAL_DIMENSIONS = 256


def _normalized(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        return [0.0] * len(vector)
    return [float(x) / norm for x in vector]


class WordLlamaEmbedder:
    """WordLlama `l2_supercat` (256-d static token embeddings, weights shipped in the wheel:
    ~33 MB, no torch, ~20 µs per message on one core). Loaded lazily, once, thread-safely."""

    # Cheap enough to re-embed snippet windows at query time (see Indexer).
    cheap = True

    def __init__(self, dimensions: int = LOCAL_DIMENSIONS) -> None:
        self.dimensions = dimensions
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    import wordllama  # local-mode dependency, absent from the Lambda layer
                    from wordllama import WordLlama

                    # The wheel bundles weights and tokenizer under the package directory;
                    # pointing the cache there (and disabling downloads) keeps this offline.
                    package_dir = Path(wordllama.__file__).parent
                    self._model = WordLlama.load(
                        dim=self.dimensions, cache_dir=package_dir, disable_download=True
                    )
        return self._model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        matrix = self._load().embed(list(texts), norm=True)
        return matrix.astype("float32").tolist()

    def embed_matrix(self, texts: Sequence[str]) -> Any:
        """The same vectors as a float32 numpy matrix (avoids list round trips in bulk paths)."""
        return self._load().embed(list(texts), norm=True).astype("float32")


def load_local_embedder() -> WordLlamaEmbedder:
    """The offline embedder of local mode. Returns at once; the weights load on first embed."""
    return WordLlamaEmbedder()


class BedrockTitanEmbedder:
    """Amazon Titan Text Embeddings V2 through `bedrock-runtime.invoke_model` (one text per
    call: the model has no batch form on InvokeModel)."""

    cheap = False
    # Titan V2 accepts up to 8,192 tokens / 50,000 characters; stay well inside.
    MAX_CHARS = 40_000

    def __init__(
        self, client: Any, model_id: str = "amazon.titan-embed-text-v2:0", dimensions: int = 256
    ) -> None:
        if dimensions not in (256, 512, 1024):
            raise ValueError("Titan Text Embeddings V2 dimensions must be 256, 512 or 1024")
        self.client = client
        self.model_id = model_id
        self.dimensions = dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._embed_one(text) for text in texts]

    def _embed_one(self, text: str) -> list[float]:
        body = json.dumps(
            {"inputText": text[: self.MAX_CHARS], "dimensions": self.dimensions, "normalize": True}
        )
        response = self.client.invoke_model(
            modelId=self.model_id,
            body=body,
            contentType="application/json",
            accept="application/json",
        )
        payload = json.loads(response["body"].read())
        vector = payload["embedding"]
        if len(vector) != self.dimensions:
            raise ValueError(f"Titan returned {len(vector)} dimensions, expected {self.dimensions}")
        # normalize=true already returns unit vectors; renormalize to absorb float rounding.
        return _normalized(vector)
