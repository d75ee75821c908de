#!/usr/bin/env python3
"""CDK entry point: `cdk synth|deploy [-c stage=prod] [-c opensearch=domain] ...` (see cdk.json)."""

import os
import sys
from pathlib import Path

# The stack reads the DynamoDB table shapes from the application package itself.
sys.path.insert(0, str(Path(__file__).resolve().parent / "layers" / "threadgate" / "python"))

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra.config import StageConfig  # noqa: E402
from infra.stack import ThreadgateStack  # noqa: E402

app = cdk.App()
config = StageConfig.from_context(app.node.try_get_context)
ThreadgateStack(
    app, f"Threadgate-{config.stage}", config=config,
    env=cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")),
)
# Findings are errors at synth time; reviewed exceptions live in infra/nag.py with their reasons.
cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
app.synth()
