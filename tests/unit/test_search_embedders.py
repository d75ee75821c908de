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
