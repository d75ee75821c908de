"""What `cdk deploy` would create, asserted on the synthesized template (one synth per session)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra.constructs.api import CONSOLE_ROUTES, STREAMING_ROUTES
from infra.constructs.functions import RUNTIME
from threadgate.config import Settings
from tests.infra.synth import STACK_NAME, cfn_lint_errors, nag_findings
from threadgate.stores.dynamodb.schema import TABLES

pytestmark = pytest.mark.slow


def _methods(synth) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, resource path) → the method's properties, paths rebuilt from ParentId refs."""
    resources = synth.of_type("AWS::ApiGateway::Resource")
    rest_api = next(iter(synth.of_type("AWS::ApiGateway::RestApi")))

    def path(resource_ref: Any) -> str:
        if isinstance(resource_ref, dict) and "Fn::GetAtt" in resource_ref:
            assert resource_ref["Fn::GetAtt"] == [rest_api, "RootResourceId"]
            return ""
        logical = resource_ref["Ref"]
        props = resources[logical]["Properties"]
        return f"{path(props['ParentId'])}/{props['PathPart']}"

    methods = {}
    for props in (r["Properties"] for r in synth.of_type("AWS::ApiGateway::Method").values()):
        methods[(props["HttpMethod"], path(props["ResourceId"]) or "/")] = props
    return methods


def _target(integration: dict[str, Any]) -> tuple[str, str]:
    """(logical id of the function or alias invoked, invocation kind) from an AWS_PROXY
    integration URI."""
    parts = integration["Uri"]["Fn::Join"][1]
    refs = [p["Fn::GetAtt"][0] if "Fn::GetAtt" in p else p.get("Ref") for p in parts if isinstance(p, dict)]
    target = next(ref for ref in refs if ref and not ref.startswith("AWS::"))  # not a pseudo parameter
    return target, parts[-1]


def _function(synth, name: str) -> dict[str, Any]:
    return synth.resources[synth.logical_id(synth.stack.app_functions[name].function)]["Properties"]


def _functions(synth) -> dict[str, dict[str, Any]]:
    return {name: _function(synth, name) for name in synth.stack.app_functions}


# --- API Gateway -----------------------------------------------------------------------------


def test_streaming_routes_stream_from_the_web_adapter_function_for_up_to_15_minutes(synth):
    methods = _methods(synth)
    stream_fn = synth.logical_id(synth.stack.stream_fn.function)
    for route in STREAMING_ROUTES:
        integration = methods[route]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert integration["ResponseTransferMode"] == "STREAM", route
        assert integration["TimeoutInMillis"] == 15 * 60 * 1000, route
        assert _target(integration) == (stream_fn, "/response-streaming-invocations"), route
        assert "/2021-11-15/functions/" in json.dumps(integration["Uri"])


def test_every_other_method_is_a_buffered_proxy_to_the_mangum_function(synth):
    api_fn = synth.logical_id(synth.stack.api_fn.invocable)  # its SnapStart alias
    others = {key: m for key, m in _methods(synth).items() if key not in STREAMING_ROUTES}
    assert ("ANY", "/") in others and ("ANY", "/{proxy+}") in others
    # GET on a streaming resource (history) must still reach the app.
    assert ("ANY", "/v1/threads/{id}/messages") in others
    for key, method in others.items():
        integration = method["Integration"]
        assert integration.get("ResponseTransferMode", "BUFFERED") == "BUFFERED", key
        assert _target(integration) == (api_fn, "/invocations"), key


def test_console_page_and_files_are_buffered_routes_of_the_mangum_function(synth):
    methods = _methods(synth)
    api_fn = synth.logical_id(synth.stack.api_fn.invocable)
    assert CONSOLE_ROUTES == (("ANY", "/console"), ("ANY", "/console/{proxy+}"))
    for route in CONSOLE_ROUTES:
        integration = methods[route]["Integration"]
        assert integration["Type"] == "AWS_PROXY" and "ResponseTransferMode" not in integration, route
        assert _target(integration) == (api_fn, "/invocations"), route
        assert methods[route]["AuthorizationType"] == "NONE"  # the page loads; its API calls carry the key


