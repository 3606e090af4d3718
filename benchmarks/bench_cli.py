"""Start-up time of the `scaledb` command line, beside a bare interpreter measured in the same run.

Targets (issue 17): `scaledb --version` and `scaledb --help` take under 0.3 s more than
`python -c pass`; `scaledb validate specs/ba_graph.yaml` takes under 1 s in all. For scale, the
last row imports every command module, which is what every command did before the CLI was lazy.
Each figure is the median of --repeat fresh processes (wall clock, this checkout on PYTHONPATH).

    python benchmarks/bench_cli.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "scaling_db"]

#: (label, command, target: seconds over the bare interpreter, or None; total seconds, or None)
CASES: list[tuple[str, list[str], float | None, float | None]] = [
    ("python -c pass", [sys.executable, "-c", "pass"], None, None),
    ("scaledb --version", [*CLI, "--version"], 0.3, None),
    ("scaledb --help", [*CLI, "--help"], 0.3, None),
    ("scaledb validate specs/ba_graph.yaml", [*CLI, "validate", "specs/ba_graph.yaml"], None, 1.0),
    ("import every command module", [sys.executable, "-c",
                                     "import scaling_db.cli as c; c.load_all_commands()"], None, None),
]


def median_seconds(command: list[str], repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    median_seconds(CASES[-1][1], 1)  # warm the file cache and bytecode so every row is measured alike
    bare = None
    print(f"{'command':40s} {'median s':>9s} {'- bare s':>9s} {'x bare':>7s}  target")
    for label, command, over_bare, total in CASES:
        seconds = median_seconds(command, args.repeat)
        bare = seconds if bare is None else bare
        verdict = ""
        if over_bare is not None:
            verdict = f"{'ok' if seconds - bare < over_bare else 'MISSED'} (< {over_bare} s over bare)"
        elif total is not None:
            verdict = f"{'ok' if seconds < total else 'MISSED'} (< {total} s)"
        print(f"{label:40s} {seconds:9.3f} {seconds - bare:9.3f} {seconds / bare:7.1f}  {verdict}")


if __name__ == "__main__":
    main()
