"""cdk-nag (AwsSolutions) findings that were reviewed and accepted, each with its reason.

Everything not listed here is fixed in the constructs (explicit table/index ARNs instead of
`index/*`, KMS Encrypt/Decrypt instead of `ReEncrypt*`/`GenerateDataKey*`, own roles instead
of AWSLambdaBasicExecutionRole, access logs, SSL-only queues, ...). A new finding fails synth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

if TYPE_CHECKING:  # pragma: no cover
    from infra.stack import ThreadgateStack


def _ack(scope: IConstruct, rule: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason))


def suppress_reviewed_findings(stack: "ThreadgateStack") -> None:
    rest_api = stack.api.rest_api
    for rule in ("APIG4", "COG4"):
        _ack(rest_api, rule,
             "Authentication is the gateway's own API keys (API.md §1): every route except the CORS "
             "preflight checks the key's SHA-256 in the keys table; an authorizer would repeat that lookup.")
    _ack(rest_api, "APIG2",
         "Bodies are validated by the application (pydantic models), which answers in the API.md "
         "error envelope; API Gateway validators would answer in a different shape.")
    _ack(rest_api, "APIG3",
         "WAF is optional and billed per request: stage throttling and per-key spend caps bound abuse; "
         "docs/deploy.md shows how to attach a web ACL.")
    _ack(rest_api, "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                   "AmazonAPIGatewayPushToCloudWatchLogs]",
         "The account-level API Gateway logging role; this AWS managed policy is the documented setup.")

    for secret in [*stack.data.provider_secrets.values(), stack.data.admin_secret]:
        _ack(secret, "SMG4",
             "Provider API keys are issued by the provider and rotated there; the admin key is rotated "
             "through the API (mint a new admin key, revoke the old). No rotation Lambda can do either.")

    for app_function in stack.app_functions.values():
        _ack(app_function.function, "L1",
             "Pinned to python3.12 on purpose: the deps layer is built for cp312 (scripts/build_layers.py); "
             "moving runtime means rebuilding the layer, done deliberately.")
        _ack(app_function.role, "IAM5[Resource::*]",
             "X-Ray PutTraceSegments/PutTelemetryRecords and DynamoDB ListStreams (indexer) do not support "
             "resource-level permissions.")

    _ack(stack.indexing.dlq, "SQS3", "This queue is itself the dead-letter destination of the indexer.")
    _ack(stack.jobs.dlq, "SQS3", "This queue is itself the dead-letter destination of the jobs queue.")
    _ack(stack.tool_loop.dlq, "SQS3", "This queue is itself the dead-letter destination of the webhook queue.")

    _ack(stack.tool_loop.state_machine.role, "IAM5[Resource::*]",
         "Step Functions log delivery (logs:*LogDelivery, DescribeResourcePolicies) and X-Ray tracing "
         "have no resource-level permissions; every other action names the loop function or the queue.")

    provider = stack.bootstrap.provider
    _ack(provider, "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
         "CDK custom resource provider framework function (runs only during deployments).")
    bootstrap_id = stack.resolve(stack.get_logical_id(stack.bootstrap_fn.function.node.default_child))
    _ack(provider, f"IAM5[Resource::<{bootstrap_id}.Arn>:*]",
         "The provider framework invokes any version of the bootstrap function.")
    _ack(provider, "L1", "The CDK provider framework picks its own Node.js runtime.")

    if stack.config.opensearch == "domain":
        _suppress_domain_findings(stack)


def _suppress_domain_findings(stack: "ThreadgateStack") -> None:
    domain = stack.search.node.find_child("Domain")
    _ack(domain, "OS1",
         "The functions run outside a VPC (no NAT cost at idle); every request is SigV4-signed and the "
         "access policy admits only this account's IAM principals.")
    _ack(domain, "OS3", "Callers are Lambda functions without fixed IPs; access is by IAM identity instead.")
    _ack(domain, "OS4", "Dedicated masters triple the node count; one index on a small domain does not need them.")
    _ack(domain, "OS5", "The access policy admits only signed requests from this account (resource policy).")
    if stack.config.is_dev:
        _ack(domain, "OS7", "Single node on the dev stage; other stages enable zone awareness.")
    # CDK's singleton AwsCustomResource sets the domain's access and log resource policies.
    _ack(stack, "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
         "CDK AwsCustomResource singleton that applies the domain access policy at deploy time.")
    _ack(domain, "IAM5[Resource::*]", "logs:PutResourcePolicy has no resource-level permissions.")
    domain_id = stack.resolve(stack.get_logical_id(domain.node.default_child))
    for app_function in stack.app_functions.values():
        _ack(app_function.role, f"IAM5[Resource::<{domain_id}.Arn>/threadgate-messages/*]",
             "Document paths inside the one messages index.")
