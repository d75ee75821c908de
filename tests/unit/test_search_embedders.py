"""Embedders: the offline local model and Bedrock Titan V2 (a real boto3 client, stubbed)."""

from __future__ import annotations

import io
import json
import math
import socket

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from threadgate.search.embedders import BedrockTitanEmbedder, load_local_embedder


def test_the_local_embedder_is_offline_lazy_and_normalized(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):  # any connection attempt fails the test
        raise AssertionError("the local embedder tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    embedder = load_local_embedder()
    assert embedder._model is None  # nothing loaded until first use
    vectors = embedder.embed(["I want a refund", "the weather is nice"])
    assert embedder.dimensions == 256
    assert [len(v) for v in vectors] == [256, 256]
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4) for v in vectors)
    assert embedder.embed([]) == []


def test_the_local_vectors_are_wordllamas_own_without_importing_it() -> None:
    """The embedder does WordLlama's inference itself (memory-mapped float16 weights): its vectors
    must be the library's, bit for bit (texts up to 4,096 tokens; longer ones are summed in slices,
    within float rounding), and it must not import the `wordllama` package (nor `requests`)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, numpy as np\n"
        "from tests.unit.test_search_relevance import IDENTIFIER_QUERIES, QUERIES, STORED\n"
        "from threadgate.search.embedders import load_local_embedder\n"
        "texts = [text for _, _, text in STORED] + [q for q, _ in QUERIES + IDENTIFIER_QUERIES]\n"
        "texts += ['x', 'émoji 🎉 ünïcode', 'word ' * 3000]\n"
        "e = load_local_embedder()\n"
        "ours = e.embed_matrix(texts + ['', 'refund ' * 9000])\n"
        "assert 'wordllama' not in sys.modules and 'requests' not in sys.modules\n"
        "from pathlib import Path\n"
        "import wordllama\n"
        "lib = wordllama.WordLlama.load(dim=256, cache_dir=Path(wordllama.__file__).parent, disable_download=True)\n"
        "theirs = lib.embed(texts + ['refund ' * 9000], norm=True)\n"
        "assert np.array_equal(ours[: len(texts)], theirs[: len(texts)])\n"
        "assert not ours[len(texts)].any()  # no tokens: a zero vector (the library divides 0 by 0)\n"
        "assert np.allclose(ours[-1], theirs[-1], atol=1e-4) and float(ours[-1] @ theirs[-1]) > 0.99999\n"
        "print(len(texts))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) > 80  # the labelled set and the edge cases were all compared


def _titan_response(vector: list[float]) -> dict:
    payload = json.dumps({"embedding": vector, "inputTextTokenCount": 3}).encode()
    return {"body": StreamingBody(io.BytesIO(payload), len(payload)), "contentType": "application/json"}


def test_titan_sends_one_invoke_model_per_text_and_normalizes() -> None:
    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    embedder = BedrockTitanEmbedder(client, dimensions=256)
    with Stubber(client) as stub:
        for text, value in (("hello", 2.0), ("refund please", 1.0)):
            stub.add_response(
                "invoke_model",
                _titan_response([value] + [0.0] * 255),
                {
                    "modelId": "amazon.titan-embed-text-v2:0",
                    "body": json.dumps({"inputText": text, "dimensions": 256, "normalize": True}),
                    "contentType": "application/json",
                    "accept": "application/json",
                },
            )
        vectors = embedder.embed(["hello", "refund please"])
        stub.assert_no_pending_responses()
    assert [v[0] for v in vectors] == [1.0, 1.0]
    assert all(len(v) == 256 for v in vectors)


def test_titan_rejects_a_wrong_dimension_answer() -> None:
    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    embedder = BedrockTitanEmbedder(client, model_id="amazon.titan-embed-text-v2:0", dimensions=512)
    with Stubber(client) as stub:
        stub.add_response("invoke_model", _titan_response([1.0] * 256))
        with pytest.raises(ValueError, match="256 dimensions"):
            embedder.embed(["x"])


def test_titan_errors_propagate_to_the_indexer() -> None:
    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    embedder = BedrockTitanEmbedder(client)
    with Stubber(client) as stub:
        stub.add_client_error("invoke_model", service_error_code="ThrottlingException", http_status_code=429)
        with pytest.raises(client.exceptions.ThrottlingException):
            embedder.embed(["x"])


def test_titan_dimensions_are_validated() -> None:
    with pytest.raises(ValueError):
        BedrockTitanEmbedder(object(), dimensions=300)


def test_the_aws_search_path_imports_without_local_only_packages() -> None:
    """The Lambda layer ships neither numpy nor wordllama: the OpenSearch adapter, the indexer,
    the stream consumer and the Titan embedder must import (and index) without them."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys\n"
        "sys.modules['numpy'] = None; sys.modules['wordllama'] = None\n"
        "import threadgate.search.embedders, threadgate.search.opensearch\n"
        "import threadgate.search.indexing, threadgate.background.search_indexer\n"
        "from threadgate.search.indexing import Indexer\n"
        "class E:\n"
        "    dimensions = 2\n"
        "    def embed(self, texts): return [[1.0, 0.0] for _ in texts]\n"
        "class I:\n"
        "    docs = []\n"
        "    def upsert(self, docs): self.docs += docs\n"
        "    def candidates(self, vector, text, **kw): return [(dict(self.docs[0]), 0.5)], []\n"
        "from threadgate.domain.models import Message\n"
        "ix = Indexer(E(), I(), semantic_snippets=True)\n"
        "assert ix.index_messages([Message('t', 1, 'user', 'x' * 600, 'user', None, None, 1, 'a', 'u')]) == 1\n"
        "assert ix.search(account_id='a', end_user_id=None, thread_id=None, q='y', limit=1)[0]['seq'] == 1\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={"PYTHONPATH": str(root / "layers" / "threadgate" / "python") + ":" + str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
