"""Amazon Bedrock model access: `bedrock:InvokeModel*` on exactly the catalog's Bedrock models.

A catalog entry names the inference profile the gateway calls (its upstream id, e.g.
`us.anthropic.claude-sonnet-4-6`) and the foundation model behind it. Calling through a
cross-region profile needs the profile in the stack's region and the foundation model in every
region the profile routes to; a plain model id needs the model in the stack's region.
"""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.config import ROOT, StageConfig

GENERATED_CATALOG = ROOT / "layers" / "threadgate" / "python" / "threadgate" / "catalog" / "models.json"
ACTIONS = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
# The regions each geography's cross-region inference profiles route to (Bedrock user guide,
# "Supported Regions and models for inference profiles"). `global.` profiles route anywhere.
PROFILE_REGIONS = {
    "us": ("us-east-1", "us-east-2", "us-west-2"),
    "us-gov": ("us-gov-east-1", "us-gov-west-1"),
    "eu": ("eu-central-1", "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-3"),
    "apac": ("ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
             "ap-southeast-1", "ap-southeast-2", "ap-southeast-4"),
    "jp": ("ap-northeast-1", "ap-northeast-3"),
    "au": ("ap-southeast-2", "ap-southeast-4"),
    "global": ("*",),
}


def bedrock_models(config: StageConfig) -> list[dict[str, str]]:
    """The Bedrock entries of the catalog the functions will read."""
    path = (ROOT / config.models_file).resolve() if config.models_file else GENERATED_CATALOG
    models = json.loads(Path(path).read_text())["models"]
    return [m for m in models if m.get("provider") == "bedrock"]


class BedrockAccess(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.models = bedrock_models(config)
        resources: set[str] = set()
        for m in self.models:
            upstream = m.get("upstream_id", m["id"])
            foundation = m.get("foundation_model", upstream)
            geography, _, rest = upstream.partition(".")
            if geography in PROFILE_REGIONS and rest:
                resources.add(stack.format_arn(service="bedrock", resource="inference-profile", resource_name=upstream))
                regions = PROFILE_REGIONS[geography]
            else:
                regions = (stack.region,)
            for region in regions:
                resources.add(stack.format_arn(service="bedrock", region=region, account="",
                                               resource="foundation-model", resource_name=foundation))
        self.resources = sorted(resources)
        self.global_profiles = any(m.get("upstream_id", "").startswith("global.") for m in self.models)

    def environment(self) -> dict[str, str]:
        """The provider is on only where the catalog has Bedrock models to call."""
        return {"THREADGATE_BEDROCK_REGION": Stack.of(self).region} if self.models else {}

    def grant_invoke(self, role: iam.IRole) -> None:
        if self.resources:
            role.add_to_principal_policy(iam.PolicyStatement(actions=ACTIONS, resources=self.resources))
