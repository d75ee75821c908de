"""One stack per stage, composed of the constructs in infra/constructs/.

Every function gets the same Settings environment (names of resources, never secret values);
what differs is what its role may do, granted here resource by resource.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.config import StageConfig
from infra.constructs.api import Api
from infra.constructs.bedrock import BedrockAccess
from infra.constructs.data import Data
from infra.constructs.functions import AppFunction, SharedLayers
from infra.constructs.jobs import WORKER_TIMEOUT, JobQueue
from infra.constructs.observability import Observability
from infra.constructs.search import Search
from infra.constructs.tool_loop import STEP_TIMEOUT, WEBHOOK_WORKER_TIMEOUT, DurableToolLoop
from infra.constructs.workers import Bootstrap, Indexing, Sweeping
from infra.nag import suppress_reviewed_findings

LWA_PORT = "8080"


class ThreadgateStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, description=f"Threadgate LLM gateway ({config.stage})", **kwargs)
        self.config = config
        self.data = Data(self, "Data", config=config)
        self.search = Search(self, "Search", config=config)
        self.layers = SharedLayers(self, "Layers", config=config)
        self.jobs = JobQueue(self, "Jobs")
        self.tool_loop = DurableToolLoop(self, "ToolLoop", config=config)
        self.bedrock = BedrockAccess(self, "Bedrock", config=config)
        env = self._settings_environment()

        # SnapStart where a cold start is waited for and the function allows it (Python 3.12+, no
        # EFS, ephemeral storage <= 512 MB): docs/deploy.md "Cold starts" says why not the others.
        self.api_fn = self._function("api", "api_handler.handler", env, memory_mb=1024, snap_start=True,
                                     timeout=Duration.seconds(29), description="Buffered API routes (Mangum)")
        lwa = lambda_.LayerVersion.from_layer_version_arn(
            self, "WebAdapterLayer", config.lwa_layer_arn(self.region, self.partition)
        )
        self.stream_fn = self._function(
            "stream", "run.sh",
            {**env,
             "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
             "AWS_LWA_INVOKE_MODE": "response_stream",
             "AWS_LWA_PORT": LWA_PORT,
             # The app has no health route; an open port is enough to know uvicorn is up.
             "AWS_LWA_READINESS_CHECK_PROTOCOL": "tcp"},
            memory_mb=1024, timeout=Duration.minutes(15), extra_layers=[lwa],
            description="Streaming API routes (Lambda Web Adapter + uvicorn)",
        )
        self.jobs_fn = self._function("jobs", "jobs_handler.handler", env, memory_mb=1024, timeout=WORKER_TIMEOUT,
                                      description="Run queued /v1/jobs (SQS), fail dead-lettered ones")
        self.loop_fn = self._function("loop", "loop_handler.handler", env, memory_mb=1024, timeout=STEP_TIMEOUT,
                                      snap_start=True,
                                      description="Durable tool loop steps (Step Functions tasks)")
        # Other workers serve no model: without the secrets prefix they never ask Secrets Manager.
        worker_env = {k: v for k, v in env.items() if k != "THREADGATE_PROVIDER_SECRETS_PREFIX"}
        self.webhooks_fn = self._function("webhooks", "webhooks_handler.handler", worker_env, memory_mb=512,
                                          timeout=WEBHOOK_WORKER_TIMEOUT,
                                          description="Deliver queued tool calls to webhooks, end dead-lettered ones")
        self.indexer_fn = self._function("indexer", "indexer_handler.handler", worker_env, memory_mb=512,
                                         timeout=Duration.minutes(1), description="Threads stream to search index")
        self.sweeper_fn = self._function("sweeper", "sweeper_handler.handler", worker_env, memory_mb=256,
                                         timeout=Duration.minutes(1), description="Settle expired reservations")
        self.bootstrap_fn = self._function(
            "bootstrap", "bootstrap_handler.handler",
            {**worker_env, "THREADGATE_ADMIN_SECRET_NAME": self.data.admin_secret.secret_name},
            memory_mb=256, timeout=Duration.minutes(5), description="Deploy-time index and first admin key",
        )
        self._grant()

        self.api = Api(self, "Api", config=config, buffered=self.api_fn.invocable, streaming=self.stream_fn.function)
        self.indexing = Indexing(self, "Indexing", indexer=self.indexer_fn.function,
                                 threads=self.data.tables["threads"])
        self.jobs.feed(self.jobs_fn.function)
        self.tool_loop.wire(steps=self.loop_fn.invocable, webhooks=self.webhooks_fn.function)
        for starter in (self.stream_fn, self.jobs_fn):  # where thread turns run, runs start
            self.tool_loop.grant_start(starter.role)
            for name, value in self.tool_loop.starter_environment().items():
                starter.function.add_environment(name, value)
        self.sweeping = Sweeping(self, "Sweeping", config=config, sweeper=self.sweeper_fn.function)
        self.bootstrap = Bootstrap(self, "Bootstrap", function=self.bootstrap_fn.function, properties={
            "Index": env["THREADGATE_OPENSEARCH_INDEX"],
            "Dimensions": env["THREADGATE_EMBEDDING_DIMENSIONS"],
            "AdminSecret": self.data.admin_secret.secret_name,
        })
        self.search.finalize()
        self.bootstrap.node.add_dependency(self.search)
        self.observability = Observability(
            self, "Observability", config=config, rest_api=self.api.rest_api,
            functions={name: fn.function for name, fn in self.app_functions.items()},
            indexer_dlq=self.indexing.dlq, jobs_queue=self.jobs.queue, jobs_dlq=self.jobs.dlq,
            tool_loop=self.tool_loop.state_machine, webhooks_dlq=self.tool_loop.dlq,
        )

        CfnOutput(self, "ApiUrl", value=self.api.rest_api.url, description="Base URL (append v1/...)")
        CfnOutput(self, "AdminKeySecretName", value=self.data.admin_secret.secret_name,
                  description="Secrets Manager secret holding the first admin key")
        for name, secret in self.data.provider_secrets.items():
            CfnOutput(self, f"{name.title()}KeySecretName", value=secret.secret_name,
                      description=f"Put your {name} API key here (optional)")
        suppress_reviewed_findings(self)

    def _settings_environment(self) -> dict[str, str]:
        env = {"THREADGATE_MODE": "aws", "THREADGATE_MARKUP": self.config.markup,
               **self.data.environment(), **self.search.environment(), **self.jobs.environment(),
               **self.tool_loop.environment(), **self.bedrock.environment()}
        if self.layers.catalog:
            env["THREADGATE_MODELS_FILE"] = self.layers.catalog_path
        return env

    def _function(self, name: str, handler: str, env: dict[str, str], *, memory_mb: int, timeout: Duration,
                  description: str, extra_layers: list[lambda_.ILayerVersion] | None = None,
                  snap_start: bool = False) -> AppFunction:
        return AppFunction(
            self, f"{name.title()}Function", config=self.config, name=name, handler=handler,
            layers=self.layers.all() + (extra_layers or []), environment=env,
            memory_mb=memory_mb, timeout=timeout, description=description, snap_start=snap_start,
        )

    @property
    def app_functions(self) -> dict[str, AppFunction]:
        return {"api": self.api_fn, "stream": self.stream_fn, "jobs": self.jobs_fn, "indexer": self.indexer_fn,
                "sweeper": self.sweeper_fn, "bootstrap": self.bootstrap_fn, "loop": self.loop_fn,
                "webhooks": self.webhooks_fn}

    def _grant(self) -> None:
        data = self.data
        for serving in (self.api_fn, self.stream_fn):
            for logical in data.tables:
                data.grant_table(serving.role, logical, write=True)
            data.grant_webhook_secrets(serving.role)
            for secret in data.provider_secrets.values():
                secret.grant_read(serving.role)
            self.search.grant_documents(serving.role)
            self.jobs.grant_send(serving.role)
            self.bedrock.grant_invoke(serving.role)
        # A job runs a turn: keys/usage (billing), threads, tools and runs (thread turns, webhooks),
        # deliveries (each webhook attempt is recorded).
        for logical in ("jobs", "keys", "usage", "threads", "tools", "runs", "deliveries"):
            data.grant_table(self.jobs_fn.role, logical, write=True)
        data.webhook_key.grant(self.jobs_fn.role, "kms:Decrypt")
        for secret in data.provider_secrets.values():
            secret.grant_read(self.jobs_fn.role)
        self.bedrock.grant_invoke(self.jobs_fn.role)
        # A tool-loop step is a model call of a turn (billing, threads, run events, a linked job).
        for logical in ("keys", "usage", "threads", "runs", "jobs"):
            data.grant_table(self.loop_fn.role, logical, write=True)
        for secret in data.provider_secrets.values():
            secret.grant_read(self.loop_fn.role)
        self.bedrock.grant_invoke(self.loop_fn.role)
        # A delivery reads the tool (its sealed secret) and the call, and records the outcome.
        data.grant_table(self.webhooks_fn.role, "tools", write=False)
        data.grant_table(self.webhooks_fn.role, "threads", write=False)
        data.grant_table(self.webhooks_fn.role, "runs", write=True)
        data.grant_table(self.webhooks_fn.role, "deliveries", write=True)  # each attempt is recorded
        data.webhook_key.grant(self.webhooks_fn.role, "kms:Decrypt")
        data.grant_table(self.indexer_fn.role, "threads", write=False)  # the stream itself: event source
        self.search.grant_documents(self.indexer_fn.role)
        data.grant_table(self.sweeper_fn.role, "usage", write=True)
        data.grant_table(self.sweeper_fn.role, "keys", write=True)  # settlement moves key/account totals
        data.grant_table(self.bootstrap_fn.role, "keys", write=True)
        data.admin_secret.grant_write(self.bootstrap_fn.role)
        self.search.grant_index_admin(self.bootstrap_fn.role)
