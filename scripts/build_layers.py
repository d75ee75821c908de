#!/usr/bin/env python3
"""Build the third-party Lambda layer (layers/deps/python) without Docker.

pip downloads manylinux wheels for the Lambda architecture and Python version (never this
machine's), so the layer is correct whatever host builds it. What ships is requirements.txt above
the "# --- local mode only" marker, minus the AWS SDK that the Lambda Python runtime already
provides. When a matching CPython is available the layer is byte-compiled with unchecked-hash
.pyc files: /opt is read-only on Lambda, so otherwise every cold start recompiles in memory.

    python scripts/build_layers.py [--arch arm64|x86_64] [--python-version 3.12]
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
LAYER_DIR = ROOT / "layers" / "deps" / "python"
BUILD_INFO = "threadgate_deps_layer.json"  # read by the CDK stack to refuse a wrong-arch layer
LOCAL_ONLY_MARKER = "# --- local mode only"
PLATFORMS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}
# Shipped by the Lambda Python runtime; bundling them would add ~25 MB for nothing.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
# opensearch-py 3.x requires its gRPC schemas but never imports them over HTTP (~21 MB).
NEVER_IMPORTED = ("opensearch-protobufs", "grpcio", "protobuf")


def lambda_requirements(text: str) -> list[str]:
    """Requirement lines above the local-only marker, without comments or runtime-provided SDKs."""
    lines = []
    for raw in text.splitlines():
        if raw.strip().startswith(LOCAL_ONLY_MARKER):
            break
        line = raw.split("#", 1)[0].strip()
        if line and _distribution(line) not in RUNTIME_PROVIDED:
            lines.append(line)
    return lines


def _distribution(requirement: str) -> str:
    name = requirement
    for sep in "<>=!~[; ":
        name = name.split(sep, 1)[0]
    return name.strip().lower().replace("_", "-")


def build(arch: str, python_version: str, out: Path = LAYER_DIR) -> dict:
    requirements = lambda_requirements(REQUIREMENTS.read_text())
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(requirements) + "\n")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--platform", PLATFORMS[arch], "--implementation", "cp",
            "--python-version", python_version, "--only-binary=:all:",
            "--no-compile", "--target", str(out), "-r", handle.name,
        ],
        check=True,
    )
    Path(handle.name).unlink()
    for name in RUNTIME_PROVIDED + NEVER_IMPORTED:  # pulled in transitively
        _remove_distribution(out, name)
    shutil.rmtree(out / "bin", ignore_errors=True)  # console scripts with this machine's shebang
    compiled_with = _byte_compile(out, python_version)
    info = {"architecture": arch, "python_version": python_version, "platform": PLATFORMS[arch],
            "requirements": requirements, "byte_compiled_with": compiled_with}
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def _remove_distribution(out: Path, name: str) -> None:
    """Delete an installed distribution by its RECORD (the file list pip wrote)."""
    stem = name.replace("-", "_").lower()
    for dist_info in out.glob("*.dist-info"):
        if dist_info.name.lower().split("-", 1)[0] != stem:
            continue
        for line in (dist_info / "RECORD").read_text().splitlines():
            target = (out / line.split(",", 1)[0]).resolve()
            if target.is_relative_to(out.resolve()) and target.is_file():
                target.unlink()
        shutil.rmtree(dist_info, ignore_errors=True)
    for directory in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(directory.iterdir()):
            directory.rmdir()


def _byte_compile(out: Path, python_version: str) -> str | None:
    for candidate in _interpreters(python_version):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == python_version:
            subprocess.run(
                [candidate, "-m", "compileall", "-q", "-j", "0",
                 "--invalidation-mode", "unchecked-hash", str(out)],
                check=True,
            )
            return candidate
    print(f"note: no CPython {python_version} found; layer ships without .pyc files", file=sys.stderr)
    return None


def _interpreters(python_version: str) -> list[str]:
    found = [shutil.which(f"python{python_version}")]
    found += sorted(glob.glob(str(Path.home() / f".pyenv/versions/{python_version}*/bin/python{python_version}")))
    return [path for path in found if path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="arm64")
    parser.add_argument("--python-version", default="3.12")
    args = parser.parse_args()
    info = build(args.arch, args.python_version)
    size = sum(p.stat().st_size for p in LAYER_DIR.rglob("*") if p.is_file())
    print(f"layers/deps/python: {info['platform']} cp{args.python_version}, {size / 1e6:.1f} MB unzipped")


if __name__ == "__main__":
    main()
