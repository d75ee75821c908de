"""The lock files answer for the requirement files people edit: every requirement is pinned, at a
version it allows, with hashes. A dependency added without `make lock` fails here, saying so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")]


def requirements(path: Path) -> list[Requirement]:
    out = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            out += requirements(path.parent / line[3:].strip())
        else:
            out.append(Requirement(line))
    return out


def pins(path: Path) -> dict[str, str]:
    text = path.read_text()
    found = {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)",
                                                                 text, re.M)}
    for block in re.split(r"\n(?=\S)", text):  # each pin carries its hashes
        if "==" in block and not block.startswith("#"):
            assert "--hash=sha256:" in block, f"{path.name}: no hash for {block.splitlines()[0]}"
    return found


@pytest.mark.parametrize("source,lock", PAIRS)
def test_every_requirement_is_pinned_at_an_allowed_version(source: str, lock: str) -> None:
    pinned = pins(ROOT / lock)
    stale = []
    for req in requirements(ROOT / source):
        version = pinned.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            stale.append(f"{req} (locked: {version or 'nothing'})")
    assert not stale, f"{source} changed without {lock}: run `make lock`. Out of date: {stale}"


def test_the_layer_lock_ships_the_runtime_locks_versions() -> None:
    from scripts.build_layers import lambda_requirements

    layer, runtime = pins(ROOT / "requirements-layer.lock"), pins(ROOT / "requirements.lock")
    for line in lambda_requirements((ROOT / "requirements.txt").read_text()):
        name = canonicalize_name(Requirement(line).name)
        assert layer.get(name) == runtime.get(name), f"{name}: layer {layer.get(name)}, runtime {runtime.get(name)}; run `make lock`"
