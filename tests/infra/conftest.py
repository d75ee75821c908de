"""Synthesize the default stack ONCE per session (with cdk-nag) and share it with every test."""

from __future__ import annotations

import pytest

from tests.infra.synth import STACK_NAME, Synth, synthesize


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The default configuration (cdk.json): what `make synth` / `make deploy` build."""
    return synthesize(tmp_path_factory, STACK_NAME)
