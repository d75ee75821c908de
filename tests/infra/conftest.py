"""Synthesize the stack ONCE per session (with cdk-nag) and share the result with every test."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ROOT = Path(__file__).resolve().parents[2]
STACK_NAME = "Threadgate-test"


@dataclass
class Synth:
    stack: Any  # infra.stack.ThreadgateStack
    template: dict[str, Any]
    outdir: Path
    failure: str | None  # the synth error, when cdk-nag (or anything else) refused the stack
    report: dict[str, Any] | None  # cdk-nag's policy validation report

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template["Resources"]

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.resources.items() if r["Type"] == cfn_type}

    def logical_id(self, construct: Any) -> str:
        return self.stack.resolve(self.stack.get_logical_id(construct.node.default_child))


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks

    from infra.config import StageConfig
    from infra.constructs.functions import DEPS_BUILD_INFO, PYTHON_VERSION
    from infra.stack import ThreadgateStack

    # The real deps layer may not be built on this checkout; the stack only needs its build info.
    stub = tmp_path_factory.mktemp("deps-layer")
    (stub / "python").mkdir()
    (stub / "python" / DEPS_BUILD_INFO).write_text(
        json.dumps({"architecture": "arm64", "python_version": PYTHON_VERSION})
    )
    outdir = tmp_path_factory.mktemp("cdk.out")
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    app = cdk.App(outdir=str(outdir), context={**context, "depsLayerDir": str(stub)})
    stack = ThreadgateStack(app, STACK_NAME, config=StageConfig.from_context(app.node.try_get_context))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    failure = None
    try:
        app.synth()
    except RuntimeError as error:  # cdk-nag findings fail synthesis; the template is still written
        failure = str(error)
    report_file = outdir / "validation-report.json"
    return Synth(
        stack=stack,
        template=json.loads((outdir / f"{STACK_NAME}.template.json").read_text()),
        outdir=outdir,
        failure=failure,
        report=json.loads(report_file.read_text()) if report_file.exists() else None,
    )
