"""Lambda cold-start proxies: import time of each handler module and unzipped asset sizes.

Imports are measured the way Lambda would load them: a CPython of the Lambda version (3.12)
started with `-I -X importtime`, whose sys.path holds only the function directory, the two layers
and the AWS SDK the Lambda runtime provides. The deps layer is rebuilt for THIS machine's
architecture for the measurement (the deployable one is aarch64 and cannot load here), from the
same requirements by the same script. A handler that cannot import there would fail on Lambda.

    python bench/coldstart_bench.py [--runs 7] [--baseline REF]

Route modules load on a request's first need (api/app.py), so besides the handler's import the
bench measures `api_chat_first_request`: the import plus the route modules a first
/v1/chat/completions request loads — what a cold chat request pays before its runtime is built.
With `--baseline REF` the api handler of that commit (its functions/api and app layer, exported
with git archive) is measured in the same rounds, interleaved, as `api_baseline`.

The SnapStart path (bench/snapstart_probe.py, this interpreter, moto in-process): the time of
the before-snapshot hooks, of after_restore (building the runtime: stores, provider keys read
from Secrets Manager), and of the first request after it; and the first request of an
environment without SnapStart, which builds the runtime inside it.

Targets (issues 5, 13): api handler import <= 300 ms; the two layers together <= 60 MB unzipped.
Numbers vary with the machine; read them against each other, not as absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from scripts.build_layers import BUILD_INFO, LAYER_DIR, REQUIREMENTS, build, lambda_requirements  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "coldstart.json"
MIRROR = ROOT / "build" / "coldstart" / "deps" / "python"
PYTHON_VERSION = "3.12"
# What each function's runtime imports first: the handler module, or what run.sh starts.
ENTRY_MODULES = {
    "api": "api_handler",
    "stream": "threadgate.api.asgi",  # plus uvicorn, imported by `python -m uvicorn`
    "jobs": "jobs_handler",
    "indexer": "indexer_handler",
    "sweeper": "sweeper_handler",
    "bootstrap": "bootstrap_handler",
}
LAMBDA_ENV = {
    "THREADGATE_MODE": "aws", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "threadgate", "POWERTOOLS_METRICS_NAMESPACE": "Threadgate",
    "AWS_LAMBDA_FUNCTION_NAME": "threadgate-bench", "LANG": "C.UTF-8",
}
# The route modules a first chat request includes (api/app.py route_modules_for), timed by
# -X importtime like the handler itself.
CHAT_FIRST_REQUEST = ("import api_handler; from threadgate.api.app import route_modules_for; "
                      "api_handler.app.include_route_modules(route_modules_for('/v1/chat/completions'))")
BASELINE_DIR = ROOT / "build" / "coldstart" / "baseline"
PROBE_RUNS = 5
TARGET_API_IMPORT_MS = 300
TARGET_LAYERS_MB = 60


def lambda_python() -> str:
    """A CPython 3.12 like Lambda's, else this interpreter (then noted in the results)."""
    from scripts.build_layers import _interpreters

    for candidate in _interpreters(PYTHON_VERSION):
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == PYTHON_VERSION:
            return candidate
    return sys.executable


def host_mirror_layer(python: str) -> Path:
    """The deps layer's requirements built for this machine, rebuilt when requirements change."""
    arch = {"aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "x86_64")
    wanted = lambda_requirements(REQUIREMENTS.read_text())
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    info_file = MIRROR / BUILD_INFO
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        if (info["requirements"], info["architecture"], info["python_version"]) == (wanted, arch, version):
            return MIRROR
    build(arch, version, out=MIRROR)
    return MIRROR


def runtime_sdk_dir() -> Path:
    """boto3/botocore/s3transfer as the Lambda runtime provides them (links to this venv's)."""
    import boto3
    import botocore
    import s3transfer

    directory = Path(tempfile.mkdtemp(prefix="lambda-runtime-sdk-"))
    for module in (boto3, botocore, s3transfer):
        source = Path(module.__file__).parent
        (directory / source.name).symlink_to(source)
    return directory


def import_once(python: str, name: str, module: str, paths: list[Path]) -> tuple[float | None, str]:
    """One fresh interpreter importing `module` (or running CHAT_FIRST_REQUEST): (cumulative
    import ms, error line or "")."""
    code = f"import sys; sys.path[:0] = {[str(p) for p in paths]!r}; import {module}"
    modules = [module] + (["uvicorn.main"] if name == "stream" else [])
    if name == "stream":
        code += "; import uvicorn.main"
    if name == "api_chat_first_request":
        code += "; " + CHAT_FIRST_REQUEST
        modules += ["threadgate.api.routes." + m for m in ("chat",)]
    done = subprocess.run([python, "-I", "-X", "importtime", "-c", code], capture_output=True, text=True,
                          env={**LAMBDA_ENV, "PATH": os.environ.get("PATH", "")}, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        return None, done.stderr.strip().splitlines()[-1]
    return _top_level_ms(done.stderr, modules), ""


def measure_all(python: str, entries: dict[str, tuple[str, list[Path]]], runs: int) -> dict[str, dict]:
    """Round-robin over the entries so that load on the machine hits them all alike."""
    samples: dict[str, list[float]] = {name: [] for name in entries}
    errors: dict[str, str] = {}
    for _ in range(runs):
        for name, (module, paths) in entries.items():
            if name in errors:
                continue
            ms, error = import_once(python, name, module, paths)
            if ms is None:
                errors[name] = error
            else:
                samples[name].append(ms)
    results = {}
    for name, (module, _) in entries.items():
        if name in errors:
            results[name] = {"import_ok": False, "module": module, "error": errors[name]}
        else:
            results[name] = {"import_ok": True, "module": module, "samples_ms": [round(x, 1) for x in samples[name]],
                             "import_ms_median": round(statistics.median(samples[name]), 1),
                             "import_ms_min": round(min(samples[name]), 1)}
    return results


def _top_level_ms(importtime: str, modules: list[str]) -> float:
    """Sum of the cumulative times -X importtime reports for the requested modules and their
    parent packages at top level (an indented line is nested inside one of those)."""
    wanted = {".".join(m.split(".")[: i + 1]) for m in modules for i in range(m.count(".") + 1)}
    total = 0.0
    for line in importtime.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, package = line.split("|")
        top_level = package.startswith(" ") and not package.startswith("  ")
        if top_level and package.strip() in wanted:
            total += int(cumulative) / 1000
    return total


def export_baseline(ref: str) -> Path:
    """functions/api and the app layer as they were at `ref`."""
    shutil.rmtree(BASELINE_DIR, ignore_errors=True)
    BASELINE_DIR.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "functions/api", "layers/threadgate/python"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(BASELINE_DIR)], input=archive, check=True)
    return BASELINE_DIR


