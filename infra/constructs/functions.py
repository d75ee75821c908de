"""Shared Lambda plumbing: the two code layers and a function with its own role and log group.

Code ships as plain assets (`Code.from_asset`): the handlers under functions/<name>/, the
application package as one layer, third-party wheels (prebuilt for the target architecture by
scripts/build_layers.py) as another. Nothing here runs Docker or pip.
"""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import ROOT, StageConfig

RUNTIME = lambda_.Runtime.PYTHON_3_12
PYTHON_VERSION = "3.12"  # must match RUNTIME: the deps layer holds cp312 wheels
DEPS_BUILD_INFO = "threadgate_deps_layer.json"
_ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}
SNAPSTART_ALIAS = "live"
_ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc", ".pytest_cache"]

# Powertools reads these; responses and errors stay out of traces (they can carry key secrets).
POWERTOOLS_ENV = {
    "POWERTOOLS_SERVICE_NAME": "threadgate",
    "POWERTOOLS_METRICS_NAMESPACE": "Threadgate",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
    "POWERTOOLS_TRACER_CAPTURE_ERROR": "false",
}


class SharedLayers(Construct):
    """The application package layer and the third-party deps layer, shared by every function."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        architecture = _ARCHITECTURES[config.architecture]
        self.app = lambda_.LayerVersion(
            self, "App",
            code=lambda_.Code.from_asset(str(ROOT / "layers" / "threadgate"), exclude=_ASSET_EXCLUDES),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[architecture],
            description="threadgate application package",
        )
        deps_dir = ROOT / config.deps_layer_dir
        check_deps_layer(deps_dir, config.architecture)
        self.deps = lambda_.LayerVersion(
            self, "Deps",
            code=lambda_.Code.from_asset(str(deps_dir), exclude=["*.md"]),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[architecture],
            description=f"threadgate third-party packages (cp{PYTHON_VERSION.replace('.', '')}, {config.architecture})",
        )
        self.catalog = None
        if config.models_file:
            catalog = (ROOT / config.models_file).resolve()
            # A one-file layer: the catalog override appears at /opt/<file name>.
            self.catalog = lambda_.LayerVersion(
                self, "Catalog",
                code=lambda_.Code.from_asset(str(catalog.parent), exclude=["*", f"!{catalog.name}"]),
                compatible_runtimes=[RUNTIME],
                description="threadgate model catalog override",
            )
            self.catalog_path = f"/opt/{catalog.name}"

    def all(self) -> list[lambda_.ILayerVersion]:
        return [self.deps, self.app] + ([self.catalog] if self.catalog else [])


def check_deps_layer(deps_dir: Path, architecture: str) -> None:
    """Refuse to synthesize with a missing layer or one built for another architecture/Python."""
    info_file = deps_dir / "python" / DEPS_BUILD_INFO
    if not info_file.is_file():
        raise RuntimeError(f"{info_file} is missing: build the deps layer first (make layers)")
    info = json.loads(info_file.read_text())
    if info.get("architecture") != architecture or info.get("python_version") != PYTHON_VERSION:
        raise RuntimeError(
            f"{deps_dir} was built for {info.get('architecture')}/cp{info.get('python_version')}, "
            f"the stack needs {architecture}/cp{PYTHON_VERSION}: rebuild it (make layers)"
        )


class AppFunction(Construct):
    """One Lambda function: its handler directory, the shared layers, a role of its own that
    starts empty (callers grant exactly what it needs), a log group with retention, X-Ray.

    With `snap_start`, each deploy publishes a version that Lambda snapshots after init, and the
    `live` alias points at it: callers must invoke `invocable` (the alias), since $LATEST is never
    restored from a snapshot. The version a deploy replaces is deleted, so its snapshot stops
    being cached (and charged) — docs/deploy.md "Cold starts"."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        name: str,
        handler: str,
        layers: list[lambda_.ILayerVersion],
        environment: dict[str, str],
        memory_mb: int,
        timeout: Duration,
        description: str,
        snap_start: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.DESTROY if config.is_dev else RemovalPolicy.RETAIN
        self.log_group = logs.LogGroup(
            self, "Logs", retention=_retention(config.log_retention_days), removal_policy=removal
        )
        self.role = iam.Role(
            self, "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{config.prefix} {name} function",
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self, "Function",
            runtime=RUNTIME,
            architecture=_ARCHITECTURES[config.architecture],
            code=lambda_.Code.from_asset(str(ROOT / "functions" / name), exclude=_ASSET_EXCLUDES),
            handler=handler,
            layers=layers,
            role=self.role,
            environment={**POWERTOOLS_ENV, **environment},
            memory_size=memory_mb,
            timeout=timeout,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            description=description,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if snap_start else None,
            current_version_options=lambda_.VersionOptions(removal_policy=RemovalPolicy.DESTROY) if snap_start else None,
        )
        self.invocable: lambda_.IFunction = self.function
        if snap_start:
            self.invocable = lambda_.Alias(self, "Live", alias_name=SNAPSTART_ALIAS,
                                           version=self.function.current_version)


_RETENTION = {
    7: logs.RetentionDays.ONE_WEEK, 14: logs.RetentionDays.TWO_WEEKS, 30: logs.RetentionDays.ONE_MONTH,
    90: logs.RetentionDays.THREE_MONTHS, 180: logs.RetentionDays.SIX_MONTHS, 365: logs.RetentionDays.ONE_YEAR,
}


def _retention(days: int) -> logs.RetentionDays:
    if days not in _RETENTION:
        raise ValueError(f"logRetentionDays must be one of {sorted(_RETENTION)}")
    return _RETENTION[days]
