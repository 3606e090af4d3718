"""Tokens per second of every data source, and graph build time, on one core.

Targets (issue 3): unbiased walks on a 50,000-node, 2,000,000-edge G(n, m) graph at >= 20M
tokens/s on one core, biased walks (kappa = 1) at >= 5M. Baseline in the same run: a plain
vectorised numpy walk (about 30M tokens/s on one core when scaledb was designed), on the same graph and batch shape,
and the ratio of the source to it. Two batch shapes: the trainer's (64 sequences of 51 tokens,
where per-step numpy overhead dominates) and a bulk one (4096 x 100).

    python benchmarks/bench_sources.py          # default: ~1-2 minutes
    python benchmarks/bench_sources.py --full   # + networkx G(n, m) and a 2M-edge BA graph, a 1M-token teacher

Numbers on a shared machine are noisy: each figure is the best of several timed repeats.
"""

from __future__ import annotations

import os

# one core: pin BLAS/OpenMP pools before numpy and torch load
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "corpus" / "tinyshakespeare.txt"
FIXTURE = REPO / "specs" / "data" / "tiny_corpus.txt"
SHAPES = ((64, 51), (4096, 100))


def rate(fn, tokens: int, seconds: float = 1.5, repeats: int = 3) -> float:
    """Best tokens/s over `repeats` windows of ~`seconds` each (best: least disturbed by neighbours)."""
    fn(0)
    best = 0.0
    i = 1
    for _ in range(repeats):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds / repeats:
            fn(i)
            i += 1
            n += 1
        best = max(best, n * tokens / (time.perf_counter() - t0))
    return best


def plain_walk(indptr: np.ndarray, indices: np.ndarray, batch: int, length: int, seed: int) -> np.ndarray:
    """The baseline: the simplest vectorised numpy walk (uniform start, no stationarity)."""
    rng = np.random.default_rng(seed)
    deg = np.diff(indptr)
    cur = rng.integers(0, len(deg), batch)
    out = np.empty((length, batch), dtype=np.int64)
    out[0] = cur
    for t in range(1, length):
        cur = indices[indptr[cur] + (rng.random(batch) * deg[cur]).astype(np.int64)]
        out[t] = cur
    return out.T


def row(name: str, value: str) -> None:
    print(f"  {name:<50} {value}")


def bench_graphs(cache: Path, full: bool) -> None:
    from scaling_db.sources.graphs import GraphWalkSource, load_graph
    from scaling_db.spec.data import GraphWalkData

    spec = {"kind": "erdos_renyi_gnm", "n": 50_000, "m": 2_000_000, "seed": 0}
    print("graph build (G(n=50,000, m=2,000,000))")
    data0 = GraphWalkData.model_validate({"kind": "graph_walk", "graph": spec})
    _, build_s, _ = load_graph(data0.graph, cache)
    row("numpy fast path, to CSR, written to the cache", f"{build_s:.2f} s")
    t0 = time.perf_counter()
    load_graph(data0.graph, cache)
    row("load from the cache", f"{time.perf_counter() - t0:.2f} s")
    if full:
        import networkx as nx

        t0 = time.perf_counter()
        g = nx.gnm_random_graph(50_000, 2_000_000, seed=0)
        t1 = time.perf_counter()
        np.array(list(g.edges()), dtype=np.int64)
        row("networkx gnm_random_graph (for comparison)", f"{t1 - t0:.1f} s + {time.perf_counter() - t1:.1f} s edges")
        ba = GraphWalkData.model_validate(
            {"kind": "graph_walk", "graph": {"kind": "barabasi_albert", "n": 50_000, "m": 40}}
        ).graph
        _, s, _ = load_graph(ba, cache)
        row("networkx barabasi_albert(n=50,000, m=40) (2M edges), to CSR", f"{s:.1f} s")

    for kappa in (0.0, 1.0):
        t0 = time.perf_counter()
        src = GraphWalkSource(GraphWalkData.model_validate({"kind": "graph_walk", "graph": spec, "kappa": kappa}),
                              cache_dir=cache)
        setup = time.perf_counter() - t0
        label = "unbiased" if kappa == 0 else f"biased (kappa={kappa:g})"
        print(f"{label} walks; source setup from cache (components, pi, alias tables): {setup:.2f} s")
        for b, length in SHAPES:
            r = rate(lambda i: src.batch("train", i, b, length), b * length)
            base = rate(lambda i: plain_walk(src.graph.indptr, src.graph.indices, b, length, i), b * length)
            # the source returns a C-contiguous (B, L) array; the plain walk's result is a
            # transposed view, so its cost with the same copy is shown too
            copied = rate(
                lambda i: np.ascontiguousarray(plain_walk(src.graph.indptr, src.graph.indices, b, length, i)),
                b * length,
            )
            row(
                f"batch {b} x {length}",
                f"{r / 1e6:6.1f} M tok/s  (plain walk {base / 1e6:5.1f} M, ratio {r / base:.2f}; "
                f"with the (B, L) copy {copied / 1e6:5.1f} M, ratio {r / copied:.2f})",
            )


