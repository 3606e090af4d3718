"""GPU throughput: scaledb's trainer vs a plain PyTorch loop in bf16, MFU, and sweep throughput with
1 vs K runs sharing one device (issue 15). Under 8 minutes on one GPU; `--tiny` runs it on CPU at
a toy size in seconds (a test calls it), which checks the script, not the figures.

1. Trainer vs plain loop at widths 256-2048 (4 layers, context 256, batch 32, bf16 autocast on
   GPU): tokens/s of `train_lm` (whole call: model init, the one checkpoint at the end with its
   eval, record and state save) against a hand-written loop of the same model, optimizer, batch
   and learning-rate schedule; ratio in the same run. MFU = tokens/s x FLOPs per token (`exact`
   convention, Hoffmann et al. 2022 App. F: forward incl. attention, x3 for training) / peak.
2. The peak: the device's dense bf16 tensor-core peak from its datasheet where the device is in
   PEAKS (source cited there); else the best bf16 matmul measured here (said so in the output).
3. Sweep throughput, runs per hour, of the main job's shapes (specs/ba_graph.yaml, its width
   sweep, at `--sweep-tokens` per run) with K worker processes placing their runs on the same
   device vs one.

    python benchmarks/bench_gpu.py [--widths 256,512,1024,2048] [--steps 60] [--k 4] [--json out.json]
    python benchmarks/bench_gpu.py --tiny
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaling_db.spec.compiler import compile_spec  # noqa: E402
from scaling_db.sources import build_source  # noqa: E402
from scaling_db.training.execute import execute_run  # noqa: E402
from scaling_db.training.model import Transformer  # noqa: E402
from scaling_db.training.records import RunState, RunStatus  # noqa: E402
from scaling_db.training.trainer import autocast, lr_multiplier, train_lm  # noqa: E402
from scaling_db.workspace import Workspace  # noqa: E402

#: Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's datasheets: H100 SXM5 and
#: H200 SXM 989.4 TFLOP/s ("1,979 teraFLOPS with sparsity", H100/H200 datasheets, 2023-2024);
#: A100 SXM 312 TFLOP/s (A100 datasheet, 2021); L4 121 TFLOP/s (L4 datasheet, 2023).
PEAKS = {"H100": (989.4e12, "NVIDIA H100 SXM5 datasheet, dense BF16"),
         "H200": (989.4e12, "NVIDIA H200 SXM datasheet, dense BF16"),
         "A100": (312e12, "NVIDIA A100 SXM datasheet, dense BF16"),
         "L4": (121e12, "NVIDIA L4 datasheet, dense BF16")}

SPEC = """
experiment: bench_gpu
data:
  kind: graph_walk
  graph: {{kind: barabasi_albert, n: 1000, m: 2, seed: 0}}
model: {{kind: transformer, n_layers: {layers}, d_model: {width}, d_head: {d_head}, context: {context}}}
train:
  optimizer: {{kind: adamw, lr: 1.0e-3, weight_decay: 0.01}}
  schedule: {{kind: cosine, warmup_frac: 0.02}}
  batch_size: {batch}
  steps: {steps}
  checkpoints: {{kind: linear, count: 1}}
  eval_tokens: {eval_tokens}
