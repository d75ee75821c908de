"""Synthesizing the stack for tests: one cloud assembly per configuration, with cdk-nag."""

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


def synthesize(tmp_path_factory: pytest.TempPathFactory, stack_name: str, **context: Any) -> Synth:
    """cdk.json's context plus `context`, a stub deps layer for the configured architecture,
    cdk-nag attached; synthesized once into a temporary cloud assembly."""
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks

    from infra.config import StageConfig
    from infra.constructs.functions import DEPS_BUILD_INFO, PYTHON_VERSION
    from infra.stack import ThreadgateStack

    merged = {**json.loads((ROOT / "cdk.json").read_text())["context"], **context}
    # The real deps layer may not be built on this checkout; the stack only needs its build info.
    stub = tmp_path_factory.mktemp("deps-layer")
    (stub / "python").mkdir()
    (stub / "python" / DEPS_BUILD_INFO).write_text(
        json.dumps({"architecture": merged["architecture"], "python_version": PYTHON_VERSION})
    )
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(outdir=str(outdir), context={**merged, "depsLayerDir": str(stub)})
    stack = ThreadgateStack(app, stack_name, config=StageConfig.from_context(app.node.try_get_context))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    failure = None
    try:
        app.synth()
    except RuntimeError as error:  # cdk-nag findings fail synthesis; the template is still written
        failure = str(error)
    report_file = outdir / "validation-report.json"
    return Synth(
        stack=stack,
        template=json.loads((outdir / f"{stack_name}.template.json").read_text()),
        outdir=outdir,
        failure=failure,
        report=json.loads(report_file.read_text()) if report_file.exists() else None,
    )


def nag_findings(result: Synth) -> list[str]:
    """cdk-nag errors not acknowledged; and acknowledgements without a real reason."""
    assert result.report, result.failure
    (report,) = result.report["pluginReports"]
    problems = [f"{v['ruleName']} at {[c['constructPath'] for c in v['violatingConstructs']]}"
                for v in report["violations"]]
    problems += [f"weak reason for {s['acknowledgedId']}" for s in report["suppressedViolations"]
                 if len(s["reason"]) < 40]
    if result.failure and not problems:
        problems.append(result.failure)
    return problems


def cfn_lint_errors(result: Synth, stack_name: str) -> list[dict[str, Any]]:
    import subprocess
    import sys

    template = result.outdir / f"{stack_name}.template.json"
    done = subprocess.run([sys.executable, "-m", "cfnlint", "--format", "json", str(template)],
                          capture_output=True, text=True, timeout=120)
    return [f for f in json.loads(done.stdout or "[]") if f["Level"] == "Error"]
