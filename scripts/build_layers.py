#!/usr/bin/env python3
"""Build the third-party Lambda layer (layers/deps/python) without Docker.

pip downloads manylinux wheels for the Lambda architecture and Python version (never this
machine's), so the layer is correct whatever host builds it. What ships is requirements.txt above
the "# --- local mode only" marker, minus the AWS SDK that the Lambda Python runtime already
provides, at the versions and hashes pinned in requirements-layer.lock (`make lock` writes it,
constrained by requirements.lock so Lambda runs what local mode and the tests run). When a matching CPython is available the layer is byte-compiled with unchecked-hash
.pyc files: /opt is read-only on Lambda, so otherwise every cold start recompiles in memory.

    python scripts/build_layers.py [--arch arm64|x86_64] [--python-version 3.12]
    python scripts/build_layers.py --lock      # what `make lock` runs (needs uv)
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
RUNTIME_LOCK = ROOT / "requirements.lock"
LAYER_LOCK = ROOT / "requirements-layer.lock"
LOCK_PYTHON = "3.12"  # the Lambda runtime the layer lock is resolved for
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


def lock(uv: str) -> None:
    """Resolve the layer's requirements for Lambda's Python (any Linux architecture: the lock is
    universal, its few markers are PyPy ones) with hashes, pinned to requirements.lock's versions."""
    # A fixed, relative input path: uv writes it into the lock's comments, so a temporary file's
    # random name would change the lock at every `make lock`.
    source = Path("build") / "layer-requirements.txt"
    (ROOT / source).parent.mkdir(exist_ok=True)
    (ROOT / source).write_text("\n".join(lambda_requirements(REQUIREMENTS.read_text())) + "\n")
    try:
        subprocess.run(
            [uv, "pip", "compile", str(source), "--universal", "--python-version", LOCK_PYTHON,
             "--generate-hashes", "--quiet", "-c", RUNTIME_LOCK.name, "-o", LAYER_LOCK.name,
             "--custom-compile-command", "make lock"],
            check=True, cwd=ROOT,
        )
    finally:
        (ROOT / source).unlink()


def build(arch: str, python_version: str, out: Path = LAYER_DIR) -> dict:
    if python_version != LOCK_PYTHON:
        raise SystemExit(f"requirements-layer.lock is resolved for Python {LOCK_PYTHON}: change LOCK_PYTHON "
                         f"in {Path(__file__).name} and run make lock to build for {python_version}")
    requirements = lambda_requirements(REQUIREMENTS.read_text())
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--platform", PLATFORMS[arch], "--implementation", "cp",
            "--python-version", python_version, "--only-binary=:all:",
            # The lock is complete and hashed: nothing is resolved here, every file is checked.
            "--no-deps", "--require-hashes",
            "--no-compile", "--target", str(out), "-r", str(LAYER_LOCK),
        ],
        check=True,
    )
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
    parser.add_argument("--python-version", default=LOCK_PYTHON)
    parser.add_argument("--lock", action="store_true", help="write requirements-layer.lock instead (needs uv)")
    parser.add_argument("--uv", default=shutil.which("uv") or "uv")
    args = parser.parse_args()
    if args.lock:
        lock(args.uv)
        return
    info = build(args.arch, args.python_version)
    size = sum(p.stat().st_size for p in LAYER_DIR.rglob("*") if p.is_file())
    print(f"layers/deps/python: {info['platform']} cp{args.python_version}, {size / 1e6:.1f} MB unzipped")


if __name__ == "__main__":
    main()
