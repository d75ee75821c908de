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
    """WordLlama `l2_supercat` 256-d: static token embeddings (no torch), the weights and the
    tokenizer shipped in the `wordllama` wheel. A message's vector is the mean of its tokens'
    vectors, L2-normalized. Loaded lazily, once, thread-safely.

    Inference is done here rather than through `wordllama.WordLlama` (written by hand because the
    library's loader cannot do it; `test_search_embedders` checks the vectors are the library's,
    bit for bit):
    - memory: its loader copies the float16 weights into a float32 matrix (33 MB resident in
      every process) and importing the package pulls `requests` (~10 MB) and sets the root
      logger's level; here the wheel's float16 file is memory-mapped read-only, so only the
      rows of tokens in use become resident (at most 16 MB, shared page cache);
    - CPU: its `embed` tokenizes with `encode_batch` (wakes the tokenizer's Rust thread pool)
      and pads every text to the longest; one or two texts per call are the common case here,
      and `encode` per text without padding costs a fraction of that. Long texts are summed in
      slices, so a huge message never builds a huge temporary matrix.
    """

    # Cheap enough to re-embed snippet windows at query time (see Indexer).
    cheap = True
    WEIGHTS = "weights/l2_supercat_256.safetensors"
    TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
    TOKENS_PER_SLICE = 4096  # rows gathered at once: 4096 x 256 float16 = 2 MB

    def __init__(self, dimensions: int = LOCAL_DIMENSIONS) -> None:
        if dimensions != LOCAL_DIMENSIONS:
            raise ValueError(f"the bundled model has {LOCAL_DIMENSIONS} dimensions")
        self.dimensions = dimensions
        self._model: Any = None  # (tokenizer, float16 weight rows), on first use
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = _load_wordllama(self.WEIGHTS, self.TOKENIZER)
        return self._model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.embed_matrix(texts).tolist()

    def embed_matrix(self, texts: Sequence[str]) -> Any:
        """The vectors as a float32 numpy matrix (one row per text; a text without tokens gives
        a zero row, which search treats as similar to nothing)."""
        import numpy as np

        tokenizer, weights = self._load()
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        counts = np.ones(len(texts), dtype=np.float32)
        for i, text in enumerate(texts):
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            for start in range(0, len(ids), self.TOKENS_PER_SLICE):
                # float16 -> float32 before summing: the library's arithmetic exactly.
                out[i] += weights.take(ids[start : start + self.TOKENS_PER_SLICE], axis=0).astype(np.float32).sum(axis=0)
            counts[i] = max(len(ids), 1)
        out /= counts[:, None]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


def _load_wordllama(weights_file: str, tokenizer_file: str) -> tuple[Any, Any]:
    """The tokenizer and a read-only float16 view of the weights, mapped from the wheel's files
    (found without importing `wordllama`, whose import has side effects; see above). The
    safetensors header is read here rather than by `safetensors.safe_open`, whose `get_tensor`
    copies the whole 16 MB matrix into every process; a mapping keeps it in the page cache."""
    import mmap
    from importlib.util import find_spec

    import numpy as np
    from tokenizers import Tokenizer

    spec = find_spec("wordllama")  # local-mode dependency, absent from the Lambda layer
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("wordllama (the bundled embedding model) is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    tokenizer = Tokenizer.from_file(str(package / tokenizer_file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    with open(package / weights_file, "rb") as f:
        # safetensors layout: u64 little-endian header size, JSON header, then the raw tensors.
        header_size = int.from_bytes(f.read(8), "little")
        tensor = json.loads(f.read(header_size))["embedding.weight"]
        if tensor["dtype"] != "F16":
            raise ValueError(f"unexpected weights dtype {tensor['dtype']}")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    begin, end = tensor["data_offsets"]
    weights = np.frombuffer(mapped, dtype=np.float16, count=(end - begin) // 2, offset=8 + header_size + begin)
    weights = weights.reshape(tensor["shape"])
    if tokenizer.get_vocab_size() > weights.shape[0]:  # every token id must have its row
        raise ValueError("the tokenizer's vocabulary is larger than the weight matrix")
    return tokenizer, weights


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
