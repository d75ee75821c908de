"""The non-default options in one synth: a production stage on x86_64 with a managed OpenSearch
domain, a custom domain, CORS, an alarm topic and a catalog override. Still nag- and lint-clean."""

from __future__ import annotations

import json

import pytest

from tests.infra.synth import Synth, cfn_lint_errors, nag_findings, synthesize

pytestmark = pytest.mark.slow
STACK = "Threadgate-variant"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:threadgate-alarms"


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(
        tmp_path_factory, STACK,
        stage="prod", architecture="x86_64", opensearch="domain",
        domainName="llm.example.com", certificateArn="arn:aws:acm:eu-west-1:123456789012:certificate/abc",
        corsOrigins=["https://app.example.com"], alarmTopicArn=TOPIC,
        modelsFile="layers/threadgate/python/threadgate/catalog/models.json",
    )


def test_variant_is_nag_and_lint_clean(variant):
    assert nag_findings(variant) == []
    assert variant.failure is None
    assert cfn_lint_errors(variant, STACK) == []


def test_production_stage_protects_and_keeps_its_data(variant):
    tables = variant.of_type("AWS::DynamoDB::Table").values()
    assert all(t["Properties"]["DeletionProtectionEnabled"] is True for t in tables)
    assert {t["DeletionPolicy"] for t in tables} == {"Retain"}
    (domain,) = variant.of_type("AWS::OpenSearchService::Domain").values()
    assert domain["Properties"]["ClusterConfig"]["ZoneAwarenessEnabled"] is True
    assert domain["Properties"]["NodeToNodeEncryptionOptions"]["Enabled"] is True


def test_x86_functions_use_the_x86_web_adapter_and_search_the_domain(variant):
    functions = [f["Properties"] for f in variant.of_type("AWS::Lambda::Function").values()
                 if f["Properties"].get("Runtime") == "python3.12"]
    assert {tuple(f["Architectures"]) for f in functions} == {("x86_64",)}
    stream = next(f for f in functions if f["Handler"] == "run.sh")
    assert ":layer:LambdaAdapterLayerX86:" in json.dumps(stream["Layers"])
    env = stream["Environment"]["Variables"]
    assert env["THREADGATE_OPENSEARCH_SERVICE"] == "es"
    assert env["THREADGATE_MODELS_FILE"] == "/opt/models.json"
    assert not variant.of_type("AWS::OpenSearchServerless::Collection")


def test_custom_domain_cors_and_alarm_actions(variant):
    (name,) = variant.of_type("AWS::ApiGateway::DomainName").values()
    assert name["Properties"]["DomainName"] == "llm.example.com"
    assert name["Properties"]["EndpointConfiguration"]["Types"] == ["REGIONAL"]
    methods = variant.of_type("AWS::ApiGateway::Method").values()
    options = [m for m in methods if m["Properties"]["HttpMethod"] == "OPTIONS"]
    assert options and "https://app.example.com" in json.dumps(options[0])
    alarms = variant.of_type("AWS::CloudWatch::Alarm").values()
    assert alarms and all(a["Properties"]["AlarmActions"] == [TOPIC] for a in alarms)
