"""`make bench`: run every benchmark in turn; each prints its numbers and writes bench/results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for name in ("core_bench.py", "passthrough_bench.py", "toolloop_bench.py", "search_bench.py", "coldstart_bench.py", "abuse_bench.py"):
    script = HERE / name
    if script.exists():
        print(f"\n=== {name} ===", flush=True)
        subprocess.run([sys.executable, str(script)], check=True)

subprocess.run([sys.executable, str(HERE / "report.py")], check=True)  # docs/benchmarks.md
