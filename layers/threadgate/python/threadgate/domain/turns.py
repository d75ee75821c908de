"""The turn engine: history → (reserve → model call → settle → persist → tools)* → done.

One engine serves thread turns (persisted, tools dispatched server-side) and passthrough calls
(`/v1/messages`, `/v1/chat/completions`: nothing persisted, tool calls returned). It yields
Anthropic stream events with the `qlaud.*` events of API.md §6.2 multiplexed in; the HTTP layer
renders them as SSE or folds them into one JSON answer. Each step is a method (`call_model`,
`dispatch_tools`, `persist`) so a durable driver (Step Functions) can run them one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Protocol, Sequence

from threadgate import jsoncodec

from threadgate.domain import billing
from threadgate.domain.errors import GatewayError, NotFound, UpstreamError
from threadgate.domain.history import build_history
from threadgate.domain.metering import Meter
from threadgate.domain.models import (
    Message,
    ModelInfo,
    NewMessage,
    Principal,
    Thread,
    Tool,
    Usage,
)
from threadgate.ports import Clock, ModelProvider, ThreadStore
from threadgate.providers.anthropic.stream_accumulator import MessageAccumulator

log = logging.getLogger(__name__)

LIMIT_REACHED = "not executed: iteration limit reached"
# Request fields forwarded upstream as they are (validated by the API layer).
FORWARDED = ("system", "temperature", "top_p", "top_k", "stop_sequences", "thinking", "metadata", "tool_choice")


class TurnFailed(GatewayError):
    """An unexpected failure after the turn began (its messages so far stay persisted)."""

    status, type = 500, "api_error"


class ToolDispatcher(Protocol):
    async def __call__(self, tool: Tool, call: dict[str, Any], context: dict[str, Any]) -> Any:
        """Run one tool call; the result has `output_text` (str) and `is_error` (bool)."""


class MessageIndexer(Protocol):
    def index_messages(self, messages: Sequence[Message]) -> int: ...


@dataclass
class TurnDeps:
    threads: ThreadStore
    meter: Meter
    clock: Clock
    provider_for: Callable[[ModelInfo], ModelProvider]
    dispatch: ToolDispatcher | None = None
    indexer: MessageIndexer | None = None


@dataclass
class TurnSpec:
    principal: Principal
    model: ModelInfo
    params: dict[str, Any]  # max_tokens + FORWARDED fields
    request_id: str
    stream: bool
    thread: Thread | None = None  # None: passthrough
    new_content: list[dict[str, Any]] | None = None  # thread turns: the new user turn
    messages: list[dict[str, Any]] | None = None  # passthrough: the caller's full history
    tools: list[Tool] = field(default_factory=list)  # thread turns: resolved tool ids
    tool_definitions: list[dict[str, Any]] | None = None  # passthrough: caller's tool defs
    max_iterations: int = 8


@dataclass
class TurnResult:
    message: dict[str, Any] | None = None  # the final assistant message (Anthropic shape)
    assistant_seq: int | None = None
    iterations: int = 0
    hit_max_iterations: bool = False
    incomplete: bool = False
    cost_micros: int = 0
    usage: Usage = field(default_factory=Usage)
    error: GatewayError | None = None


class Turn:
    def __init__(self, deps: TurnDeps, spec: TurnSpec):
        self.deps = deps
        self.spec = spec
        self.result = TurnResult()
        self._tools_by_name = {t.name: t for t in spec.tools}
        self._history: list[dict[str, Any]] = []
        self._to_index: list[Message] = []
        self._billed = False  # a model call of this turn was settled (the upstream served it)

    # --- composition -----------------------------------------------------------------------

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Run the whole turn. Errors before the first model call raise (nothing was sent or
        persisted); later ones end the stream with `qlaud.error` and are kept in result.error."""
        spec, result = self.spec, self.result
        self._history = self._initial_history()
        reservation, max_tokens = self._reserve(iteration=1)  # 402 raises here, before any write
        user_message: Message | None = None
        if spec.thread is not None:
            try:
                (user_message,) = self._persist(
                    [NewMessage("user", spec.new_content or [], "user", request_id=spec.request_id)]
                )
            except GatewayError:  # e.g. the thread was deleted while this turn waited for its lock
                self.deps.meter.release(reservation)  # nothing was called: hold nothing back
                raise
        try:
            for iteration in range(1, spec.max_iterations + 1):
                if iteration > 1:
                    try:
                        reservation, max_tokens = self._reserve(iteration)
                    except GatewayError as err:
                        self._fail(err)
                        yield self._error_event(err, iteration)
                        break
                    yield {"type": "qlaud.iteration_start", "iteration": iteration}
                result.iterations = iteration
                message = None
                async for event in self.call_model(reservation, max_tokens, iteration):
                    if event.get("type") == "_message":
                        message = event["message"]
                    else:
                        yield event
                if message is None:  # the call failed; call_model recorded the error
                    if iteration == 1 and user_message is not None and not self._billed:
                        self._retract(user_message)
                    yield self._error_event(result.error, iteration)
                    break
                tool_uses = [b for b in message["content"] if b.get("type") == "tool_use"]
                dispatchable = spec.thread is not None and tool_uses and message.get("stop_reason") == "tool_use"
                self._append_assistant(message, has_tools=bool(dispatchable))
                if not dispatchable:
                    break
                if iteration == spec.max_iterations:
                    result.hit_max_iterations = True
                    self._append_tool_results(
                        [_result_block(u["id"], LIMIT_REACHED, True) for u in tool_uses]
                    )
                    break
                results: list[dict[str, Any]] = []
                async for event in self.dispatch_tools(tool_uses, iteration, results):
                    yield event
                self._append_tool_results(results)
        except GatewayError as err:  # a write failed: the thread was deleted mid-turn
            self._fail(err)
            if isinstance(err, NotFound):
                self._to_index.clear()  # its messages are gone: never make them searchable again
            yield self._error_event(err, result.iterations)
        except Exception as exc:  # e.g. a store outage mid-turn: end the turn visibly, not silently
            log.error("turn failed mid-loop: %s (request %s)", type(exc).__name__, spec.request_id)
            err = TurnFailed("internal error during the turn; the thread keeps what was done")
            self._fail(err)
            yield self._error_event(err, result.iterations)
        finally:
            await self._index()
        yield self._done_event()

    # --- steps ----------------------------------------------------------------------------

    def _initial_history(self) -> list[dict[str, Any]]:
        spec = self.spec
        if spec.thread is None:
            return list(spec.messages or [])
        stored = self.deps.threads.list_messages(spec.principal.account_id, spec.thread.id)
        budget = spec.model.context_window - int(spec.params["max_tokens"]) - billing.PROVIDER_PROMPT_ALLOWANCE_TOKENS
        return build_history(stored, spec.new_content, budget)

    def upstream_request(self, max_tokens: int) -> dict[str, Any]:
        spec = self.spec
        request: dict[str, Any] = {"model": spec.model.upstream_id, "max_tokens": max_tokens}
        request.update({k: spec.params[k] for k in FORWARDED if spec.params.get(k) is not None})
        request["messages"] = self._history
        tools = spec.tool_definitions
        if spec.tools:
            tools = [
                {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in spec.tools
            ]
        if tools:
            request["tools"] = tools
        return request

    def _reserve(self, iteration: int):
        spec = self.spec
        requested = int(spec.params["max_tokens"])
        body = jsoncodec.dumps(self.upstream_request(requested))
        return self.deps.meter.reserve(
            spec.principal,
            spec.model,
            input_bound=billing.input_token_bound(body, self._history),
            max_tokens=requested,
            request_id=spec.request_id,
            reservation_id=f"{spec.request_id}:{iteration}",
            thread_id=spec.thread.id if spec.thread else None,
        )

    async def call_model(self, reservation, max_tokens: int, iteration: int) -> AsyncIterator[dict[str, Any]]:
        """One upstream call, settled exactly once whatever happens (also on cancellation).
        Yields upstream events (streaming) and finally `{"type": "_message", "message": …}`."""
        spec, meter = self.spec, self.deps.meter
        provider = self.deps.provider_for(spec.model)
        request = self.upstream_request(max_tokens)
        acc = MessageAccumulator()
        started = time.monotonic()
        status = "error"
        deltas = 0
        message: dict[str, Any] | None = None
        try:
            if spec.stream:
                request["stream"] = True
                async for event in provider.stream(request):
                    acc.feed(event)
                    deltas += event.get("type") == "content_block_delta"
                    if event.get("type") == "message_start":
                        event = _with_model(event, spec.model.id)
                    yield event
                message = acc.message()
            else:
                message = await provider.create(request)
            message["model"] = spec.model.id
            status = "ok"
        except GatewayError as err:
            self._fail(err)
        except asyncio.CancelledError:
            status = "incomplete"
            raise
        finally:
            usage = Usage.from_anthropic(message["usage"] if message else acc.usage)
            if status != "ok" and acc.started and usage.output_tokens == 0:
                # A broken stream still cost the tokens we saw: at least one per delta.
                usage.output_tokens = max(1, deltas)
            if message is None and not acc.started:
                meter.release(reservation)  # the upstream served nothing billable
            else:
                self._billed = True
                event = meter.settle(
                    reservation,
                    spec.model,
                    usage,
                    latency_ms=int((time.monotonic() - started) * 1000),
                    status="ok" if status == "ok" else "incomplete",
                )
                self.result.cost_micros += event.cost_micros
                self.result.usage = self.result.usage + usage
            if message is None and acc.started:
                # Keep what was said, minus unfinished tool calls, so the thread stays valid.
                partial = acc.message()
                partial["content"] = [b for b in partial["content"] if b.get("type") in ("text", "thinking")]
                if partial["content"] and spec.thread is not None:
                    self._append_assistant(partial, has_tools=False)
                self.result.incomplete = True
        if message is not None:
            yield {"type": "_message", "message": message}

    async def dispatch_tools(
        self, tool_uses: list[dict[str, Any]], iteration: int, results: list[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        """All tool calls of one answer run concurrently; results keep the model's order."""
        spec = self.spec
        context = {
            "thread_id": spec.thread.id if spec.thread else None,
            "end_user_id": spec.thread.end_user_id if spec.thread else None,
            "request_id": spec.request_id,
        }
        for use in tool_uses:
            yield {"type": "qlaud.tool_dispatch_start", "tool_use_id": use["id"], "name": use["name"], "iteration": iteration}
        queue: asyncio.Queue = asyncio.Queue()

        async def run(index: int, use: dict[str, Any]) -> None:
            tool = self._tools_by_name.get(use["name"])
            if tool is None or self.deps.dispatch is None:
                outcome = (f"unknown tool {use['name']!r}", True)
            else:
                try:
                    res = await self.deps.dispatch(tool, use, context)
                    outcome = (res.output_text, bool(res.is_error))
                except Exception:  # a dispatcher bug must not break the thread
                    outcome = ("tool dispatch failed", True)
            await queue.put((index, use, outcome))

        tasks = [asyncio.create_task(run(i, u)) for i, u in enumerate(tool_uses)]
        ordered: list[dict[str, Any] | None] = [None] * len(tool_uses)
        try:
            for _ in tool_uses:
                index, use, (text, is_error) = await queue.get()
                ordered[index] = _result_block(use["id"], text, is_error)
                yield {
                    "type": "qlaud.tool_dispatch_done",
                    "tool_use_id": use["id"],
                    "name": use["name"],
                    "iteration": iteration,
                    "is_error": is_error,
                    "output": text,
                }
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
        results.extend(b for b in ordered if b is not None)

    # --- persistence ------------------------------------------------------------------------

    def _persist(self, messages: list[NewMessage]) -> list[Message]:
        spec = self.spec
        if spec.thread is None:
            return []
        stored = self.deps.threads.append_messages(
            spec.principal.account_id, spec.thread.id, messages, self.deps.clock.now_ms()
        )
        self._to_index.extend(m for m in stored if m.kind in ("user", "assistant"))
        return stored

    def _retract(self, user_message: Message) -> None:
        """The first call failed before the model said anything: take the user turn back, so the
        failed request changes nothing and a retry does not send the same text twice."""
        spec = self.spec
        if self.deps.threads.retract_last_message(spec.principal.account_id, spec.thread.id, user_message.seq):
            self._to_index = [m for m in self._to_index if m.seq != user_message.seq]

    def _append_assistant(self, message: dict[str, Any], *, has_tools: bool) -> None:
        self.result.message = message
        self._history.append({"role": "assistant", "content": message["content"]})
        kind = "tool_use" if has_tools else "assistant"
        stored = self._persist(
            [NewMessage("assistant", message["content"], kind, model=self.spec.model.id, request_id=self.spec.request_id)]
        )
        if stored:
            self.result.assistant_seq = stored[-1].seq

    def _append_tool_results(self, blocks: list[dict[str, Any]]) -> None:
        self._history.append({"role": "user", "content": blocks})
        self._persist([NewMessage("user", blocks, "tool_result", request_id=self.spec.request_id)])

    async def _index(self) -> None:
        if self.deps.indexer is None or not self._to_index:
            return
        batch, self._to_index = self._to_index, []
        # Local mode indexes before the turn completes (API.md §9). Embedding a turn's two
        # messages is well under a millisecond of CPU: inline beats a thread hop under the GIL.
        self.deps.indexer.index_messages(batch)

    # --- events -----------------------------------------------------------------------------

    def _fail(self, err: GatewayError) -> None:
        self.result.error = err
        self.result.incomplete = True

    def _error_event(self, err: GatewayError | None, iteration: int) -> dict[str, Any]:
        err = err or UpstreamError("the model call failed")
        return {"type": "qlaud.error", "error": {"type": err.type, "message": err.message}, "iteration": iteration}

    def _done_event(self) -> dict[str, Any]:
        r = self.result
        return {
            "type": "qlaud.done",
            "thread_id": self.spec.thread.id if self.spec.thread else None,
            "seq": r.assistant_seq,
            "iterations": r.iterations,
            "hit_max_iterations": r.hit_max_iterations,
            "incomplete": r.incomplete,
            "cost_micros": r.cost_micros,
            "usage": r.usage.as_dict(),
        }

    def final_message(self) -> dict[str, Any]:
        """The non-streaming answer: the last assistant message with usage summed over calls."""
        message = dict(self.result.message or {"content": [], "stop_reason": None})
        message.setdefault("id", f"msg_{self.spec.request_id}")
        message.update(type="message", role="assistant", model=self.spec.model.id)
        message.setdefault("stop_sequence", None)
        message["usage"] = self.result.usage.as_dict()
        return message


def _with_model(event: dict[str, Any], model_id: str) -> dict[str, Any]:
    message = dict(event.get("message") or {})
    message["model"] = model_id
    return {**event, "message": message}


def _result_block(tool_use_id: str, text: str, is_error: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": text}
    if is_error:
        block["is_error"] = True
    return block
