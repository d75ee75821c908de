"""Vendor the console's chart library from the npm registry, pinned and integrity-checked.

`npm ci` (make vendor) installs exactly what package-lock.json names and refuses a tarball whose
sha512 differs from the lock's `integrity`. This script copies the browser build and its licence
from that verified install into the package (threadgate/console/vendor/) and writes
VENDORED.json (version, the lock's integrity, the file's sha256). The copy is committed, so
`make dev` and the Lambda layer need no Node; tests/unit/test_console_assets.py checks the copy
against the lock and, where node_modules is installed, byte for byte against the npm package.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR_DIR = ROOT / "layers" / "threadgate" / "python" / "threadgate" / "console" / "vendor"
# package -> (file in the npm package, name in vendor/)
ASSETS = {
    "chart.js": [("dist/chart.umd.min.js", "chart.umd.min.js"), ("LICENSE.md", "chart.js.LICENSE.md")],
}


def locked(package: str) -> dict[str, str]:
    entry = json.loads((ROOT / "package-lock.json").read_text())["packages"][f"node_modules/{package}"]
    return {"version": entry["version"], "integrity": entry["integrity"]}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    manifest = {}
    for package, files in ASSETS.items():
        lock = locked(package)
        installed = ROOT / "node_modules" / package
        version = json.loads((installed / "package.json").read_text())["version"]
        if version != lock["version"]:
            print(f"{package} {version} is installed, the lock says {lock['version']}: run npm ci", file=sys.stderr)
            return 1
        VENDOR_DIR.mkdir(parents=True, exist_ok=True)
        copied = {}
        for source, name in files:
            shutil.copyfile(installed / source, VENDOR_DIR / name)
            copied[name] = {"source": source, "sha256": sha256(VENDOR_DIR / name)}
        manifest[package] = {**lock, "files": copied}
    (VENDOR_DIR / "VENDORED.json").write_text(json.dumps(manifest, indent=2) + "\n")
    names = ", ".join(f"{package} {entry['version']}" for package, entry in manifest.items())
    print(f"vendored {names} into {VENDOR_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