def test_no_path_dead_ends_where_a_streaming_route_branches_off(synth):
    """API Gateway never falls back to a parent's {proxy+}: each resource created for a streaming
    route must answer itself and (unless it has a path-variable child) proxy what lies below."""
    methods = _methods(synth)
    paths = {path for _, path in methods}
    for path in paths - {"/"}:
        assert ("ANY", path) in methods, f"{path} has no ANY method"
        if not path.endswith("{proxy+}"):
            children = {p for p in paths if p.rsplit("/", 1)[0] == path}
            assert any(c.rsplit("/", 1)[1].startswith("{") for c in children), f"nothing below {path}"
    assert ("ANY", "/v1/models") not in methods  # reached through /v1/{proxy+}
    assert ("ANY", "/v1/{proxy+}") in methods


def test_stage_is_regional_throttled_and_access_logged_without_body_logging(synth):
    (api,) = synth.of_type("AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["EndpointConfiguration"]["Types"] == ["REGIONAL"]
    (stage,) = synth.of_type("AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["AccessLogSetting"]["DestinationArn"]
    assert props["TracingEnabled"] is True
    (settings,) = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] > 0 and settings["ThrottlingBurstLimit"] > 0
    assert settings["DataTraceEnabled"] is False  # request bodies carry key secrets


def test_only_one_invoke_permission_per_function(synth):
    permissions = synth.of_type("AWS::Lambda::Permission").values()
    api_principals = [p for p in permissions if p["Properties"]["Principal"] == "apigateway.amazonaws.com"]
    assert len(api_principals) == 2


# --- Lambda functions ------------------------------------------------------------------------


def test_stream_function_runs_uvicorn_under_the_pinned_lambda_web_adapter(synth):
    props = _function(synth, "stream")
    assert props["Handler"] == "run.sh"
    env = props["Environment"]["Variables"]
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    layers = json.dumps(props["Layers"])
    version = synth.stack.config.lwa_layer_version
    assert f":753240598075:layer:LambdaAdapterLayerArm64:{version}" in layers
    assert props["Timeout"] == 900
    asset = synth.outdir / f"asset.{props['Code']['S3Key'].removesuffix('.zip')}"
    run_sh = asset / "run.sh"
    assert run_sh.stat().st_mode & 0o111, "run.sh must be executable"
    assert "uvicorn threadgate.api.asgi:app" in run_sh.read_text()


def test_api_function_is_the_mangum_handler(synth):
    props = _function(synth, "api")
    assert props["Handler"] == "api_handler.handler"
    asset = synth.outdir / f"asset.{props['Code']['S3Key'].removesuffix('.zip')}"
    assert "Mangum(" in (asset / "api_handler.py").read_text()
    assert props["Timeout"] <= 29  # API Gateway's buffered integration limit


def _snapstarted_alias(synth, name: str) -> str:
    """The function's SnapStart setup, asserted; the logical id of the alias callers must invoke
    (SnapStart restores only published versions: a call to the bare function runs $LATEST,
    initialized from scratch)."""
    function = synth.logical_id(synth.stack.app_functions[name].function)
    props = _function(synth, name)
    assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}, name
    # What SnapStart refuses: EFS, ephemeral storage over 512 MB, provisioned concurrency.
    assert "FileSystemConfigs" not in props and props.get("EphemeralStorage", {"Size": 512})["Size"] <= 512
    versions = {k: v for k, v in synth.of_type("AWS::Lambda::Version").items()
                if v["Properties"]["FunctionName"] == {"Ref": function}}
    (version,) = versions.values()
    assert version["DeletionPolicy"] == "Delete"  # a replaced version's snapshot is not kept (and charged)
    alias_id = synth.logical_id(synth.stack.app_functions[name].invocable)
    alias = synth.resources[alias_id]["Properties"]
    assert alias["FunctionName"] == {"Ref": function} and alias["Name"] == "live"
    assert alias["FunctionVersion"] == {"Fn::GetAtt": [next(iter(versions)), "Version"]}
    assert "ProvisionedConcurrencyConfig" not in alias
    return alias_id


def test_api_function_snapstarts_and_api_gateway_invokes_its_alias(synth):
    alias_id = _snapstarted_alias(synth, "api")
    targets = {_target(m["Integration"])[0] for m in _methods(synth).values()}
    assert alias_id in targets and synth.logical_id(synth.stack.api_fn.function) not in targets
    # API Gateway may invoke the alias (the permission names its ARN, not the function's).
    (permission,) = [p["Properties"] for p in synth.of_type("AWS::Lambda::Permission").values()
                     if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
                     and p["Properties"]["FunctionName"] == {"Ref": alias_id}]
    assert permission["Action"] == "lambda:InvokeFunction"


