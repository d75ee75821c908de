"""What every HTTP provider must do against its fake upstream, whatever the wire format: retry
only before the first byte, map upstream failures to the same domain errors, never leak a key,
pool its connections. Written once, run per provider: each provider's test module subclasses
`UpstreamProviderContract` (as `TestUpstreamContract`), says how to build a provider and where
the first events of a stream end, and binds the `fake` and `provider` fixtures made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import aiohttp
import pytest

from threadgate.domain.errors import (
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamTimeout,
)
from threadgate.providers import UpstreamStreamBroken
from threadgate.providers.anthropic.stream_accumulator import accumulate

# Tiny backoff keeps retry tests fast; the policy (which failures retry) is what is tested.
FAST_RETRIES = {"timeout_s": 5, "connect_timeout_s": 2, "attempts": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.05}


def fake_fixtures(running_fake: Callable[[], AbstractContextManager[Any]]) -> tuple[Any, Any]:
    """`served_fake` (one fake server per module) and `fake` (that server, reset per test):
    bind both names in the test module, `served_fake, fake = fake_fixtures(running_fake_x)`."""

    @pytest.fixture(scope="module")
    def served_fake() -> Iterator[Any]:
        with running_fake() as fake:
            yield fake

    @pytest.fixture
    def fake(served_fake: Any) -> Any:
        served_fake.reset()
        return served_fake

    return served_fake, fake


def provider_fixture(contract: type[UpstreamProviderContract]) -> Any:
    """`provider`: the contract's provider on the module's `fake`, closed after the test. Bind
    it in the test module (`provider = provider_fixture(TestUpstreamContract)`): the contract's
    tests and the module's own use it."""

    @pytest.fixture
    async def provider(fake: Any) -> Any:
        provider = contract().make_provider(fake)
        yield provider
        await provider.aclose()

    return provider


