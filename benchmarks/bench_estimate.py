"""Plan estimates against the measured time (issue 15: within 30% once one run of a similar shape
has finished).

    python benchmarks/bench_estimate.py [--widths 16,24,32,48] [--steps 40] [--rounds 3]

A shrunk `specs/ba_graph.yaml` (its width sweep; `--steps` steps of its batch, 5 checkpoints,
3,200 eval tokens): the first width is trained and loaded, every other width is estimated from it
alone by `estimate_run` (one measured shape), then trained; estimate and actual time are compared
on the trainer's clock (no process start, no data build). Beside it, the former model (tokens/s
scaled by FLOPs per token^-0.5) on the same measurement, as the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaling_db.spec.compiler import compile_spec  # noqa: E402
from scaling_db.spec.plan import DEFAULT_GFLOPS, estimate_run  # noqa: E402
from scaling_db.store.ingest import ingest_runs  # noqa: E402
from scaling_db.store.throughput import measured_throughput  # noqa: E402
from scaling_db.training.execute import execute_run  # noqa: E402
from scaling_db.training.records import read_log  # noqa: E402
from scaling_db.workspace import Workspace  # noqa: E402


def one_round(spec: dict, gflops: float) -> dict[int, tuple[float, float]]:
    """Train the first width, estimate the others from it alone, train them: width -> (estimate
    / actual, former model / actual)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "ba.yaml").write_text(yaml.safe_dump(spec))
        compiled = compile_spec(Path(tmp) / "ba.yaml")
        ws = Workspace(Path(tmp) / "ws")
        ws.write_compiled(compiled)
        first, *rest = compiled.runs
        print(f"load average {os.getloadavg()[0]:.1f}; measuring d_model={first.model.d_model}")
        execute_run(ws, first.run_id, device="cpu", threads=1)
        ingest_runs(ws, [first.run_id])
        samples = measured_throughput(ws)
        base = samples[0]
        print(f"  measured: {base.step_s * 1000:.1f} ms/step steady, {base.other_s:.2f} s outside steady steps, "
              f"{base.wall_time_s:.2f} s in all")
        for m in rest:
            est = estimate_run(m, samples, gflops=gflops)
            fpt = m.flops_per_token["exact"]
            former = base.other_s + m.tokens / (base.tokens_per_s * (base.flops_per_token / fpt) ** 0.5)
            execute_run(ws, m.run_id, device="cpu", threads=1)
            actual = read_log(ws.log_path(m.run_id))[-1].wall_time_s
            out[m.model.d_model] = (est.seconds / actual, former / actual)
            print(f"  d_model={m.model.d_model} ({fpt / base.flops_per_token:.1f}x the FLOPs per token): actual "
                  f"{actual:.2f} s; estimate {est.seconds:.2f} s ({est.seconds / actual:.2f}x) [target 0.7-1.3]; "
                  f"former model {former:.2f} s ({former / actual:.2f}x) (load average {os.getloadavg()[0]:.1f})")
        print(f"  basis: {est.basis}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="16,24,32,48")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gflops", type=float, default=DEFAULT_GFLOPS)
    parser.add_argument("--rounds", type=int, default=3, help="independent rounds (a fresh measurement each); "
                        "the median ratio is the figure: one run's speed on a shared machine varies up to 2x")
    args = parser.parse_args()
    spec = yaml.safe_load((REPO / "specs" / "ba_graph.yaml").read_text())
    spec.pop("analysis", None)
    per_step = spec["train"]["batch_size"] * spec["model"]["context"]
    spec["train"].update(tokens=args.steps * per_step, eval_tokens=3200,
                         checkpoints={"kind": "log", "count": 5, "first": 4})
    spec["sweep"]["axes"]["model.d_model"] = [int(w) for w in args.widths.split(",")]
    rounds = [one_round(spec, args.gflops) for _ in range(args.rounds)]
    for width in rounds[0]:
        est = statistics.median(r[width][0] for r in rounds)
        former = statistics.median(r[width][1] for r in rounds)
        print(f"d_model={width}: median over {len(rounds)} rounds, estimate/actual {est:.2f}x "
              f"({'within' if 0.7 <= est <= 1.3 else 'OUTSIDE'} 30%), former model {former:.2f}x")


if __name__ == "__main__":
    main()