def test_loop_function_snapstarts_and_the_state_machine_invokes_its_alias(synth):
    alias_id = _snapstarted_alias(synth, "loop")
    definition = json.loads(_state_machine(synth)["DefinitionString"])
    tasks = [s for s in definition["States"].values() if s.get("Resource") == "arn:aws:states:::lambda:invoke"]
    assert tasks and all(t["Parameters"]["FunctionName"] == "${StepFunctionArn}" for t in tasks)
    assert _state_machine(synth)["DefinitionSubstitutions"]["StepFunctionArn"] == {"Ref": alias_id}
    bare = synth.logical_id(synth.stack.loop_fn.function)
    assert _roles_allowed(synth, "lambda:InvokeFunction", on=bare) == set()  # only the alias


def test_only_the_api_and_loop_functions_snapstart(synth):
    """The others, and why (docs/deploy.md "Cold starts"): the stream function's pinned Web
    Adapter cannot relay the runtime hooks to uvicorn; the workers' cold starts keep no one
    waiting and would cost a snapshot per deploy."""
    for name, props in _functions(synth).items():
        assert ("SnapStart" in props) == (name in ("api", "loop")), name
    for name, function in synth.stack.app_functions.items():
        assert (function.invocable is function.function) == (name not in ("api", "loop")), name


def test_functions_are_python312_arm64_on_both_layers_with_active_tracing(synth):
    layer_ids = {synth.logical_id(synth.stack.layers.app), synth.logical_id(synth.stack.layers.deps)}
    for name, props in _functions(synth).items():
        assert props["Runtime"] == RUNTIME.name == "python3.12", name
        assert props["Architectures"] == ["arm64"], name
        assert layer_ids <= {layer.get("Ref") for layer in props["Layers"]}, name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert props["LoggingConfig"]["LogGroup"], name


