"""The Lambda entry points, invoked in-process the way Lambda would, against moto.

The environment is what the CDK stack gives each function (THREADGATE_MODE=aws, table names,
secret names, Powertools settings); the runtime is built by `get_runtime()` from it, as on AWS.
Only search's edges are swapped (no Bedrock/OpenSearch here): the indexer runs the offline
embedder and the local vector index behind the same `Indexer`.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from moto import mock_aws

from threadgate.stores.dynamodb.schema import TABLES

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
TABLE_NAMES = {spec.settings_field: f"tg-handlers-{spec.logical.replace('_', '-')}" for spec in TABLES.values()}


@dataclass
class LambdaContext:
    function_name: str = "threadgate-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:threadgate-test"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"


def load_handler(name: str) -> Any:
    """A fresh copy of functions/<name>/<name>_handler.py (module state must not leak between tests)."""
    path = ROOT / "functions" / name / f"{name}_handler.py"
    spec = importlib.util.spec_from_file_location(f"{name}_handler_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rest_event(method: str, path: str, *, key: str | None = None, body: Any = None,
               query: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event for the greedy `/{proxy+}` resource of stage `dev`."""
    headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com", "User-Agent": "curl/8.5.0",
               "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "Accept": "*/*"}
    if key:
        headers["x-api-key"] = key
    if body is not None:
        headers["Content-Type"] = "application/json"
    request_id = str(uuid.uuid4())
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123", "resourcePath": "/{proxy+}", "httpMethod": method,
            "extendedRequestId": "Qm3xLEXAMPLE=", "requestTime": "27/Nov/2026:01:00:00 +0000",
            "path": f"/dev{path}", "accountId": ACCOUNT, "protocol": "HTTP/1.1", "stage": "dev",
            "domainPrefix": "abc123", "requestTimeEpoch": 1795741200000, "requestId": request_id,
            "identity": {"sourceIp": "203.0.113.9", "userAgent": "curl/8.5.0"},
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "apiId": "abc123",
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def scheduled_event() -> dict[str, Any]:
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
        "account": ACCOUNT, "time": "2026-11-27T01:00:00Z", "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/threadgate-sweeper"], "detail": {},
    }


class Api:
    """Calls the api function's handler like API Gateway does and decodes the proxy response."""

    def __init__(self) -> None:
        self.module = load_handler("api")

    def __call__(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, str], Any]:
        answer = self.module.handler(rest_event(method, path, **kw), LambdaContext(function_name="threadgate-api"))
        body = answer["body"]
        if answer.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
        return answer["statusCode"], headers, json.loads(body) if body else None


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto + the environment CDK gives the functions; yields the runtime the handlers will use."""
    import threadgate.config
    import threadgate.runtime
    from threadgate.stores.dynamodb import create_tables

    for name, value in {
        "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "THREADGATE_MODE": "aws", "THREADGATE_PROVIDER_SECRETS_PREFIX": "threadgate-test/providers/",
        "THREADGATE_LOCAL_MODEL_WORD_DELAY_MS": "0", "POWERTOOLS_SERVICE_NAME": "threadgate",
        "POWERTOOLS_METRICS_NAMESPACE": "Threadgate", "POWERTOOLS_TRACE_DISABLED": "true",
        **{f"THREADGATE_{field.upper()}": table for field, table in TABLE_NAMES.items()},
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("THREADGATE_OPENSEARCH_ENDPOINT", raising=False)
    with mock_aws():
        monkeypatch.setenv("THREADGATE_WEBHOOK_KMS_KEY_ID", boto3.client("kms").create_key()["KeyMetadata"]["KeyId"])
        threadgate.config.get_settings.cache_clear()
        monkeypatch.setattr(threadgate.runtime, "_runtime", None)
        create_tables(boto3.client("dynamodb"), threadgate.config.get_settings())
        runtime = threadgate.runtime.get_runtime()
        try:
            yield runtime
        finally:
            close_on_lambda_loop(runtime)
            runtime.stores.close()
            threadgate.config.get_settings.cache_clear()


def close_on_lambda_loop(runtime: Any) -> None:
    """Close the providers' pools on the loop the handlers ran on: Mangum and Powertools' batch
    processor (LAMBDA_TASK_ROOT set) use the thread's event loop, kept across invocations."""
    loop = asyncio.get_event_loop_policy().get_event_loop()
    if not loop.is_closed() and not loop.is_running():
        loop.run_until_complete(runtime.aclose_upstreams())


@pytest.fixture
def admin_key(aws: Any) -> str:
    from threadgate.bootstrap import ensure_first_admin

    secret = ensure_first_admin(aws.stores, aws.clock, aws.settings)
    assert secret
    return secret


# --- api -------------------------------------------------------------------------------------


def test_api_handler_serves_the_catalog_to_a_valid_key(aws, admin_key):
    status, headers, body = Api()("GET", "/v1/models", key=admin_key)
    assert status == 200, body
    assert body["object"] == "list"
    # No provider secret has a value in this account, so only the offline model is served.
    assert [m["provider"] for m in body["data"]] == ["local"]
    assert headers.get("request-id")


def test_api_handler_mints_a_key_that_works_on_the_next_invocation(aws, admin_key):
    api = Api()
    status, _, minted = api("POST", "/v1/keys", key=admin_key, body={"name": "alice app", "max_spend_usd": 5})
    assert status == 201, minted
    assert minted["secret"].startswith("qlk_live_") and minted["scope"] == "standard"
    status, _, me = api("GET", "/v1/key", key=minted["secret"])
    assert status == 200 and me["id"] == minted["id"] and me["name"] == "alice app"
    status, _, denied = api("GET", "/v1/keys", key=minted["secret"])
    assert status == 403 and denied["error"]["type"] == "permission_error"


def test_api_handler_refuses_a_missing_key_with_the_error_envelope(aws):
    status, _, body = Api()("GET", "/v1/models")
    assert status == 401
    assert body == {"type": "error", "error": {"type": "authentication_error", "message": body["error"]["message"]}}


def test_api_handler_serves_the_console_as_text_with_its_csp_under_a_stage(aws, admin_key):
    handler = load_handler("api").handler
    context = LambdaContext(function_name="threadgate-api")
    redirect = handler(rest_event("GET", "/console"), context)
    assert redirect["statusCode"] == 308 and redirect["headers"]["location"] == "console/"  # → /dev/console/
    for path, kind in (("/console/", "text/html"), ("/console/js/app.js", "text/javascript"),
                       ("/console/vendor/chart.umd.min.js", "text/javascript")):
        answer = handler(rest_event("GET", path), context)
        headers = {k.lower(): v for k, v in answer["headers"].items()}
        assert answer["statusCode"] == 200 and headers["content-type"].startswith(kind), path
        assert answer["isBase64Encoded"] is False, path  # text through API Gateway, no binary media types
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
    # The page's calls are the public API's (here: the overview's grouped usage), on the same function.
    status, _, usage = Api()("GET", "/v1/usage", key=admin_key, query={"group_by": "day,model"})
    assert status == 200 and usage["groups"] == []


# --- sweeper ---------------------------------------------------------------------------------


def test_sweeper_settles_a_crashed_reservation_once_at_its_estimate(aws, admin_key):
    from threadgate.domain.models import Reservation

    api = Api()
    _, _, key = api("POST", "/v1/keys", key=admin_key, body={"name": "crashy", "max_spend_usd": 1})
    account_id = aws.stores.keys.first_account().id
    now = aws.clock.now_ms()
    aws.stores.ledger.reserve(Reservation(
        "res_crashed", key["id"], account_id, 5000, now - 10, now - 1, "req_crashed", "threadgate-local", "local"
    ))
    sweeper = load_handler("sweeper")
    assert sweeper.handler(scheduled_event(), LambdaContext(function_name="threadgate-sweeper")) == {"settled": 1}
    assert sweeper.handler(scheduled_event(), LambdaContext(function_name="threadgate-sweeper")) == {"settled": 0}
    status, _, usage = api("GET", f"/v1/keys/{key['id']}/usage", key=admin_key)
    assert status == 200, usage
    assert (usage["spent_micros"], usage["reserved_micros"]) == (5000, 0)
    assert [event["status"] for event in usage["events"]] == ["expired"]


# --- indexer ---------------------------------------------------------------------------------


def _stream_record(n: int, item: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """One DynamoDB stream record (INSERT, NEW_IMAGE) as the Lambda event source delivers it."""
    return {
        "eventID": f"{n:032x}", "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
        "awsRegion": REGION, "eventSourceARN": stream_arn,
        "dynamodb": {"ApproximateCreationDateTime": 1795741200, "Keys": {"pk": item["pk"], "sk": item["sk"]},
                     "NewImage": item, "SequenceNumber": f"{n:021d}", "SizeBytes": len(json.dumps(item)),
                     "StreamViewType": "NEW_IMAGE"},
    }


def _stream_batch(table_name: str) -> list[dict[str, Any]]:
    """What the threads table's stream holds after a turn: one INSERT per item written (moto
    has no DynamoDB Streams API, so the records are built from the items themselves)."""
    client = boto3.client("dynamodb")
    stream_arn = client.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
    items = client.scan(TableName=table_name)["Items"]
    return [_stream_record(n, item, stream_arn) for n, item in enumerate(items, start=1)]


def test_indexer_handler_indexes_a_stream_batch_and_reports_only_the_poison_record(aws, admin_key, tmp_path):
    from threadgate.search.embedders import load_local_embedder
    from threadgate.search.indexing import Indexer
    from threadgate.search.local_index import LocalVectorIndex

    embedder = load_local_embedder()
    aws.indexer = Indexer(embedder, LocalVectorIndex(tmp_path, dimensions=embedder.dimensions))
    api = Api()
    _, _, thread = api("POST", "/v1/threads", key=admin_key, body={"end_user_id": "alice"})
    status, _, turn = api("POST", f"/v1/threads/{thread['id']}/messages", key=admin_key,
                          body={"model": "threadgate-local", "max_tokens": 64,
                                "content": "My parcel arrived damaged, I want a refund"})
    assert status == 200, turn
    search = {"q": "refund for a broken parcel", "thread_id": thread["id"]}
    assert api("GET", "/v1/search", key=admin_key, query=search)[2]["data"] == []  # AWS: the stream indexes

    records = _stream_batch(TABLE_NAMES["threads_table"])
    assert sum(r["dynamodb"]["Keys"]["sk"]["S"].startswith("MSG#") for r in records) == 2  # user + assistant
    # A message item the indexer cannot decode (a bug, a schema drift) must not block the rest.
    images = [r["dynamodb"]["NewImage"] for r in records]
    user_item = next(image for image in images if image.get("role") == {"S": "user"})
    broken = {**user_item, "sk": {"S": "MSG#000000000099"}, "content": {"S": "{not json"}}
    poison = _stream_record(len(records) + 1, broken, records[0]["eventSourceARN"])
    indexer = load_handler("indexer")
    answer = indexer.handler({"Records": [poison, *records]}, LambdaContext(function_name="threadgate-indexer"))
    assert answer == {"batchItemFailures": [{"itemIdentifier": poison["dynamodb"]["SequenceNumber"]}]}

    _, _, found = api("GET", "/v1/search", key=admin_key, query=search)
    assert [(hit["thread_id"], hit["role"]) for hit in found["data"]][:1] == [(thread["id"], "user")]


# --- bootstrap (deploy-time custom resource) -------------------------------------------------


def _custom_resource_event(request_type: str) -> dict[str, Any]:
    event = {
        "RequestType": request_type, "ServiceToken": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:provider",
        "ResponseURL": "https://cloudformation-custom-resource-response.s3.amazonaws.com/x", "StackId":
        f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/Threadgate-dev/1", "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "BootstrapRun", "ResourceType": "Custom::ThreadgateBootstrap",
        "ResourceProperties": {"Index": "threadgate-messages", "Dimensions": "256"},
    }
    if request_type != "Create":
        event["PhysicalResourceId"] = "threadgate-bootstrap"
    return event


def test_bootstrap_creates_the_index_and_stores_the_first_admin_key_only_in_secrets_manager(
    aws, monkeypatch, capsys
):
    import threadgate.config
    import threadgate.runtime
    from tests.fakes.fake_opensearch import running_fake_opensearch

    secrets = boto3.client("secretsmanager")
    secret_name = "threadgate-test/admin-key"
    secrets.create_secret(Name=secret_name, Description="created empty by CDK")
    with running_fake_opensearch(serverless=True) as fake:
        for name, value in {"THREADGATE_OPENSEARCH_ENDPOINT": fake.url, "THREADGATE_OPENSEARCH_SERVICE": "aoss",
                            "THREADGATE_ADMIN_SECRET_NAME": secret_name}.items():
            monkeypatch.setenv(name, value)
        threadgate.config.get_settings.cache_clear()
        monkeypatch.setattr(threadgate.runtime, "_runtime", None)
        bootstrap = load_handler("bootstrap")
        context = LambdaContext(function_name="threadgate-bootstrap")

        answer = bootstrap.handler(_custom_resource_event("Create"), context)
        assert answer == {"PhysicalResourceId": "threadgate-bootstrap"}
        assert "threadgate-messages" in fake.indices
        admin_key = secrets.get_secret_value(SecretId=secret_name)["SecretString"]
        assert admin_key.startswith("qlk_live_")

        # Later deploys: nothing new is minted, the stored key stays the admin key.
        bootstrap.handler(_custom_resource_event("Update"), context)
        bootstrap.handler(_custom_resource_event("Delete"), context)
        versions = secrets.list_secret_version_ids(SecretId=secret_name)["Versions"]
        assert len(versions) == 1
        status, _, me = Api()("GET", "/v1/key", key=admin_key)
        assert status == 200 and me["scope"] == "admin"
    logged = capsys.readouterr()
    assert admin_key not in logged.out + logged.err


def _run_hooks(hooks: list[Any], *, reverse: bool) -> None:
    """Run registered SnapStart hooks the way the Lambda Python runtime does: before-snapshot
    hooks in reverse order of registration, after-restore hooks in order."""
    for func, args, kwargs in (reversed(hooks) if reverse else list(hooks)):
        func(*args, **kwargs)
    hooks.clear()


def test_api_handler_under_snapstart_snapshots_code_only_and_connects_after_restore(aws, admin_key, monkeypatch):
    import random
    import sys

    import snapshot_restore_py

    import threadgate.runtime
    from threadgate.api.app import ROUTE_MODULES

    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])
    monkeypatch.setattr(threadgate.runtime, "_runtime", None)  # a new environment, initializing
    api = Api()
    app = api.module.app
    _run_hooks(snapshot_restore_py.get_before_snapshot(), reverse=True)
    # The snapshot holds every route module, but no runtime: no connection, no provider key.
    assert all(f"threadgate.api.routes.{name}" in sys.modules for name in ROUTE_MODULES)
    assert getattr(app.state, "runtime", None) is None and threadgate.runtime._runtime is None
    snapshotted = random.getstate()

    _run_hooks(snapshot_restore_py.get_after_restore(), reverse=False)
    restored = threadgate.runtime._runtime
    try:
        assert restored is not None and app.state.runtime is restored  # built before the first request
        assert random.getstate() != snapshotted  # each restored environment draws its own numbers
        status, _, body = api("GET", "/v1/models", key=admin_key)
        assert status == 200 and body["object"] == "list"
        assert threadgate.runtime._runtime is restored
    finally:
        restored.stores.close()


def test_loop_handler_under_snapstart_builds_the_runtime_after_restore_not_before(aws, monkeypatch):
    import random

    import snapshot_restore_py

    import threadgate.runtime

    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])
    monkeypatch.setattr(threadgate.runtime, "_runtime", None)
    load_handler("loop")
    _run_hooks(snapshot_restore_py.get_before_snapshot(), reverse=True)
    assert threadgate.runtime._runtime is None  # no store client or provider key in the snapshot
    snapshotted = random.getstate()
    _run_hooks(snapshot_restore_py.get_after_restore(), reverse=False)
    restored = threadgate.runtime._runtime
    try:
        assert restored is not None and threadgate.runtime.get_runtime() is restored  # what each step uses
        assert random.getstate() != snapshotted  # provider retry jitter differs between environments
    finally:
        restored.stores.close()


# --- what the Lambda layers do NOT ship ------------------------------------------------------

LAMBDA_IMPORT_CHECK = r"""
import importlib.abc, importlib.util, os, sys

blocked = set(sys.argv[1].split(","))

class LocalOnly(importlib.abc.MetaPathFinder):
    # The deps layer stops at requirements.txt's "local mode only" marker.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is local-only: not in the Lambda deps layer")

sys.meta_path.insert(0, LocalOnly())
handlers = {}
for name in ("api", "jobs", "indexer", "sweeper", "bootstrap", "loop", "webhooks"):
    path = os.path.join("functions", name, f"{name}_handler.py")
    spec = importlib.util.spec_from_file_location(f"{name}_handler", path)
    handlers[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handlers[name])
from threadgate import snapstart
snapstart.before_snapshot(handlers["api"].app)  # every route module and runtime adapter (SnapStart)
import threadgate.api.asgi  # what run.sh starts on the stream function
import threadgate.domain.steps, threadgate.webhooks.delivery  # what the loop and webhooks functions import late
from threadgate.runtime import build
from threadgate.config import Settings
runtime = build(Settings())
assert runtime.indexer is not None, "no search indexer in AWS mode"
assert type(runtime.tool_loop).__name__ == "StepFunctionsToolLoop", "tool turns on AWS run as executions"
print("ok")
"""


def test_aws_code_paths_import_nothing_the_lambda_layer_leaves_out():
    import subprocess
    import sys

    from scripts.build_layers import LOCAL_ONLY_MARKER, _distribution

    text = (ROOT / "requirements.txt").read_text()
    local_only = [_distribution(line) for line in text.split(LOCAL_ONLY_MARKER, 1)[1].splitlines()[1:]
                  if line.strip() and not line.startswith("#")]
    assert "numpy" in local_only
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'layers/threadgate/python'}:{ROOT}",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "THREADGATE_MODE": "aws",
           "THREADGATE_OPENSEARCH_ENDPOINT": "https://search.example.invalid", "THREADGATE_OPENSEARCH_SERVICE": "aoss",
           **{f"THREADGATE_{field.upper()}": table for field, table in TABLE_NAMES.items()}}
    done = subprocess.run([sys.executable, "-c", LAMBDA_IMPORT_CHECK, ",".join(local_only)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
