"""The console's vendored chart library is exactly the npm package package-lock.json pins.

`npm ci` verifies the tarball against the lock's sha512 `integrity`; scripts/vendor_assets.py
copies from that install and records what it copied. Here: the record matches the lock, the
committed files match the record, and (where node_modules is installed, as `make test` does) the
committed files are byte for byte the installed package's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scripts.vendor_assets import ASSETS, ROOT, VENDOR_DIR, locked

MANIFEST = json.loads((VENDOR_DIR / "VENDORED.json").read_text())


@pytest.mark.parametrize("package", sorted(ASSETS))
def test_vendored_record_matches_the_lock_and_the_committed_files(package):
    entry = MANIFEST[package]
    assert {"version": entry["version"], "integrity": entry["integrity"]} == locked(package)
    assert entry["integrity"].startswith("sha512-")
    assert set(entry["files"]) == {name for _, name in ASSETS[package]}
    for name, info in entry["files"].items():
        assert hashlib.sha256((VENDOR_DIR / name).read_bytes()).hexdigest() == info["sha256"], name


@pytest.mark.parametrize("package", sorted(ASSETS))
def test_vendored_files_are_the_npm_package_files(package):
    installed = ROOT / "node_modules" / package
    if not (installed / "package.json").is_file():
        pytest.skip(f"node_modules/{package} is not installed (npm ci; make test runs it)")
    assert json.loads((installed / "package.json").read_text())["version"] == MANIFEST[package]["version"]
    for source, name in ASSETS[package]:
        assert (VENDOR_DIR / name).read_bytes() == (installed / source).read_bytes(), name


def test_the_page_loads_only_vendored_scripts():
    html = (Path(VENDOR_DIR).parent / "index.html").read_text()
    assert 'src="vendor/chart.umd.min.js"' in html