def test_function_environment_names_are_settings_fields_and_hold_no_secrets(synth):
    fields = set(Settings.model_fields)
    for name, props in _functions(synth).items():
        env = props["Environment"]["Variables"]
        for key in env:
            if key.startswith("THREADGATE_"):
                assert key.removeprefix("THREADGATE_").lower() in fields, f"{name}: {key}"
            else:
                assert key.startswith(("POWERTOOLS_", "AWS_LWA_", "AWS_LAMBDA_EXEC_WRAPPER")), f"{name}: {key}"
        assert env["THREADGATE_MODE"] == "aws"
        assert env["POWERTOOLS_SERVICE_NAME"] and env["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
        # open_dynamodb needs every table name, whatever the function touches.
        for spec in TABLES.values():
            assert f"THREADGATE_{spec.settings_field.upper()}" in env, f"{name}: {spec.settings_field}"
        assert not {"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "THREADGATE_MASTER_KEY"} & set(env)
    assert "THREADGATE_ADMIN_SECRET_NAME" in _function(synth, "bootstrap")["Environment"]["Variables"]


def _mappings_of(synth, name: str) -> list[dict[str, Any]]:
    function = {"Ref": synth.logical_id(synth.stack.app_functions[name].function)}
    return [m["Properties"] for m in synth.of_type("AWS::Lambda::EventSourceMapping").values()
            if m["Properties"]["FunctionName"] == function]


def test_indexer_reads_the_threads_stream_with_partial_failures_bisect_and_a_dlq(synth):
    (props,) = _mappings_of(synth, "indexer")
    threads = synth.logical_id(synth.stack.data.tables["threads"])
    assert props["EventSourceArn"] == {"Fn::GetAtt": [threads, "StreamArn"]}
    assert props["FunctionName"] == {"Ref": synth.logical_id(synth.stack.indexer_fn.function)}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BisectBatchOnFunctionError"] is True
    dlq = synth.logical_id(synth.stack.indexing.dlq)
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": [dlq, "Arn"]}


def _statements_of(synth, name: str) -> list[dict[str, Any]]:
    role = {"Ref": synth.logical_id(synth.stack.app_functions[name].role)}
    return [st for p in synth.of_type("AWS::IAM::Policy").values() if role in p["Properties"]["Roles"]
            for st in p["Properties"]["PolicyDocument"]["Statement"]]


def _actions(statement: dict[str, Any]) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def test_jobs_queue_is_encrypted_with_a_dlq_and_outlasts_six_worker_timeouts(synth):
    queues = synth.of_type("AWS::SQS::Queue")
    queue = queues[synth.logical_id(synth.stack.jobs.queue)]["Properties"]
    dlq_id = synth.logical_id(synth.stack.jobs.dlq)
    dlq = queues[dlq_id]["Properties"]
    worker_timeout = _function(synth, "jobs")["Timeout"]
    assert worker_timeout == 900
    assert queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] >= 6 * worker_timeout
    assert dlq["VisibilityTimeout"] >= worker_timeout  # the jobs function consumes the DLQ too
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    assert 1 < redrive["maxReceiveCount"] <= 10
    queue_policies = json.dumps(list(synth.of_type("AWS::SQS::QueuePolicy").values()))
    assert queue_policies.count("aws:SecureTransport") >= 3  # indexer DLQ, jobs queue, jobs DLQ


def test_jobs_function_consumes_the_queue_and_its_dlq_reporting_failed_records(synth):
    props = _function(synth, "jobs")
    assert props["Handler"] == "jobs_handler.handler"
    asset = synth.outdir / f"asset.{props['Code']['S3Key'].removesuffix('.zip')}"
    assert "threadgate.background.jobs_worker" in (asset / "jobs_handler.py").read_text()
    mappings = _mappings_of(synth, "jobs")
    sources = {m["EventSourceArn"]["Fn::GetAtt"][0] for m in mappings}
    assert sources == {synth.logical_id(synth.stack.jobs.queue), synth.logical_id(synth.stack.jobs.dlq)}
    for mapping in mappings:
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue_url = {"Ref": synth.logical_id(synth.stack.jobs.queue)}
    for name, env in ((n, p["Environment"]["Variables"]) for n, p in _functions(synth).items()):
        assert env["THREADGATE_JOBS_QUEUE_URL"] == queue_url, name


def test_only_api_and_stream_may_send_jobs_and_only_sendmessage(synth):
    queue_id = synth.logical_id(synth.stack.jobs.queue)
    for name in synth.stack.app_functions:
        on_queue = [st for st in _statements_of(synth, name) if queue_id in json.dumps(st["Resource"])]
        sends = [a for st in on_queue for a in _actions(st) if a == "sqs:SendMessage"]
        if name in ("api", "stream"):
            assert [_actions(st) for st in on_queue] == [["sqs:SendMessage"]], name
        elif name == "jobs":
            actions = {a for st in on_queue for a in _actions(st)}
            assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= actions
            assert not sends
        else:
            assert on_queue == [], name


def test_sweeper_runs_on_a_schedule(synth):
    (rule,) = synth.of_type("AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"].startswith("rate(")
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [synth.logical_id(synth.stack.sweeper_fn.function), "Arn"]}


def test_bootstrap_runs_as_a_custom_resource_after_the_search_collection(synth):
    (custom,) = synth.of_type("Custom::ThreadgateBootstrap").values()
    depends = set(custom.get("DependsOn", []))
    collection = next(iter(synth.of_type("AWS::OpenSearchServerless::Collection")))
    (policy,) = synth.of_type("AWS::OpenSearchServerless::AccessPolicy")
    assert {collection, policy} <= depends
    outputs = json.dumps(synth.template["Outputs"])
    assert "AdminKeySecretName" in outputs and "SecretString" not in outputs


# --- Data ------------------------------------------------------------------------------------


def test_tables_match_the_adapter_schema(synth):
    for logical, spec in TABLES.items():
        props = synth.resources[synth.logical_id(synth.stack.data.tables[logical])]["Properties"]
        attributes = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
        keys = {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]}
        assert keys == ({"HASH": spec.pk, "RANGE": spec.sk} if spec.sk else {"HASH": spec.pk}), logical
        assert attributes[spec.pk] == "S"
        if spec.sk:
            assert attributes[spec.sk] == spec.sk_type, logical
        gsis = {g["IndexName"]: g for g in props.get("GlobalSecondaryIndexes", [])}
        assert set(gsis) == {index.name for index in spec.gsis}, logical
        for index in spec.gsis:
            index_keys = {k["KeyType"]: k["AttributeName"] for k in gsis[index.name]["KeySchema"]}
            assert index_keys == {"HASH": index.pk, "RANGE": index.sk}, (logical, index.name)
            assert attributes[index.sk] == index.sk_type
            assert gsis[index.name]["Projection"] == {"ProjectionType": "ALL"}
        ttl = props.get("TimeToLiveSpecification")
        assert (ttl == {"AttributeName": spec.ttl_attribute, "Enabled": True}) if spec.ttl_attribute else ttl is None
        stream = props.get("StreamSpecification")
        assert (stream == {"StreamViewType": "NEW_IMAGE"}) if spec.stream else stream is None, logical
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["DeletionProtectionEnabled"] is False  # dev stage; other stages: True


