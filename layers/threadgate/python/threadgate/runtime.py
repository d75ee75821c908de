"""The composition root: `build(settings)` picks the adapters (local | aws | test).

It is the only module that knows which adapters exist. Everything heavy (database files, HTTP
clients, the embedding model) is created here on first use, never at import time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Callable

from threadgate.config import Settings, get_settings
from threadgate.domain.catalog import Catalog
from threadgate.domain.errors import NotFound
from threadgate.domain.metering import Meter
from threadgate.domain.models import ModelInfo, Tool
from threadgate.domain.passthrough import Upstream
from threadgate.domain.ratelimit import RateLimiter
from threadgate.domain.steps import RunDeps
from threadgate.ports import ModelProvider
from threadgate.stores import Stores

CATALOG_FILE = Path(__file__).parent / "catalog" / "models.json"
PROVIDER_RECHECK_S = 300.0


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass
class Runtime:
    settings: Settings
    stores: Stores
    catalog: Catalog
    providers: dict[str, ModelProvider]
    clock: Any = field(default_factory=SystemClock)
    indexer: Any = None  # threadgate.search.indexing.Indexer, when search is available
    _providers_checked_at: float = field(default_factory=time.monotonic)
    webhook_client: Any = None

    @cached_property
    def markup(self) -> Fraction:
        return Fraction(str(self.settings.markup))

    @cached_property
    def rate_limiter(self) -> RateLimiter | None:
        per_minute = self.settings.rate_limit_per_minute
        return RateLimiter(per_minute) if per_minute else None

    @cached_property
    def meter(self) -> Meter:
        return Meter(self.stores.keys, self.stores.ledger, self.clock, self.markup, self.settings.reservation_ttl_ms)

    def _usable(self, provider: str) -> bool:
        """On AWS a provider key set after deploy (Secrets Manager) is picked up by running
        containers too: a missing provider is looked up again at most every 5 minutes."""
        if provider in self.providers or self.settings.mode != "aws":
            return provider in self.providers
        now = time.monotonic()
        if now - self._providers_checked_at > PROVIDER_RECHECK_S:
            self._providers_checked_at = now
            for name, fresh in build_providers(self.settings).items():
                self.providers.setdefault(name, fresh)
        return provider in self.providers

    def available_models(self) -> list[ModelInfo]:
        return [m for m in self.catalog if self._usable(m.provider)]

    def model(self, model_id: str) -> ModelInfo:
        model = self.catalog.get(model_id)
        if not self._usable(model.provider):
            missing = "THREADGATE_BEDROCK_REGION" if model.provider == "bedrock" else f"{model.provider} key"
            raise NotFound(f"model {model_id!r} is not available on this gateway (no {missing})", param="model")
        return model

    def provider_for(self, model: ModelInfo) -> ModelProvider:
        return self.providers[model.provider]

    def upstream_for(self, model: ModelInfo, caller: str) -> Upstream:
        """How a passthrough call from a caller speaking `caller` ("openai", "anthropic"
        or "responses")
        reaches the model (see providers/passthrough.py)."""
        from threadgate.providers.passthrough import upstream_of

        return upstream_of(self.provider_for(model), caller)

    def run_deps(self) -> RunDeps:
        """What the run steps (domain/steps.py) need, in whichever process runs them."""
        from threadgate.background.jobs_runner import finish_job_of_run

        assert self.stores.runs is not None, "thread turns need the RunStore"
        return RunDeps(
            threads=self.stores.threads,
            runs=self.stores.runs,
            meter=self.meter,
            clock=self.clock,
            model_for=self.catalog.get,
            provider_for=lambda model: self.provider_for(self.model(model.id)),
            dispatch=self.dispatch_call,
            # On AWS the DynamoDB stream feeds the index; locally the turn hands its messages to
            # a background batch (background/search_batcher.py).
            indexer=self.indexer if self.settings.mode != "aws" else None,
            on_finish=lambda run: finish_job_of_run(self, run),
            durable_lease_ms=self.settings.durable_lease_ms,
            atomic=self.stores.atomic,
        )

    async def dispatch_call(self, account_id: str, tool_id: str, call: dict[str, Any], context: dict[str, Any]) -> Any:
        """The in-process delivery of one tool call (all its attempts, here)."""
        from threadgate.webhooks import new_webhook_client

        if self.webhook_client is None:
            self.webhook_client = new_webhook_client()
        delivery = self.prepare_delivery(account_id, tool_id, call, context)
        return await delivery.with_retries(client=self.webhook_client, backoff_base_s=self.settings.webhook_backoff_base_s)

    def prepare_delivery(
        self, account_id: str, tool_id: str, call: dict[str, Any], context: dict[str, Any]
    ) -> Any:
        """One tool call ready to send (webhooks.PreparedDelivery), its tool read with its secret.
        A tool deleted meanwhile is refused before any request (it has no secret to sign with)."""
        from threadgate.webhooks import prepare

        tool = self.stores.tools.get_tool(account_id, tool_id, with_secret=True) or Tool(
            id=tool_id, account_id=account_id, name=call.get("name", ""), description="", input_schema={},
            webhook_url="", timeout_ms=0, secret="", created_at=0,
        )
        return prepare(
            tool,
            tool_use_id=call["id"],
            input=call.get("input") or {},
            thread_id=context.get("thread_id"),
            end_user_id=context.get("end_user_id"),
            request_id=context.get("request_id"),
            allow_private=self.settings.private_webhooks_allowed,
            delivery_log=self.stores.deliveries,
        )

    # --- the durable tool loop (AWS; background/tool_loop.py) --------------------------------

    @cached_property
    def tool_loop(self) -> Any:
        """The `ToolLoop` that drives a run once its model asked for tools: a Step Functions
        execution (THREADGATE_TOOL_LOOP=stepfunctions, the AWS default), or None: inline."""
        if self.settings.tool_loop_mode != "stepfunctions":
            return None
        from threadgate.background.tool_loop import StepFunctionsToolLoop

        return StepFunctionsToolLoop(self._aws_client("stepfunctions"), self.settings.tool_loop_state_machine_arn)

    @cached_property
    def task_answers(self) -> Any:
        from threadgate.background.tool_loop import TaskAnswers

        return TaskAnswers(self._aws_client("stepfunctions"))

    @cached_property
    def sqs(self) -> Any:
        return self._aws_client("sqs")

    def _aws_client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.settings.aws_endpoint_url)

    async def aclose_upstreams(self) -> None:
        """Close the providers' connection pools. They belong to the event loop that made them
        (a provider makes a new pool on its next call), so a runtime served on a loop that ends
        closes them there; `aclose` closes them too."""
        for provider in self.providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

    async def aclose(self) -> None:
        await self.aclose_upstreams()
        if self.webhook_client is not None:
            await self.webhook_client.aclose()
        close_indexer = getattr(self.indexer, "close", None)  # local mode: index what is pending
        if close_indexer is not None:
            close_indexer()
        self.stores.close()


def load_catalog(settings: Settings) -> Catalog:
    import json

    path = settings.models_file or CATALOG_FILE
    overrides = settings.model_overrides_file
    return Catalog.from_dict(
        json.loads(Path(path).read_text()),
        json.loads(Path(overrides).read_text()) if overrides else None,
        source=Path(overrides).name if overrides else "",
    )


def _secret(settings: Settings, name: str, env_value: str | None) -> str | None:
    """Provider keys: env locally; Secrets Manager on AWS (cached by Powertools parameters)."""
    if settings.mode != "aws" or not settings.provider_secrets_prefix or env_value:
        return env_value
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_secret(f"{settings.provider_secrets_prefix}{name}", max_age=300)
    except parameters.exceptions.GetParameterError:
        return None
    return str(value).strip() or None


def build_providers(settings: Settings) -> dict[str, ModelProvider]:
    providers: dict[str, ModelProvider] = {}
    common = dict(
        timeout_s=settings.upstream_timeout_s,
        connect_timeout_s=settings.upstream_connect_timeout_s,
        attempts=settings.upstream_attempts,
    )
    anthropic_key = _secret(settings, "anthropic", settings.anthropic_api_key)
    if anthropic_key:
        from threadgate.providers.anthropic.client import AnthropicProvider

        providers["anthropic"] = AnthropicProvider(settings.anthropic_base_url, anthropic_key, **common)
    openai_key = _secret(settings, "openai", settings.openai_api_key)
    if openai_key:
        from threadgate.providers.openai.client import OpenAIProvider

        providers["openai"] = OpenAIProvider(settings.openai_base_url, openai_key, **common)
    if settings.bedrock_region:
        from threadgate.providers.bedrock.client import BedrockProvider

        providers["bedrock"] = BedrockProvider(settings.bedrock_region, endpoint_url=settings.bedrock_endpoint_url, **common)
    from threadgate.providers.local import LocalModelProvider

    providers["local"] = LocalModelProvider(word_delay_ms=settings.local_model_word_delay_ms)
    return providers


def build_stores(settings: Settings) -> Stores:
    if settings.mode == "aws":
        from threadgate.stores.dynamodb import open_dynamodb

        return open_dynamodb(settings, endpoint_url=settings.aws_endpoint_url)
    from threadgate.stores.sqlite import open_sqlite

    if settings.mode == "test":
        return open_sqlite(":memory:")
    return open_sqlite(str(Path(settings.data_dir) / "threadgate.db"))


def build_indexer(settings: Settings, threads: Callable[[], Any] | None = None) -> Any:
    """The search side. `threads` (gives the ThreadStore in use) lets local mode index in
    background batches (background/search_batcher.py)."""
    try:
        from threadgate.search.indexing import Indexer
    except ImportError:  # search not installed in this bundle
        return None
    if settings.mode == "aws":
        if not settings.opensearch_endpoint:
            return None
        import boto3

        from threadgate.search.embedders import BedrockTitanEmbedder
        from threadgate.search.opensearch import OpenSearchIndex, make_client

        embedder = BedrockTitanEmbedder(
            boto3.client("bedrock-runtime"), settings.embedding_model_id, settings.embedding_dimensions
        )
        index = OpenSearchIndex(make_client(settings), settings.opensearch_index, settings.embedding_dimensions)
        return Indexer(embedder, index)
    from threadgate.search.local_index import LocalVectorIndex

    embedder = _local_embedder()
    if settings.mode == "local":
        base = Path(settings.data_dir) / "vectors"
    else:  # test mode: a throwaway directory per runtime
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="threadgate-vectors-"))
    indexer = Indexer(embedder, LocalVectorIndex(base, embedder.dimensions))
    if threads is None:
        return indexer
    from threadgate.background.search_batcher import BatchedIndexer

    return BatchedIndexer(indexer, threads, base / "pending.sqlite3")


@lru_cache(maxsize=1)
def _local_embedder() -> Any:
    """One embedding model per process: it is read-only, and loading it costs ~0.3-0.6 s."""
    from threadgate.search.embedders import load_local_embedder

    return load_local_embedder()


def build(settings: Settings) -> Runtime:
    rt = Runtime(
        settings=settings,
        stores=build_stores(settings),
        catalog=load_catalog(settings),
        providers=build_providers(settings),
    )
    rt.indexer = build_indexer(settings, lambda: rt.stores.threads)
    return rt


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """One runtime per process (a Lambda container, a uvicorn worker), built on first use."""
    global _runtime
    if _runtime is None:
        _runtime = build(get_settings())
    return _runtime
