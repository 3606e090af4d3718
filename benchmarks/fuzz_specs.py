"""A long fuzz of the spec front end: hostile and generated specs through validate and compile.

Each case runs `scaledb validate` and `scaledb compile --dry-run` in a forked child capped at
1 GiB of address space and a wall-clock limit (see tests/spec_fuzz.py). The hostile corpus runs
once, then `--cases` generated specs (drawn over the spec schema, some mutated as text), spread
over `--workers` processes. Prints the count per outcome, the slowest case and the largest
memory growth, and every finding (anything but `valid` or `error`); `--save DIR` keeps the
specs of the findings.

    python benchmarks/fuzz_specs.py [--cases 2000] [--workers 2] [--seed 0] [--save DIR]

Target (issue 12): zero tracebacks, hangs, crashes, memory blow-ups, leaking messages and
validate/compile disagreements; every case answers within a few seconds in a few hundred MB.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from spec_fuzz import GOOD_OUTCOMES, HOSTILE, CaseResult, generated_spec, run_case  # noqa: E402


def _case(seed: int, index: int) -> tuple[str, str | bytes]:
    if index < len(HOSTILE):
        name = sorted(HOSTILE)[index]
        return name, HOSTILE[name]
    return f"generated-{seed}-{index}", generated_spec(random.Random(seed * 1_000_003 + index))


def _run_chunk(seed: int, indices: list[int], timeout_s: float) -> list[tuple[CaseResult, str | bytes]]:
    import scaling_db.cli  # noqa: F401  (paid once per worker, before the cases fork)

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in indices:
            name, text = _case(seed, index)
            out.append((run_case(name, text, Path(tmp) / f"case{index}", timeout_s), text))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="generated cases (the hostile corpus runs too)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case")
    parser.add_argument("--save", type=Path, help="write the spec of each finding here")
    args = parser.parse_args()

    total = len(HOSTILE) + args.cases
    chunks = [list(range(w, total, args.workers)) for w in range(args.workers)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        parts = list(pool.map(_run_chunk, [args.seed] * args.workers, chunks, [args.timeout] * args.workers))
    wall = time.perf_counter() - start
    results = [r for part in parts for r in part]

    counts = collections.Counter(r.outcome for r, _ in results)
    print(f"{len(results)} cases ({len(HOSTILE)} hostile, {args.cases} generated, seed {args.seed}) "
          f"in {wall:.0f} s on {args.workers} workers")
    for outcome in (*GOOD_OUTCOMES, "traceback", "hang", "crash", "memory", "bad-message", "disagree"):
        print(f"  {outcome:12s} {counts.get(outcome, 0)}")
    slowest = max(results, key=lambda x: x[0].seconds)[0]
    biggest = max(results, key=lambda x: x[0].extra_rss_mb)[0]
    seconds = sorted(r.seconds for r, _ in results)
    print(f"  time per case: median {seconds[len(seconds) // 2]:.2f} s, max {slowest.seconds:.2f} s ({slowest.name})")
    print(f"  memory growth: max {biggest.extra_rss_mb:.0f} MB ({biggest.name})")
    findings = [(r, text) for r, text in results if r.outcome not in GOOD_OUTCOMES]
    for r, text in findings:
        print(f"FINDING {r.outcome} {r.name}: {r.detail[:300]}")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            data = text.encode() if isinstance(text, str) else text
            (args.save / f"{r.name}.yaml").write_bytes(data)
    raise SystemExit(1 if findings else 0)


if __name__ == "__main__":
    main()