def test_no_wildcard_actions_anywhere_and_none_on_tables(synth):
    table_ids = {synth.logical_id(t) for t in synth.stack.data.tables.values()}
    for policy_id, policy in synth.of_type("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert "*" not in actions and not any(a.endswith(":*") for a in actions), policy_id
            if any(t in json.dumps(statement["Resource"]) for t in table_ids):
                assert not any("*" in a for a in actions), (policy_id, actions)
                assert "/index/*" not in json.dumps(statement["Resource"]), policy_id


def test_each_function_may_write_only_the_tables_it_needs(synth):
    def writable(name: str) -> set[str]:
        role = synth.logical_id(synth.stack.app_functions[name].role)
        tables = {synth.logical_id(t): logical for logical, t in synth.stack.data.tables.items()}
        found = set()
        for policy in synth.of_type("AWS::IAM::Policy").values():
            if {"Ref": role} not in policy["Properties"]["Roles"]:
                continue
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                if "dynamodb:PutItem" in statement["Action"]:
                    found |= {logical for tid, logical in tables.items() if tid in json.dumps(statement["Resource"])}
        return found

    assert writable("api") == writable("stream") == set(TABLES)
    assert writable("jobs") == {"jobs", "keys", "usage", "threads", "tools", "runs", "deliveries"}
    assert writable("sweeper") == {"keys", "usage"}
    assert writable("bootstrap") == {"keys"}
    assert writable("indexer") == set()
    assert writable("loop") == {"keys", "usage", "threads", "runs", "jobs"}
    assert writable("webhooks") == {"runs", "deliveries"}


def test_provider_secrets_exist_without_values(synth):
    secrets = synth.of_type("AWS::SecretsManager::Secret").values()
    names = json.dumps([s["Properties"]["Name"] for s in secrets])
    assert "providers/anthropic" in names and "providers/openai" in names and "admin-key" in names
    assert all("SecretString" not in s["Properties"] and "GenerateSecretString" not in s["Properties"]
               for s in secrets)


# --- Durable tool loop (issue #8) -------------------------------------------------------------


def _state_machine(synth) -> dict[str, Any]:
    return synth.resources[synth.logical_id(synth.stack.tool_loop.state_machine)]["Properties"]


def test_tool_loop_is_a_standard_state_machine_deployed_from_the_asl_file(synth):
    from infra.constructs.tool_loop import DEFINITION_FILE

    props = _state_machine(synth)
    assert props["StateMachineType"] == "STANDARD"
    assert props["DefinitionString"] == DEFINITION_FILE.read_text()  # the very file moto executes
    assert props["DefinitionSubstitutions"] == {
        "WebhookQueueUrl": {"Ref": synth.logical_id(synth.stack.tool_loop.queue)},
        "StepFunctionArn": {"Ref": synth.logical_id(synth.stack.loop_fn.invocable)},  # its SnapStart alias
    }
    placeholders = set(re.findall(r"\$\{(\w+)\}", props["DefinitionString"]))
    assert placeholders == set(props["DefinitionSubstitutions"])
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is False  # inputs carry task tokens


def test_webhook_queue_redrives_to_its_dlq_after_four_receives_and_outlasts_its_worker(synth):
    queues = synth.of_type("AWS::SQS::Queue")
    loop = synth.stack.tool_loop
    queue = queues[synth.logical_id(loop.queue)]["Properties"]
    dlq_id = synth.logical_id(loop.dlq)
    dlq = queues[dlq_id]["Properties"]
    worker_timeout = _function(synth, "webhooks")["Timeout"]
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 4}
    assert queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
    assert queue["VisibilityTimeout"] >= 6 * worker_timeout
    assert dlq["VisibilityTimeout"] >= worker_timeout  # the webhooks function consumes the DLQ too
    # The longest webhook (120 s, API.md §7) fits in one invocation.
    assert worker_timeout >= 120 + 30