"""


def manifest_for(tmp: Path, size: dict, width: int, steps: int):
    path = tmp / f"w{width}-{steps}.yaml"
    path.write_text(SPEC.format(width=width, steps=steps, **size))
    compiled = compile_spec(path)
    ws = Workspace(tmp / f"ws-{path.stem}")
    ws.write_compiled(compiled)
    return ws, compiled.runs[0]


def plain_loop(manifest, source, steps: int, device: torch.device, precision: str) -> float:
    """What one would write by hand for this manifest; seconds for `steps` steps."""
    tr, cfg = manifest.train, manifest.model
    model = Transformer(cfg, generator=torch.Generator().manual_seed(tr.seed)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tr.optimizer.lr, betas=tr.optimizer.betas,
                            eps=tr.optimizer.eps, weight_decay=tr.optimizer.weight_decay)
    amp = autocast(device, precision)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = tr.optimizer.lr * lr_multiplier(step, tr)
        batch = torch.from_numpy(source.batch("train", step, tr.batch_size, cfg.context + 1)).to(device)
        with amp:
            loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    loss.item()  # waits for the device
    return time.perf_counter() - t0


def device_peak(device: torch.device, precision: str) -> tuple[float, str]:
    """(FLOP/s, where the number comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (peak, source) in PEAKS.items():
            if key in name:
                return peak, f"{source} ({name})"
    n = 4096 if device.type == "cuda" else 512
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(10):
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best, f"measured here: best {precision} {n}x{n} matmul on {device}"


def bench_trainer(tmp: Path, size: dict, widths: list[int], steps: int, device: torch.device, precision: str,
                  peak: float) -> list[dict]:
    rows = []
    for width in widths:
        ws, manifest = manifest_for(tmp, size, width, steps)
        source = build_source(manifest.data, base_dir=tmp, cache_dir=ws.cache_dir)
        tokens = steps * manifest.train.batch_size * manifest.model.context
        plain_loop(manifest, source, 3, device, precision)  # warm-up: kernels, allocator
        plain_s = plain_loop(manifest, source, steps, device, precision)
        t0 = time.perf_counter()
        train_lm(manifest, source, ws, device=device, precision=precision,  # type: ignore[arg-type]
                 status=RunStatus(run_id=manifest.run_id))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        scaledb_s = time.perf_counter() - t0
        fpt = manifest.flops_per_token["exact"]
        row = {"width": width, "plain_tokens_per_s": tokens / plain_s, "scaledb_tokens_per_s": tokens / scaledb_s,
               "ratio": plain_s / scaledb_s, "mfu_plain": tokens / plain_s * fpt / peak,
               "mfu_scaledb": tokens / scaledb_s * fpt / peak}
        print(f"width {width:5d}: plain {row['plain_tokens_per_s']:12,.0f} tok/s  scaledb "
              f"{row['scaledb_tokens_per_s']:12,.0f} tok/s  ratio {row['ratio']:.2f}  "
              f"MFU {row['mfu_plain']:.1%} / {row['mfu_scaledb']:.1%}", flush=True)
        rows.append(row)
    return rows


def sweep_runs_per_hour(tmp: Path, spec: dict, k: int, device: str) -> float:
    """Runs per hour for the spec's runs with `k` worker processes sharing `device`."""
    path = tmp / f"sweep-k{k}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    compiled = compile_spec(path)
    ws = Workspace(tmp / f"ws-sweep-k{k}")
    ws.write_compiled(compiled)
    ids = [m.run_id for m in compiled.runs]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=k, mp_context=get_context("spawn")) as pool:
        # A library function, so spawned workers import it without this script.
        states = [s.status.value for s in pool.map(partial(execute_run, device=device), [ws] * len(ids), ids)]
    elapsed = time.perf_counter() - t0
    assert all(s == RunState.FINISHED.value for s in states), states
    return len(ids) / elapsed * 3600


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="256,512,1024,2048")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--k", type=int, default=4, help="runs sharing the device in the sweep comparison")
    parser.add_argument("--sweep-tokens", type=int, default=500_000,
                        help="tokens per sweep run (the main job's shapes, fewer tokens, to fit 8 minutes)")
    parser.add_argument("--tiny", action="store_true", help="a toy size on CPU (tests)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    precision = "bf16" if cuda else "fp32"  # bf16 matmuls are emulated, slower, on most CPUs
    size = {"layers": 4, "d_head": 64, "context": 256, "batch": 32, "eval_tokens": 8192}
    widths = [int(w) for w in args.widths.split(",")]
    steps, k = args.steps, args.k
    sweep = yaml.safe_load((REPO / "specs" / "ba_graph.yaml").read_text())
    sweep["train"]["tokens"] = args.sweep_tokens
    if args.tiny:
        size = {"layers": 2, "d_head": 8, "context": 16, "batch": 4, "eval_tokens": 64}
        widths, steps, k = [16, 32], 4, 2
        sweep["data"]["graph"].update(n=100, m=2)
        sweep["train"].update(tokens=4_000, eval_tokens=500, checkpoints={"kind": "linear", "count": 1})
        sweep["sweep"]["axes"]["model.d_model"] = [8, 16]
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name(device) if cuda else 'cpu'}, "
          f"{precision}, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        peak, peak_source = device_peak(device, precision)
        print(f"peak {peak / 1e12:.3g} TFLOP/s: {peak_source}", flush=True)
        rows = bench_trainer(Path(tmp), size, widths, steps, device, precision, peak)
        one = sweep_runs_per_hour(Path(tmp), sweep, 1, device.type)
        many = sweep_runs_per_hour(Path(tmp), sweep, k, device.type)
    print(f"sweep of {len(sweep['sweep']['axes']['model.d_model'])} ba_graph shapes: {one:,.0f} runs/h with 1 run "
          f"per device, {many:,.0f} runs/h with {k}: x{many / one:.2f} (load average {os.getloadavg()[0]:.1f})")
    figures = {"device": str(device), "precision": precision, "peak_flops": peak, "peak_source": peak_source,
               "widths": rows, "runs_per_hour_1": one, f"runs_per_hour_{k}": many, "k": k}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
