"""Deployment options, read from CDK context (cdk.json, overridable with `-c key=value`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent

# Lambda Web Adapter publishes its layer from this account in every commercial region.
LWA_ACCOUNT = "753240598075"
LWA_LAYER_NAMES = {"arm64": "LambdaAdapterLayerArm64", "x86_64": "LambdaAdapterLayerX86"}


@dataclass(frozen=True)
class StageConfig:
    stage: str = "dev"
    architecture: Literal["arm64", "x86_64"] = "arm64"
    markup: str = "1.07"
    models_file: str | None = None  # catalog override shipped to /opt/<file name>
    opensearch: Literal["serverless", "domain"] = "serverless"
    embedding_model_id: str = "amazon.titan-embed-text-v2:0"
    embedding_dimensions: int = 256
    lwa_layer_version: int = 26  # pinned: bump deliberately, the adapter's behaviour changes
    domain_name: str | None = None  # optional custom domain for the API...
    certificate_arn: str | None = None  # ...with its ACM certificate in the same region
    cors_origins: tuple[str, ...] = ()
    throttle_rate: float = 50.0  # steady requests/s for the whole stage
    throttle_burst: int = 100
    sweep_minutes: int = 1
    alarm_topic_arn: str | None = None  # existing SNS topic that receives alarm notifications
    deps_layer_dir: str = "layers/deps"
    log_retention_days: int = 30

    @property
    def is_dev(self) -> bool:
        return self.stage == "dev"

    @property
    def prefix(self) -> str:
        """Name prefix for resources that need a stable, stage-unique name (secrets, index)."""
        return f"threadgate-{self.stage}"

    def lwa_layer_arn(self, region: str, partition: str = "aws") -> str:
        name = LWA_LAYER_NAMES[self.architecture]
        return f"arn:{partition}:lambda:{region}:{LWA_ACCOUNT}:layer:{name}:{self.lwa_layer_version}"

    @classmethod
    def from_context(cls, get: Any) -> "StageConfig":
        """`get` is `node.try_get_context`; values given with `-c` arrive as strings."""
        values: dict[str, Any] = {}
        for name, spec in cls.__dataclass_fields__.items():
            raw = get(_camel(name))
            if raw is None:
                continue
            values[name] = _coerce(name, raw, spec.type)
        config = cls(**values)
        _validate(config)
        return config


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _coerce(name: str, raw: Any, annotation: Any) -> Any:
    text = str(annotation)
    if name == "cors_origins":
        items = json.loads(raw) if isinstance(raw, str) and raw.startswith("[") else raw
        if isinstance(items, str):
            items = [part for part in items.split(",") if part]
        return tuple(items)
    if text.startswith("int"):
        return int(raw)
    if text.startswith("float"):
        return float(raw)
    return str(raw) if raw != "" else None


def _validate(config: StageConfig) -> None:
    if config.architecture not in LWA_LAYER_NAMES:
        raise ValueError(f"architecture must be one of {sorted(LWA_LAYER_NAMES)}")
    if config.opensearch not in ("serverless", "domain"):
        raise ValueError("opensearch must be 'serverless' or 'domain'")
    if bool(config.domain_name) != bool(config.certificate_arn):
        raise ValueError("domainName and certificateArn go together")
    if not config.stage.replace("-", "").isalnum():
        raise ValueError("stage must be alphanumeric (dashes allowed)")