def test_waiting_for_a_tool_outlasts_every_redelivery_the_worker_can_ask_for(synth):
    from threadgate.background.webhook_worker import MAX_REQUEUE_S

    definition = json.loads(_state_machine(synth)["DefinitionString"])
    deliver = definition["States"]["DispatchTools"]["ItemProcessor"]["States"]["DeliverTool"]
    queue = synth.of_type("AWS::SQS::Queue")[synth.logical_id(synth.stack.tool_loop.queue)]["Properties"]
    worker_timeout = _function(synth, "webhooks")["Timeout"]
    # Between two receives: a requeue backoff (or a dead worker's full visibility timeout), then
    # one invocation; the heartbeat each receive sends must come before the heartbeat timeout.
    assert deliver["HeartbeatSeconds"] > max(MAX_REQUEUE_S, queue["VisibilityTimeout"]) + worker_timeout
    assert deliver["TimeoutSeconds"] >= 3 * MAX_REQUEUE_S + 4 * worker_timeout
    assert deliver["Resource"] == "arn:aws:states:::sqs:sendMessage.waitForTaskToken"


def test_webhooks_function_consumes_the_queue_and_its_dlq_reporting_failed_records(synth):
    props = _function(synth, "webhooks")
    assert props["Handler"] == "webhooks_handler.handler"
    mappings = _mappings_of(synth, "webhooks")
    loop = synth.stack.tool_loop
    assert {m["EventSourceArn"]["Fn::GetAtt"][0] for m in mappings} == {
        synth.logical_id(loop.queue), synth.logical_id(loop.dlq)}
    assert all(m["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings)
    actions = {a for st in _statements_of(synth, "webhooks") for a in _actions(st)}
    assert "sqs:ChangeMessageVisibility" in actions  # the redelivery backoff


def _roles_allowed(synth, action: str, on: str = "") -> set[str]:
    """Names of the roles (function names, or 'state machine') allowed `action` (on a resource
    naming `on`, when given)."""
    roles = {synth.logical_id(fn.role): name for name, fn in synth.stack.app_functions.items()}
    roles[synth.logical_id(synth.stack.tool_loop.state_machine.role)] = "state machine"
    found = set()
    for policy in synth.of_type("AWS::IAM::Policy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        if any(action in _actions(st) and on in json.dumps(st["Resource"]) for st in statements):
            found |= {roles.get(r["Ref"], r["Ref"]) for r in policy["Properties"]["Roles"]}
    return found


def test_only_the_webhook_worker_answers_tasks_and_only_turn_runners_start_runs(synth):
    for action in ("states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"):
        assert _roles_allowed(synth, action) == {"webhooks"}, action
    assert _roles_allowed(synth, "states:StartExecution") == {"stream", "jobs"}
    loop_alias = synth.logical_id(synth.stack.loop_fn.invocable)
    assert _roles_allowed(synth, "lambda:InvokeFunction", on=loop_alias) == {"state machine"}
    machine = synth.logical_id(synth.stack.tool_loop.state_machine)
    for name, props in _functions(synth).items():
        env = props["Environment"]["Variables"]
        knows = env.get("THREADGATE_TOOL_LOOP_STATE_MACHINE_ARN") == {"Ref": machine}
        assert knows == (name in ("stream", "jobs")), name
        assert env["THREADGATE_WEBHOOK_QUEUE_URL"] == {"Ref": synth.logical_id(synth.stack.tool_loop.queue)}


def test_a_runs_event_stream_streams_and_its_status_and_cancel_stay_buffered(synth):
    methods = _methods(synth)
    stream_fn = synth.logical_id(synth.stack.stream_fn.function)
    api_fn = synth.logical_id(synth.stack.api_fn.invocable)
    events = methods[("GET", "/v1/threads/{id}/runs/{run_id}/events")]["Integration"]
    assert events["ResponseTransferMode"] == "STREAM"  # a resumed stream relays until the run ends
    assert _target(events) == (stream_fn, "/response-streaming-invocations")
    for route in (("ANY", "/v1/threads/{id}/runs/{run_id}"), ("ANY", "/v1/threads/{id}/runs/{run_id}/{proxy+}")):
        assert _target(methods[route]["Integration"]) == (api_fn, "/invocations"), route  # status, cancel


def test_alarms_cover_failed_executions_and_dead_lettered_tool_calls(synth):
    alarms = list(synth.of_type("AWS::CloudWatch::Alarm").values())
    machine = synth.logical_id(synth.stack.tool_loop.state_machine)
    dlq = synth.logical_id(synth.stack.tool_loop.dlq)

    def alarmed(metric: str, resource: str) -> bool:
        return any(a["Properties"].get("MetricName") == metric and resource in json.dumps(a["Properties"]["Dimensions"])
                   and a["Properties"]["Threshold"] == 1 for a in alarms)

    assert alarmed("ExecutionsFailed", machine) and alarmed("ExecutionsTimedOut", machine)
    assert alarmed("ApproximateNumberOfMessagesVisible", dlq)


# --- Observability ---------------------------------------------------------------------------


def test_alarms_cover_5xx_rate_throttles_indexer_errors_and_dlq_depth(synth):
    alarms = json.dumps(list(synth.of_type("AWS::CloudWatch::Alarm").values()))
    assert "5XXError" in alarms
    for name in synth.stack.app_functions:
        assert f"{name.title()}Throttles" in json.dumps(list(synth.of_type("AWS::CloudWatch::Alarm")))
    assert "IteratorAge" in alarms and "ApproximateNumberOfMessagesVisible" in alarms
    jobs_dlq = synth.logical_id(synth.stack.jobs.dlq)
    assert any(a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
               and jobs_dlq in json.dumps(a["Properties"]["Dimensions"])
               for a in synth.of_type("AWS::CloudWatch::Alarm").values())
    indexer = synth.logical_id(synth.stack.indexer_fn.function)
    assert any(
        a["Properties"].get("MetricName") == "Errors" and indexer in json.dumps(a["Properties"]["Dimensions"])
        for a in synth.of_type("AWS::CloudWatch::Alarm").values()
    )


# --- Linters ---------------------------------------------------------------------------------


def test_cdk_nag_aws_solutions_passes_and_every_acknowledgement_says_why(synth):
    assert synth.failure is None, synth.failure
    assert nag_findings(synth) == []
    (report,) = synth.report["pluginReports"]
    assert report["pluginName"] == "AwsSolutions" and report["conclusion"] == "success"


def test_cfn_lint_reports_no_errors(synth):
    assert cfn_lint_errors(synth, STACK_NAME) == []


def test_only_the_serving_functions_know_or_can_read_the_provider_secrets(synth):
    secret_ids = {synth.logical_id(s) for s in synth.stack.data.provider_secrets.values()}
    for name, props in _functions(synth).items():
        role = synth.logical_id(synth.stack.app_functions[name].role)
        policies = [p for p in synth.of_type("AWS::IAM::Policy").values() if {"Ref": role} in p["Properties"]["Roles"]]
        statements = [st for p in policies for st in p["Properties"]["PolicyDocument"]["Statement"]]
        reads = any(sid in json.dumps(st["Resource"]) and "secretsmanager:GetSecretValue" in st["Action"]
                    for st in statements for sid in secret_ids)
        knows = "THREADGATE_PROVIDER_SECRETS_PREFIX" in props["Environment"]["Variables"]
        assert reads == knows == (name in ("api", "stream", "jobs", "loop")), name


def test_bedrock_invoke_is_granted_only_on_the_catalogs_bedrock_models(synth):
    """bedrock:InvokeModel* on each catalog Bedrock model (its inference profile and the
    foundation model in the regions the profile routes to), for the functions that call models."""
    from infra.constructs.bedrock import bedrock_models

    models = bedrock_models(synth.stack.config)
    assert models, "the catalog has Bedrock models"
    granted: dict[str, set[str]] = {}
    for policy in synth.of_type("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if "bedrock:InvokeModelWithResponseStream" in actions:
                roles = {r["Ref"] for r in policy["Properties"]["Roles"]}
                text = json.dumps(statement["Resource"])
                for role in roles:
                    granted.setdefault(role, set()).add(text)
    callers = {synth.logical_id(synth.stack.app_functions[n].role) for n in ("api", "stream", "jobs", "loop")}
    assert set(granted) == callers  # not the indexer, sweeper or bootstrap
    text = next(iter(next(iter(granted.values()))))
    for m in models:
        assert f"inference-profile/{m['upstream_id']}" in text
        assert f"foundation-model/{m['foundation_model']}" in text
    assert "foundation-model/*" not in text and "inference-profile/*" not in text
    env = _function(synth, "api")["Environment"]["Variables"]
    assert "THREADGATE_BEDROCK_REGION" in env