async def collect(provider: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [event async for event in provider.stream(request)]


def unreachable_root() -> str:
    """The root URL of a port that was free a moment ago: connection refused on every attempt."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class UpstreamProviderContract:
    """Subclass as `TestUpstreamContract` in a provider's test module (pytest collects it there)."""

    pytestmark = pytest.mark.anyio

    provider_class: ClassVar[type]
    request: ClassVar[dict[str, Any]]
    endpoint_path: ClassVar[str]  # the path the fake records, e.g. "/v1/messages"
    # `break_stream_after(n)` with this n lets exactly message_start, content_block_start and two
    # text deltas through (the fake counts its own frames: pings, role chunks…).
    frames_before_two_words: ClassVar[int]

    @staticmethod
    def api_root(server_url: str) -> str:
        """The provider's `base_url` for an upstream served at `server_url`."""
        return server_url

    def make_provider(self, fake: Any, *, base_url: str | None = None, api_key: str | None = None, **options: Any):
        """A provider of `fake` (or of `base_url`) with fast retries unless `options` say otherwise."""
        base_url = self.api_root(fake.base_url) if base_url is None else base_url
        return self.provider_class(base_url, api_key or fake.api_key, **{**FAST_RETRIES, **options})

    @contextlib.asynccontextmanager
    async def opened(self, fake: Any, **settings: Any) -> AsyncIterator[Any]:
        """`make_provider(fake, **settings)`, closed on exit."""
        provider = self.make_provider(fake, **settings)
        try:
            yield provider
        finally:
            await provider.aclose()

    # --- the HTTP client ---------------------------------------------------------------------
    async def test_base_url_with_trailing_slash_is_respected(self, fake):
        async with self.opened(fake, base_url=self.api_root(fake.base_url) + "/", attempts=1) as provider:
            await provider.create(self.request)
        assert [r.path for r in fake.requests] == [self.endpoint_path]

    async def test_the_http_client_is_reused_across_calls(self, provider):
        await provider.create(self.request)
        first_client = provider._http()
        await collect(provider, self.request)
        assert provider._http() is first_client

    async def test_an_injected_http_client_is_used_and_not_closed(self, fake):
        async with aiohttp.ClientSession() as shared:
            provider = self.make_provider(fake, client=shared)
            await provider.create(self.request)
            await provider.aclose()
            assert not shared.closed
            assert provider._http() is shared

    async def test_concurrent_streams_share_one_provider(self, provider):
        requests = [{**self.request, "messages": [{"role": "user", "content": f"question {n}"}]} for n in range(6)]
        messages = await asyncio.gather(*(collect(provider, request) for request in requests))
        texts = [accumulate(events)["content"][0]["text"] for events in messages]
        assert texts == [f"Fake reply to: question {n}" for n in range(6)]

    async def test_a_consumer_that_stops_early_leaves_the_provider_usable(self, provider):
        async with contextlib.aclosing(provider.stream(self.request)) as events:
            async for event in events:
                if event["type"] == "content_block_delta":
                    break
        message = await provider.create(self.request)
        assert message["stop_reason"] == "end_turn"

    # --- retries before the first byte -------------------------------------------------------
    @pytest.mark.parametrize("status", [500, 502, 503])
    async def test_5xx_is_retried_then_succeeds(self, provider, fake, status):
        fake.fail_next(status=status, times=2)
        message = await provider.create(self.request)
        assert message["content"][0]["text"] == "Fake reply to: hello gateway"
        assert len(fake.requests) == 3

    async def test_stream_retries_before_the_first_event(self, provider, fake):
        fake.fail_next(times=1)  # the fake's usual failure: 529 overloaded, or 503
        events = await collect(provider, self.request)
        assert events[-1]["type"] == "message_stop"
        assert len(fake.requests) == 2

    @pytest.mark.parametrize("status", [502, 503])
    async def test_exhausted_retries_on_5xx_raise_overloaded_for_streams_too(self, provider, fake, status):
        fake.fail_next(status=status, times=3)
        with pytest.raises(UpstreamOverloaded) as raised:
            await collect(provider, self.request)
        assert raised.value.status == 503
        assert len(fake.requests) == 3

    async def test_429_is_retried_honouring_a_small_retry_after(self, provider, fake):
        fake.fail_next(status=429, times=1, retry_after=0)
        await provider.create(self.request)
        assert len(fake.requests) == 2

    @pytest.mark.parametrize(
        ("failures", "retry_after", "shown_retry_after", "calls"),
        [
            (3, 0, 1, 3),  # persistent: retried to the end; at least one second, never zero
            (1, 120, 120, 1),  # a long retry-after is not waited for
        ],
        ids=["persistent", "long-retry-after"],
    )
    async def test_429_raises_rate_limited_with_retry_after(
        self, provider, fake, failures, retry_after, shown_retry_after, calls
    ):
        fake.fail_next(status=429, times=failures, retry_after=retry_after)
        with pytest.raises(RateLimited) as raised:
            await provider.create(self.request)
        assert raised.value.retry_after == shown_retry_after
        assert len(fake.requests) == calls

    async def test_headers_arriving_too_late_time_out_after_retries(self, fake):
        fake.delay_headers(1.0, times=2)
        async with self.opened(fake, timeout_s=0.2, attempts=2) as provider:
            with pytest.raises(UpstreamTimeout) as raised:
                await provider.create(self.request)
        assert raised.value.status == 504
        assert len(fake.requests) == 2

    async def test_one_slow_header_is_retried_and_then_answers(self, fake):
        fake.delay_headers(1.0, times=1)
        async with self.opened(fake, timeout_s=0.3, attempts=2) as provider:
            events = await collect(provider, self.request)
        assert events[-1]["type"] == "message_stop"

    async def test_unreachable_upstream_is_unavailable(self, fake):
        async with self.opened(fake, base_url=self.api_root(unreachable_root()), attempts=2) as provider:
            with pytest.raises(UpstreamOverloaded):
                await provider.create(self.request)

    # --- failures the caller sees --------------------------------------------------------------
    @pytest.mark.parametrize("our_key", ["sk-ant-api03-our-secret-provider-key", "sk-proj-our-secret-provider-key"])
    async def test_rejected_credentials_do_not_leak_the_key_or_body(self, fake, our_key):
        async with self.opened(fake, api_key=our_key) as provider:
            with pytest.raises(UpstreamError) as raised:
                await provider.create(self.request)
        assert raised.value.message == "upstream rejected the gateway's credentials"
        assert "secret" not in str(raised.value) and "x-api-key" not in str(raised.value)
        assert len(fake.requests) == 1  # a 401 is not retried

    @pytest.mark.parametrize(
        ("upstream_message", "shown"),
        [
            ("bad header sk-ant-api03-AAAAAAAAAAAAAAAAAAAA given", "bad header [redacted] given"),
            (
                "Invalid 'tools[0]': bad schema near sk-proj-AAAAAAAAAAAAAAAAAAAA",
                "Invalid 'tools[0]': bad schema near [redacted]",
            ),
        ],
    )
    async def test_upstream_request_errors_become_invalid_request_with_keys_redacted(
        self, provider, fake, upstream_message, shown
    ):
        fake.fail_next(status=400, message=upstream_message)
        with pytest.raises(InvalidRequest) as raised:
            await provider.create(self.request)
        assert raised.value.message == shown
        assert len(fake.requests) == 1

    async def test_an_unparseable_200_is_an_upstream_error(self, provider, fake):
        fake.malformed_json()
        with pytest.raises(UpstreamError) as raised:
            await provider.create(self.request)
        assert raised.value.status == 502
        assert len(fake.requests) == 1

    # --- streams: never retried once an event was handed on ----------------------------------
    async def test_a_stream_broken_midway_raises_after_yielding_the_first_events(self, provider, fake):
        fake.break_stream_after(self.frames_before_two_words)
        received = []
        with pytest.raises(UpstreamStreamBroken) as raised:
            async for event in provider.stream(self.request):
                received.append(event)
        assert [e["type"] for e in received] == [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
        ]
        assert raised.value.events_received == 4
        assert raised.value.status == 502
        assert len(fake.requests) == 1  # never retried once an event was yielded

    async def test_a_stream_stalling_midway_is_broken_not_retried(self, fake):
        fake.slow_stream(1.0)
        received = []
        async with self.opened(fake, timeout_s=0.2) as provider:
            with pytest.raises(UpstreamStreamBroken):
                async for event in provider.stream(self.request):
                    received.append(event)
        assert [e["type"] for e in received] == ["message_start"]
        assert len(fake.requests) == 1

    async def test_malformed_first_stream_event_is_an_upstream_error(self, provider, fake):
        fake.malformed_sse(0)
        with pytest.raises(UpstreamError) as raised:
            await collect(provider, self.request)
        assert not isinstance(raised.value, UpstreamStreamBroken)
        assert raised.value.status == 502
