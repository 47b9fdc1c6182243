"""Which Kubernetes client costs the agent least at start-up and in memory.

Creates one throw-away virtualenv per candidate (lightkube, kubernetes_asyncio, kr8s), installs
it from PyPI, then measures in fresh interpreters: import time (median of N runs) and the
resident set added by the import. Prints each against lightkube, measured in the same run.
Usage: python bench/k8s_client_import.py [--runs 7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = {
    # what the agent would import to list/watch Nodes with each client
    "lightkube": "import lightkube, lightkube.config.kubeconfig, lightkube.resources.core_v1",
    "kubernetes_asyncio": "import kubernetes_asyncio.client, kubernetes_asyncio.config",
    "kr8s": "import kr8s.asyncio",
}
PROBE = """
import json, resource, time
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
{stmt}
elapsed = time.perf_counter() - t
print(json.dumps({{"seconds": elapsed,
                  "kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base}}))
"""


def measure(python: Path, stmt: str, runs: int) -> tuple[float, float]:
    seconds, kib = [], []
    for _ in range(runs):
        out = subprocess.run([str(python), "-c", PROBE.format(stmt=stmt)], check=True,
                             capture_output=True, text=True).stdout
        sample = json.loads(out)
        seconds.append(sample["seconds"])
        kib.append(sample["kib"])
    return statistics.median(seconds), statistics.median(kib)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", help="directory for the virtualenvs (reused if present)")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="kfa-bench-"))
    results = {}
    for package, stmt in CANDIDATES.items():
        venv = root / package
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", package], check=True)
        results[package] = measure(venv / "bin" / "python", stmt, args.runs)
    base_s, base_kib = results["lightkube"]
    print(f"{'client':20} {'import ms':>10} {'RSS MiB':>8} {'time x':>7} {'mem x':>6}")
    for package, (s, kib) in results.items():
        print(f"{package:20} {s * 1000:10.0f} {kib / 1024:8.1f} {s / base_s:7.2f} "
              f"{kib / base_kib:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