def snapstart_probe(runs: int) -> dict[str, dict]:
    """bench/snapstart_probe.py in fresh interpreters, the two modes interleaved: medians (ms)."""
    samples: dict[str, dict[str, list[float]]] = {"snapstart": {}, "plain": {}}
    for _ in range(runs):
        for mode, times in samples.items():
            done = subprocess.run([sys.executable, str(ROOT / "bench" / "snapstart_probe.py"), mode],
                                  capture_output=True, text=True, check=True, cwd=ROOT)
            for key, ms in json.loads(done.stdout.strip().splitlines()[-1]).items():
                times.setdefault(key, []).append(ms)
    return {mode: {key: {"median_ms": round(statistics.median(v), 1), "min_ms": min(v), "samples_ms": v}
                   for key, v in times.items()} for mode, times in samples.items()}


def tree_mb(path: Path, exclude_cache: bool = True) -> float:
    files = [p for p in path.rglob("*") if p.is_file()]
    if exclude_cache:
        files = [p for p in files if "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return round(sum(p.stat().st_size for p in files) / 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", help="a git ref whose api handler is measured alongside (before/after)")
    args = parser.parse_args()
    python = lambda_python()
    mirror = host_mirror_layer(python)
    sdk = runtime_sdk_dir()
    app_layer = ROOT / "layers" / "threadgate" / "python"
    entries = {name: (module, [ROOT / "functions" / name, mirror, app_layer, sdk])
               for name, module in ENTRY_MODULES.items()}
    entries["api_chat_first_request"] = ("api_handler", entries["api"][1])
    if args.baseline:
        before = export_baseline(args.baseline)
        entries["api_baseline"] = ("api_handler", [before / "functions" / "api", mirror,
                                                   before / "layers" / "threadgate" / "python", sdk])
    # A yardstick measured the same way, interleaved: a loaded machine slows everything alike.
    entries["fastapi_alone"] = ("fastapi", [mirror, sdk])
    try:
        imports = measure_all(python, entries, args.runs)
    finally:
        shutil.rmtree(sdk)
    calibration = imports.pop("fastapi_alone")

    deployable = LAYER_DIR / BUILD_INFO
    sizes = {
        "functions_mb": {name: tree_mb(ROOT / "functions" / name) for name in ENTRY_MODULES},
        "threadgate_layer_mb": tree_mb(ROOT / "layers" / "threadgate"),
        # the deployable layer keeps its .pyc files: they are what Lambda loads
        "deps_layer_mb": tree_mb(LAYER_DIR, exclude_cache=False) if deployable.is_file() else None,
        "deps_layer_build": json.loads(deployable.read_text()) if deployable.is_file() else None,
    }
    if sizes["deps_layer_mb"] is not None:
        sizes["layers_total_mb"] = round(sizes["threadgate_layer_mb"] + sizes["deps_layer_mb"], 2)
    api = imports["api"]
    results = {
        "python": subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True).stdout.strip(),
        "machine": platform.machine(),
        "runs": args.runs,
        "baseline": args.baseline and subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
                                                     capture_output=True, text=True).stdout.strip(),
        "imports": imports,
        "snapstart_probe": {"python": platform.python_version(), "aws": "moto (in-process)",
                            **snapstart_probe(PROBE_RUNS)},
        "calibration_import_fastapi": calibration,
        # per round, api handler / fastapi alone: the handler's own cost, less sensitive to load
        "api_import_vs_fastapi_median": round(statistics.median(
            a / f for a, f in zip(api["samples_ms"], calibration["samples_ms"])), 2) if api.get("import_ok") else None,
        "sizes": sizes,
        "targets": {
            "api_import_ms": TARGET_API_IMPORT_MS,
            # judged on the least-disturbed run: load from other processes only ever adds time
            "api_import_met": bool(api.get("import_ok")) and api["import_ms_min"] <= TARGET_API_IMPORT_MS,
            "layers_mb": TARGET_LAYERS_MB,
            "layers_met": sizes.get("layers_total_mb") is not None and sizes["layers_total_mb"] <= TARGET_LAYERS_MB,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
