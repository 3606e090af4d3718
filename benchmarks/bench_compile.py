"""Compile a spec that expands to 10,000 runs; report total time and time per run.

Target (issue 2): under 2 s on a 2-core machine. Baseline in the same run: the cost of just
validating the same 10,000 points with Pydantic and hashing them (no sweep logic, no
resolution), to show what the compiler adds on top of the unavoidable work.

    python benchmarks/bench_compile.py [--runs 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

SPEC = """
experiment: bench
data:
  kind: graph_walk
  graph: {{kind: barabasi_albert, n: 500, m: 2}}
model:
  kind: transformer
  d_model: 64
train:
  optimizer: {{kind: adamw, lr: 3.0e-3}}
  tokens: 1.0e6
sweep:
  vars: [width_mult]
  axes:
    width_mult: {{linspace: [1, {widths}], num: {widths}, integer: true}}
    train.optimizer.lr: {{geomspace: [1.0e-4, 1.0e-1], num: 25}}
    model.n_layers: [2, 4]
  seeds: [0, 1, 2, 3]
  derive:
    model.d_model: "16 * width_mult"
    train.tokens: "20 * n_params_nonembed"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    widths = max(1, args.runs // (25 * 2 * 4))

    from scaling_db.spec.compiler import compile_spec
    from scaling_db.spec.manifest import canonical_json
    from scaling_db.spec.schema import RunSpec

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(SPEC.format(widths=widths))
        compile_spec(path)  # warm imports and Pydantic's validators
        t0 = time.perf_counter()
        compiled = compile_spec(path)
        elapsed = time.perf_counter() - t0
    n = len(compiled.runs) + len(compiled.dropped)

    # Baseline: validate + dump + hash the same points with no sweep machinery.
    points = [m.model_dump(mode="json", include={"data", "model", "train"}) for m in compiled.runs]
    for p in points:
        p["model"] = {k: v for k, v in p["model"].items() if k not in ("d_ff", "vocab_size")}
        t = p["train"]
        p["train"] = {"optimizer": t["optimizer"], "tokens": t["tokens"], "seed": t["seed"]}
    t0 = time.perf_counter()
    for p in points:
        spec = RunSpec.model_validate(p)
        hashlib.sha256(canonical_json(spec.model_dump(mode="json")).encode()).hexdigest()
    baseline = time.perf_counter() - t0

    print(f"cores: {os.cpu_count()}")
    print(f"compile: {n} sweep points -> {len(compiled.runs)} runs in {elapsed:.2f} s "
          f"({elapsed / n * 1e6:.0f} us/run; target < 2 s for 10,000)")
    print(f"baseline (validate + hash only, same points): {baseline:.2f} s "
          f"({baseline / len(points) * 1e6:.0f} us/run); compiler / baseline = {elapsed / baseline:.2f}x")


if __name__ == "__main__":
    main()
