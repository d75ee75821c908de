"""Shared fixtures: a gateway over real HTTP (uvicorn on 127.0.0.1) against fake upstreams."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests import real_opensearch
from tests.infra import lwa_build

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# Tests never read the developer's provider keys or data directory.
for _var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "THREADGATE_MASTER_KEY", "THREADGATE_DATA_DIR"):
    os.environ.pop(_var, None)


# --- the session's real OpenSearch node (tests/real_opensearch.py) and the stream-function tier's
# Lambda Web Adapter build (tests/infra/lwa_build.py): both start in the background at collection.


def pytest_configure(config: pytest.Config) -> None:
    real_opensearch.configure(config)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    real_opensearch.collection_modifyitems(items)
    lwa_build.collection_modifyitems(items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    real_opensearch.logreport(report)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    real_opensearch.terminal_summary(config, terminalreporter)


def pytest_unconfigure() -> None:
    real_opensearch.unconfigure()


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """The URL of a real OpenSearch 2.19.1 + k-NN node (skips where Java/Maven are absent)."""
    return real_opensearch.wait_for_url()


@dataclass
class Gateway:
    url: str
    admin_key: str
    runtime: Any
    fake: Any
    openai_fake: Any = None  # set by the `gateway_with_openai` fixture

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"x-api-key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_key)

    def mint(self, **body: Any) -> dict[str, Any]:
        with self.admin() as c:
            r = c.post("/v1/keys", json={"name": "k", **body})
            assert r.status_code == 201, r.text
            return r.json()


def make_settings(tmp: Path, **overrides: Any):
    from threadgate.config import Settings

    base = dict(mode="test", data_dir=tmp, local_model_word_delay_ms=0, sweep_interval_s=3600,
                upstream_attempts=3, upstream_timeout_s=5, upstream_connect_timeout_s=2)
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[Any]:
    from tests.fakes.fake_anthropic import running_fake_anthropic

    with running_fake_anthropic() as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[Any]:
    from tests.fakes.fake_openai import running_fake_openai

    with running_fake_openai() as fake:
        yield fake


def gateway_app(rt: Any) -> Any:
    """`create_app(rt)` that closes `rt` when its server stops, on the server's event loop, as
    the gateway does with the runtime it builds itself (`create_app` leaves a runtime handed to
    it to its owner). An upstream pool left open would be reported as "Unclosed client session"
    once collected, its loop gone."""
    from threadgate.api.app import create_app

    app = create_app(rt)
    serve = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(served: Any) -> Any:
        async with serve(served) as state:
            yield state
        await rt.aclose()

    app.router.lifespan_context = lifespan
    return app


def start_gateway(tmp: Path, fake_anthropic: Any, stack: list[Any], stores: Any = None, **overrides: Any) -> Gateway:
    """A gateway over real HTTP against the fake Anthropic, settings overridden; its server is put
    on `stack` for the caller to stop. `stores`: run on these adapters (e.g. DynamoDB under moto)
    instead of SQLite."""
    from threadgate.api.connection_limits import uvicorn_options
    from threadgate.bootstrap import ensure_first_admin
    from threadgate.runtime import build

    from tests.fakes.servers import serve_asgi

    fake_anthropic.reset()
    fake_anthropic.default_reply = None  # a test's scripted default must not leak into the next
    settings = make_settings(
        tmp, anthropic_api_key=fake_anthropic.api_key, anthropic_base_url=fake_anthropic.base_url, **overrides
    )
    rt = build(settings)
    if stores is not None:
        rt.stores.close()
        rt.stores = stores
    admin = ensure_first_admin(rt.stores, rt.clock, settings)
    cm = serve_asgi(gateway_app(rt), **uvicorn_options())
    url = cm.__enter__()
    stack.append(cm)
    return Gateway(url=url, admin_key=admin, runtime=rt, fake=fake_anthropic)


@pytest.fixture
def gateway_factory(tmp_path: Path, fake_anthropic: Any):
    """Start a gateway with settings overrides; stops at test end."""
    stack: list[Any] = []
    yield lambda stores=None, **overrides: start_gateway(tmp_path, fake_anthropic, stack, stores, **overrides)
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory()


@pytest.fixture
def gateway_with_openai(gateway_factory, fake_openai) -> Gateway:
    """A gateway that serves OpenAI models too (against the fake OpenAI, `gw.openai_fake`)."""
    fake_openai.reset()
    fake_openai.default_reply = None
    gw = gateway_factory(openai_api_key=fake_openai.api_key, openai_base_url=fake_openai.v1_url)
    gw.openai_fake = fake_openai
    return gw


@pytest.fixture(scope="module")
def module_gateway_with_openai(tmp_path_factory, fake_anthropic, fake_openai) -> Iterator[Gateway]:
    """One `gateway_with_openai` for a whole module of many small, independent requests (each
    test resets the fakes itself). Search indexing is off: it has its own tests."""
    stack: list[Any] = []
    gw = start_gateway(
        tmp_path_factory.mktemp("gateway"), fake_anthropic, stack,
        openai_api_key=fake_openai.api_key, openai_base_url=fake_openai.v1_url,
    )
    gw.runtime.indexer = None
    gw.openai_fake = fake_openai
    yield gw
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def gateway_on_store(gateway_factory):
    """`gateway_on_store("sqlite" | "dynamodb")`: a gateway on that store (DynamoDB under moto).
    Search indexing has its own tests; here it would only load an embedding model."""
    from contextlib import ExitStack

    from tests.conftest_dynamo import dynamodb_stores

    with ExitStack() as stack:

        def start(store: str) -> Gateway:
            stores = stack.enter_context(dynamodb_stores()).stores if store == "dynamodb" else None
            gw = gateway_factory(stores=stores)
            gw.runtime.indexer = None
            return gw

        yield start