def bench_language(cache: Path) -> None:
    from scaling_db.sources import build_source
    from scaling_db.spec.data import CorpusData, LanguageBigramData

    path = SHAKESPEARE if SHAKESPEARE.exists() else FIXTURE
    print(f"language sources on {path.name} ({path.stat().st_size / 1e6:.2f} MB)")
    for tok in ({"kind": "char"}, {"kind": "bpe", "vocab_size": 4096}):
        name = "char" if tok["kind"] == "char" else "bpe 4096"
        t0 = time.perf_counter()
        big = build_source(LanguageBigramData.model_validate({"kind": "language_bigram", "corpus": str(path),
                                                              "tokenizer": tok}),
                           base_dir=REPO, cache_dir=cache)
        row(f"bigram {name}: build (tokenizer training, encoding, tables)", f"{time.perf_counter() - t0:.2f} s")
        for b, length in SHAPES:
            r = rate(lambda i: big.batch("train", i, b, length), b * length)
            row(f"bigram {name}, batch {b} x {length}", f"{r / 1e6:6.1f} M tok/s")
        corp = build_source(CorpusData.model_validate({"kind": "corpus", "corpus": str(path), "tokenizer": tok}),
                            base_dir=REPO, cache_dir=cache)
        n_batches = corp.max_sequences("train", 51) // 64
        r = rate(lambda i: corp.batch("train", i % n_batches, 64, 51), 64 * 51)
        row(f"corpus {name}, batch 64 x 51", f"{r / 1e6:6.1f} M tok/s")


def bench_teacher(cache: Path, full: bool) -> None:
    import torch

    torch.set_num_threads(1)
    from scaling_db.sources import build_source
    from scaling_db.spec.resolve import teacher_manifest
    from scaling_db.spec.manifest import ResolvedTeacherLMData, RunOrigin
    from scaling_db.training.execute import execute_run
    from scaling_db.workspace import Workspace, atomic_write_text

    tokens = 1_000_000 if full else 60_000
    fields = {"kind": "teacher_lm", "corpus": str(FIXTURE), "n_layers": 1, "d_model": 32, "context": 50,
              "train_tokens": tokens}
    # the teacher is an upstream run: write its manifest, train it like any run, then sample
    teacher = teacher_manifest(ResolvedTeacherLMData.model_validate(fields), RunOrigin(spec_path="-", base_dir=str(REPO)))
    ws = Workspace(cache / "ws")
    atomic_write_text(ws.manifest_path(teacher.run_id), teacher.model_dump_json())
    t0 = time.perf_counter()
    execute_run(ws, teacher.run_id, device="cpu", threads=1)
    print(f"teacher_lm (1 layer, d_model 32, context 50): trained on {tokens:,} tokens in "
          f"{time.perf_counter() - t0:.1f} s")
    data = ResolvedTeacherLMData.model_validate({**fields, "teacher_run_id": teacher.run_id})
    src = build_source(data, base_dir=REPO, cache_dir=ws.cache_dir, runs_dir=ws.runs_dir)
    rng = np.random.default_rng(0)
    for b, length in ((64, 51), (256, 51)):
        r = rate(lambda i: src.sample(rng, b, length), b * length, seconds=3.0)
        row(f"sampling, batch {b} x {length}", f"{r / 1e3:6.1f} k tok/s")
    src.batch("train", 0, 64, 51)
    t0 = time.perf_counter()
    src.batch("train", 0, 64, 51)
    row("batch 64 x 51 again, from the sample cache", f"{64 * 51 / (time.perf_counter() - t0) / 1e6:6.1f} M tok/s")


def bench_solvers(cache: Path) -> None:
    from scaling_db.sources.percolation import solve_percolation
    from scaling_db.sources.random_features import solve_random_features
    from scaling_db.spec.schema import ClosedFormTrain, NearestNeighborModel, RandomFeaturesModel
    from scaling_db.spec.data import PercolationData, RandomFeaturesData

    print("solvable models (one run each)")
    rf = RandomFeaturesData(kind="random_features", latent_dim=1000)
    t0 = time.perf_counter()
    solve_random_features(rf, RandomFeaturesModel(kind="random_features", n_features=400),
                          ClosedFormTrain(kind="closed_form", samples=2000))
    row("random_features M=1000, N=400, T=2000", f"{time.perf_counter() - t0:.2f} s")
    perc = PercolationData(kind="percolation", n_clusters=10_000, max_cluster_size=100_000)
    for label in ("build + solve", "solve (universe cached)"):
        t0 = time.perf_counter()
        solve_percolation(perc, NearestNeighborModel(kind="nearest_neighbor"),
                          ClosedFormTrain(kind="closed_form", samples=100_000, eval_samples=20_000), cache)
        row(f"percolation 10,000 clusters, T=100,000: {label}", f"{time.perf_counter() - t0:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the slow comparisons (networkx, a real teacher)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {os.cpu_count()} cores ({cores} usable), load average {os.getloadavg()[0]:.1f}; "
          "every figure is one core")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        bench_graphs(cache, args.full)
        bench_language(cache)
        bench_teacher(cache, args.full)
        bench_solvers(cache)


if __name__ == "__main__":
    main()
