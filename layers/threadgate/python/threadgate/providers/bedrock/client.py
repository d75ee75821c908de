"""`BedrockProvider`: the `ModelProvider` port over boto3's bedrock-runtime Converse API.

boto3 is synchronous: each call (and each read of a stream event) runs in a worker thread so the
event loop keeps serving. Credentials are the function's IAM role (boto3's default chain); no
provider key exists. botocore retries throttling and 5xx before the first byte itself
(`standard` mode, `attempts` in total); a stream that broke after its first event is not retried.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator

from threadgate.providers.bedrock.errors import error_for_botocore
from threadgate.providers.bedrock.translate import StreamTranslator, message_from_converse, to_converse

_END = object()


class BedrockProvider:
    name = "bedrock"

    def __init__(
        self,
        region: str,
        *,
        endpoint_url: str | None = None,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        attempts: int = 3,
    ) -> None:
        self._region = region
        self._endpoint_url = endpoint_url
        self._config = dict(timeout_s=timeout_s, connect_timeout_s=connect_timeout_s, attempts=attempts)
        self._client_: Any = None

    def _client(self, model_id: str) -> Any:
        """One client per provider, made on first use (boto3 import and client set-up cost
        ~100 ms: not at cold start unless a Bedrock model is called). Cross-region inference
        profiles (`us.…`, `global.…`) route the call to other regions themselves."""
        client = self._client_
        if client is None:
            import boto3
            from botocore.config import Config

            c = self._config
            client = boto3.client(
                "bedrock-runtime",
                region_name=self._region,
                endpoint_url=self._endpoint_url,
                config=Config(
                    read_timeout=c["timeout_s"],
                    connect_timeout=c["connect_timeout_s"],
                    retries={"mode": "standard", "total_max_attempts": max(1, int(c["attempts"]))},
                    max_pool_connections=50,
                ),
            )
            self._client_ = client
        return client

    async def create(self, request: dict[str, Any]) -> dict[str, Any]:
        kwargs = to_converse(request)
        model_id = kwargs["modelId"]
        try:
            response = await asyncio.to_thread(self._client(model_id).converse, **kwargs)
        except Exception as exc:  # botocore's exceptions, mapped; nothing else is raised here
            raise error_for_botocore(exc, model_id) from None
        return message_from_converse(response, model_id, _message_id(response))

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        kwargs = to_converse(request)
        model_id = kwargs["modelId"]
        try:
            response = await asyncio.to_thread(self._client(model_id).converse_stream, **kwargs)
        except Exception as exc:
            raise error_for_botocore(exc, model_id) from None
        events = response["stream"]
        translator = StreamTranslator(model_id, _message_id(response))
        iterator = iter(events)
        received = 0
        try:
            while True:
                try:
                    event = await asyncio.to_thread(next, iterator, _END)
                except Exception as exc:  # an exception event, or the connection broke
                    raise error_for_botocore(exc, model_id, received) from None
                if event is _END:
                    break
                for out in translator.feed(event):
                    received += 1
                    yield out
            for out in translator.finish():
                yield out
        finally:
            events.close()

    async def aclose(self) -> None:
        if self._client_ is not None:
            self._client_.close()
            self._client_ = None


def _message_id(response: dict[str, Any]) -> str:
    request_id = (response.get("ResponseMetadata") or {}).get("RequestId")
    return f"msg_bdrk_{request_id or uuid.uuid4().hex}".replace("-", "")
