"""The public REST API: regional API Gateway in front of two Lambda functions running the same
FastAPI app. The streaming-capable routes use `ResponseTransferMode: STREAM` (Lambda Web Adapter);
everything else is a buffered proxy (Mangum)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import StageConfig

# (method, path) pairs whose answer may be an SSE stream (API.md §6.2, §10, §10.1).
STREAMING_ROUTES = (
    ("POST", "/v1/threads/{id}/messages"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),  # OpenAI Responses API (API.md §10.1)
    ("GET", "/v1/threads/{id}/runs/{run_id}/events"),  # a run's events, resumable (Last-Event-ID)
)
# The operator console (API.md §13): its page and static files, served by the buffered function.
CONSOLE_ROUTES = (("ANY", "/console"), ("ANY", "/console/{proxy+}"))
STREAM_TIMEOUT = Duration.minutes(15)  # the most API Gateway allows for a streamed response
# API Gateway rejects bodies over 10 MB before the app sees them; the app enforces its own
# (smaller, configurable) THREADGATE_MAX_BODY_BYTES with a 413 in the API.md error shape.
API_GATEWAY_PAYLOAD_LIMIT_BYTES = 10 * 1024 * 1024


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        buffered: lambda_.IFunction,
        streaming: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.DESTROY if config.is_dev else RemovalPolicy.RETAIN
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=removal
        )
        cors = None
        if config.cors_origins:
            cors = apigw.CorsOptions(
                allow_origins=list(config.cors_origins),
                allow_headers=["Content-Type", "Authorization", "x-api-key", "anthropic-version",
                               "Idempotency-Key", "Last-Event-ID"],
                expose_headers=["request-id", "x-request-id", "x-qlaud-thread-id",
                                "x-qlaud-assistant-seq", "x-qlaud-cost-micros", "x-qlaud-iterations"],
                max_age=Duration.hours(1),
            )
        self.rest_api = apigw.RestApi(
            self, "RestApi",
            rest_api_name=config.prefix,
            description="Threadgate gateway (API.md)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=removal,
            default_cors_preflight_options=cors,
            deploy_options=apigw.StageOptions(
                stage_name=config.stage,
                throttling_rate_limit=config.throttle_rate,
                throttling_burst_limit=config.throttle_burst,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=False,
                ),
                # Execution logs at ERROR only and never with data trace: bodies carry key secrets.
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
            ),
        )
        # One Lambda permission per function for the whole API (not one per method): the
        # function policy would otherwise grow past its size limit with this many methods.
        buffered_integration = apigw.LambdaIntegration(buffered, scope_permission_to_method=False)
        streaming_integration = apigw.LambdaIntegration(
            streaming,
            scope_permission_to_method=False,
            response_transfer_mode=apigw.ResponseTransferMode.STREAM,
            timeout=STREAM_TIMEOUT,
        )
        self.streaming_methods = _add_routes(self.rest_api.root, buffered_integration, streaming_integration)

        if config.domain_name:
            self.rest_api.add_domain_name(
                "CustomDomain",
                domain_name=config.domain_name,
                certificate=acm.Certificate.from_certificate_arn(self, "Certificate", config.certificate_arn),
                endpoint_type=apigw.EndpointType.REGIONAL,
                security_policy=apigw.SecurityPolicy.TLS_1_2,
            )


def _add_routes(
    root: apigw.IResource, buffered: apigw.Integration, streaming: apigw.Integration
) -> list[apigw.Method]:
    """Everything goes to the buffered function through greedy proxies, except the streaming
    routes. API Gateway matches the most specific resource and does not fall back to a parent's
    `{proxy+}`, so every resource created for a streaming route also answers ANY (buffered) and
    gets its own `{proxy+}` child (unless it already has a path-variable child)."""
    root.add_method("ANY", buffered)
    root.add_proxy(default_integration=buffered, any_method=True)
    # Named rather than left to the root {proxy+}: the console is part of the API's surface.
    console = root.add_resource("console")
    console.add_method("ANY", buffered)
    console.add_proxy(default_integration=buffered, any_method=True)
    created: dict[str, apigw.Resource] = {}
    methods = []
    for http_method, path in STREAMING_ROUTES:
        resource = root
        for part in path.strip("/").split("/"):
            resource = resource.get_resource(part) or resource.add_resource(part)
            created.setdefault(resource.path, resource)
        methods.append(resource.add_method(http_method, streaming))
    for resource in created.values():
        resource.add_method("ANY", buffered)
    for resource in list(created.values()):
        children = [path for path in created if path.rsplit("/", 1)[0] == resource.path]
        if not any(path.rsplit("/", 1)[1].startswith("{") for path in children):
            resource.add_proxy(default_integration=buffered, any_method=True)
    return methods
