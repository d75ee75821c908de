"""The composition root: a provider key set in Secrets Manager after deploy is picked up."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from threadgate.config import Settings
from threadgate.domain.errors import NotFound
from threadgate.runtime import Runtime, build_providers, load_catalog
from threadgate.stores.sqlite import open_sqlite


def test_a_provider_key_set_after_deploy_is_used_without_a_cold_start(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        sm.create_secret(Name="tg-dev/providers/anthropic")  # created empty, as the stack does
        settings = Settings(mode="aws", provider_secrets_prefix="tg-dev/providers/")
        rt = Runtime(settings=settings, stores=open_sqlite(":memory:"), catalog=load_catalog(settings),
                     providers=build_providers(settings))
        with pytest.raises(NotFound):
            rt.model("claude-haiku-4-5")
        assert rt.model("threadgate-local").provider == "local"

        sm.put_secret_value(SecretId="tg-dev/providers/anthropic", SecretString="sk-ant-set-later")
        assert "claude-haiku-4-5" not in [m.id for m in rt.available_models()]  # rechecked at most every 5 min
        rt._providers_checked_at -= 301
        assert rt.model("claude-haiku-4-5").provider == "anthropic"


@pytest.mark.parametrize("mode, choice, durable", [
    ("aws", None, True), ("local", None, False), ("test", None, False),
    ("aws", "inline", False), ("local", "stepfunctions", True),
])
def test_tool_turns_continue_as_executions_on_aws_and_inline_elsewhere_unless_told(monkeypatch, mode, choice, durable):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = Settings(mode=mode, tool_loop=choice, tool_loop_state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:x")
    rt = Runtime(settings=settings, stores=open_sqlite(":memory:"), catalog=load_catalog(settings), providers={})
    assert (type(rt.tool_loop).__name__ == "StepFunctionsToolLoop") is durable
    assert durable or rt.tool_loop is None
