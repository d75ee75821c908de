"""One `Settings`, read from the environment once (THREADGATE_* plus provider keys)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADGATE_", extra="ignore", frozen=True)

    mode: Literal["local", "aws", "test"] = "local"
    data_dir: Path = Path("./.threadgate")
    host: str = "127.0.0.1"
    port: int = 8080
    master_key: str | None = None
    markup: Decimal = Decimal("1.07")
    models_file: Path | None = None  # replaces the generated catalog as a whole
    # Negotiated prices for catalog models and custom models, merged over the catalog (README).
    model_overrides_file: Path | None = None
    allow_private_webhooks: bool | None = None  # None: mode default (local allows loopback)
    key_prefix: str = "qlk_live_"
    max_body_bytes: int = 8 * 1024 * 1024
    # Per-key request rate (token bucket, per process; burst = one minute's worth). None: off.
    # On AWS, pair it with API Gateway throttling: each Lambda instance counts on its own.
    rate_limit_per_minute: int | None = None
    # How long a reservation may stay open before the sweeper settles it at its estimate.
    reservation_ttl_ms: int = 20 * 60 * 1000
    sweep_interval_s: float = 30.0
    # Thread turn lock: a lease renewed every third of it while the turn runs in-process, so a
    # crashed holder's lock is taken over within one lease. A turn finding its thread busy waits
    # up to turn_lock_wait_s, then answers 409 with Retry-After.
    turn_lease_ms: int = 15_000
    turn_lock_wait_s: float = 5.0
    # The lease while a durable driver (Step Functions) runs the turn; each step renews it.
    durable_lease_ms: int = 60 * 60 * 1000
    # A non-streaming turn still running after this long answers 202 with the run object.
    turn_wait_s: float = 840.0
    # Who runs the tool loop after a model call asked for tools. None: stepfunctions on AWS,
    # inline (in the request's process) otherwise.
    tool_loop: Literal["inline", "stepfunctions"] | None = None
    ping_interval_s: float = 15.0
    # Upstream retry policy (before the first byte of an answer).
    upstream_attempts: int = 3
    upstream_timeout_s: float = 600.0
    upstream_connect_timeout_s: float = 10.0
    # The offline model streams one word per delay; 0 in tests and benchmarks.
    local_model_word_delay_ms: int = 15

    anthropic_api_key: str | None = Field(default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key"))
    anthropic_base_url: str = Field(
        default="https://api.anthropic.com", validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "anthropic_base_url")
    )
    openai_api_key: str | None = Field(default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"))
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url")
    )

    # Amazon Bedrock (Converse through boto3 with the function's IAM role): on when a region is
    # set (CDK sets the stack's region). The endpoint URL is for tests and local emulators.
    bedrock_region: str | None = None
    bedrock_endpoint_url: str | None = None

    # AWS mode: resource names injected by CDK.
    keys_table: str | None = None
    threads_table: str | None = None
    usage_table: str | None = None
    tools_table: str | None = None
    jobs_table: str | None = None
    runs_table: str | None = None  # runs of thread turns, their events and tool outcomes
    idempotency_table: str | None = None
    deliveries_table: str | None = None  # webhook delivery attempts; unset: not recorded
    aws_endpoint_url: str | None = None  # tests and local emulators only
    provider_secrets_prefix: str | None = None  # Secrets Manager name prefix for provider keys
    webhook_kms_key_id: str | None = None
    opensearch_endpoint: str | None = None
    opensearch_service: Literal["es", "aoss"] = "es"
    opensearch_index: str = "threadgate-messages"
    embedding_model_id: str = "amazon.titan-embed-text-v2:0"
    embedding_dimensions: int = 256
    admin_secret_name: str | None = None  # Secrets Manager secret holding the first admin key
    # Webhook retry backoff base (waits ≈ base × 1, 2, 4 plus jitter); tests shorten it.
    webhook_backoff_base_s: float = 0.5
    jobs_queue_url: str | None = None  # SQS queue feeding the jobs worker; unset on AWS: /v1/jobs answers 501
    tool_loop_state_machine_arn: str | None = None  # the durable tool loop (CDK); only starters know it
    webhook_queue_url: str | None = None  # SQS queue of the webhook worker (AWS durable tool loop)
    # The worker's redelivery backoff: visibility ≈ base × 4^(receive-1) plus jitter; tests use 0.
    webhook_requeue_base_s: float = 10.0

    @property
    def tool_loop_mode(self) -> str:
        return self.tool_loop or ("stepfunctions" if self.mode == "aws" else "inline")

    @property
    def private_webhooks_allowed(self) -> bool:
        if self.allow_private_webhooks is not None:
            return self.allow_private_webhooks
        return self.mode == "local"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
