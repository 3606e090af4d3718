"""Random graphs for walks: construction, on-disk cache, components, and the walk source.

Construction. Barabasi-Albert, random regular and Watts-Strogatz graphs come from networkx's
seeded generators. Erdos-Renyi graphs are drawn with numpy instead (a documented fast path):
networkx needs about 15 s to build the paper's largest graph (50,000 nodes, 2,000,000 edges)
and as long again to convert it (measured on a 2-core machine); numpy draws the same distribution in under a
second. G(n, m) is a uniform m-subset of the n(n-1)/2 node pairs (Generator.choice without
replacement); G(n, p) draws its edge count M ~ Binomial(n(n-1)/2, p) and then a uniform
M-subset, which is exactly G(n, p) (conditioned on M edges, G(n, p) is uniform over M-edge
graphs; Bollobas, "Random Graphs", 2nd ed., section 2.1). So a seed gives a different graph
than `networkx.gnm_random_graph(n, m, seed)` would, from the same distribution.

Cache. The raw graph is stored as CSR in `cache_dir/graphs/<hash>.npz`, the hash covering the
graph section of the spec and `GRAPH_FORMAT` (bumped when construction changes). Seeded
generators are deterministic for a given numpy / networkx version; `describe()` reports an
edge fingerprint so a change across versions is visible.

Components. A walk stays in its start's component, so a disconnected graph is handled
explicitly: `component: largest` walks on the largest connected component (ties: the one
holding the lowest node id); nodes outside it keep their token ids but have zero stationary
mass and never appear. `component: error` refuses a disconnected graph.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from scaling_db.errors import DataError
from scaling_db.sources import Split, TokenSource, batch_rng, check_batch_args, config_hash
from scaling_db.sources.walks import MarkovChain, Walker, degree_biased_walk
from scaling_db.workspace import atomic_write_bytes

#: Bump when any construction algorithm changes, so cached graphs are rebuilt.
GRAPH_FORMAT = 1


@dataclass(frozen=True)
class Graph:
    """An undirected simple graph in CSR form (each edge stored in both directions)."""

    n: int
    indptr: np.ndarray  # int64 (n + 1,)
    indices: np.ndarray  # int64 (2m,), sorted within each row

    @property
    def n_edges(self) -> int:
        return len(self.indices) // 2

    @property
    def degree(self) -> np.ndarray:
        return np.diff(self.indptr)

    def fingerprint(self) -> str:
        """SHA-256 prefix of the edge list: equal graphs have equal fingerprints."""
        h = hashlib.sha256(np.int64(self.n).tobytes())
        h.update(self.indptr.astype(np.int64).tobytes())
        h.update(self.indices.astype(np.int64).tobytes())
        return h.hexdigest()[:16]


def graph_from_edges(n: int, u: np.ndarray, v: np.ndarray) -> Graph:
    """CSR of the undirected graph with edges (u[k], v[k]); input must be simple (no loops,
    no duplicates)."""
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    src = np.concatenate([u, v])
    dst = np.concatenate([v, u])
    order = np.argsort(src * n + dst, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return Graph(n=n, indptr=indptr, indices=dst[order])


def _pair_from_index(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major index k of the strict upper triangle of an n x n matrix -> (i, j), i < j.

    Row i starts at S(i) = i*(2n - i - 1)/2; i is the largest row with S(i) <= k, found from the
    quadratic formula in float64 and then corrected by one step either way (exact for n < 2**26)."""
    k = k.astype(np.int64)
    b = 2 * n - 1
    i = np.floor((b - np.sqrt(float(b) ** 2 - 8.0 * k)) / 2.0).astype(np.int64)
    i = np.clip(i, 0, n - 2)

    def row_start(r: np.ndarray) -> np.ndarray:
        return r * (2 * n - r - 1) // 2

    i -= row_start(i) > k
    i += row_start(i + 1) <= k
    j = k - row_start(i) + i + 1
    return i, j


def _uniform_edges(n: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """m distinct node pairs drawn uniformly: a uniform random m-edge simple graph."""
    n_pairs = n * (n - 1) // 2
    k = rng.choice(n_pairs, size=m, replace=False) if m else np.zeros(0, dtype=np.int64)
    return _pair_from_index(np.sort(k), n)


def construct_graph(spec: Any) -> Graph:
    """Build the graph of a graph spec (no caching; see module docstring for algorithms)."""
    kind = spec.kind
    if kind in ("erdos_renyi_gnm", "erdos_renyi_gnp"):
        # a stream of its own, so graph seed s and walk seed s share no random numbers
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed % 2**64, 0x6E7]))
        n = spec.n
        if kind == "erdos_renyi_gnm":
            m = spec.m
        else:
            m = int(rng.binomial(n * (n - 1) // 2, spec.p))
        u, v = _uniform_edges(n, m, rng)
        return graph_from_edges(n, u, v)

    import networkx as nx

    if kind == "barabasi_albert":
        g = nx.barabasi_albert_graph(spec.n, spec.m, seed=spec.seed)
    elif kind == "random_regular":
        g = nx.random_regular_graph(spec.d, spec.n, seed=spec.seed)
    elif kind == "watts_strogatz":
        g = nx.watts_strogatz_graph(spec.n, spec.k, spec.p, seed=spec.seed)
    else:  # pragma: no cover - the spec's discriminated union admits nothing else
        raise AssertionError(f"unknown graph kind {kind!r}")
    edges = np.array(list(g.edges()), dtype=np.int64).reshape(-1, 2)
    edges = edges[edges[:, 0] != edges[:, 1]]  # generators here make simple graphs; be sure
    return graph_from_edges(spec.n, edges[:, 0], edges[:, 1])


def describe_graph_spec(spec: Any) -> str:
    """`barabasi_albert(n=500, m=2, seed=0)`: the graph as a user would name it."""
    fields = ", ".join(f"{k}={v}" for k, v in spec.model_dump().items() if k != "kind")
    return f"{spec.kind}({fields})"


def load_graph(spec: Any, cache_dir: Path | None) -> tuple[Graph, float, bool]:
    """The graph of `spec`, from the cache when built before. Returns (graph, build_s, cached)."""
    path = None
    if cache_dir is not None:
        key = config_hash({"graph": spec.model_dump(mode="json"), "format": GRAPH_FORMAT})
        path = Path(cache_dir) / "graphs" / f"{key}.npz"
        if path.exists():
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                graph = Graph(n=int(z["n"]), indptr=z["indptr"].astype(np.int64), indices=z["indices"].astype(np.int64))
            return graph, float(meta["build_s"]), True
    t0 = time.perf_counter()
    graph = construct_graph(spec)
    build_s = time.perf_counter() - t0
    if path is not None:
        small = graph.n < 2**31
        buf = io.BytesIO()
        np.savez(
            buf,
            n=np.int64(graph.n),
            indptr=graph.indptr,
            indices=graph.indices.astype(np.int32 if small else np.int64),
            meta=json.dumps({"graph": spec.model_dump(mode="json"), "build_s": build_s}),
        )
        atomic_write_bytes(path, buf.getvalue())
    return graph, build_s, False


@dataclass(frozen=True)
class ComponentInfo:
    n_components: int
    walked_nodes: int
    walked_edges: int


def restrict_to_component(graph: Graph, policy: str, label: str) -> tuple[Graph, ComponentInfo]:
    """The graph the walk runs on: all of it when connected, else per `policy`."""
    if graph.n_edges == 0:
        raise DataError(
            f"graph {label}: no edges to walk on (got {graph.n} nodes and 0 edges). "
            "Raise m (or p, d, k) so the graph has edges."
        )
    adj = sp.csr_array((np.ones(len(graph.indices), dtype=np.int8), graph.indices, graph.indptr), shape=(graph.n, graph.n))
    n_comp, labels = connected_components(adj, directed=False)
    if n_comp == 1:
        return graph, ComponentInfo(1, graph.n, graph.n_edges)
    sizes = np.bincount(labels)
    biggest = int(np.argmax(sizes))  # argmax: first maximal label = component of the lowest node id
    if policy == "error":
        raise DataError(
            f"graph {label}: not connected ({n_comp} components; the largest has "
            f"{sizes[biggest]} of {graph.n} nodes). Set `component: largest` to walk on the "
            "largest component, or add edges."
        )
    keep = labels == biggest
    src = np.repeat(np.arange(graph.n), graph.degree)
    mask = keep[src]  # an edge is inside the component iff its source is
    new_deg = np.where(keep, graph.degree, 0)
    indptr = np.zeros(graph.n + 1, dtype=np.int64)
    np.cumsum(new_deg, out=indptr[1:])
    sub = Graph(n=graph.n, indptr=indptr, indices=graph.indices[mask])
    if sub.n_edges == 0:
        raise DataError(
            f"graph {label}: no edges to walk on (the largest of its {n_comp} components is a "
            "single node). Raise m (or p, d, k) so the graph has edges."
        )
    return sub, ComponentInfo(n_comp, int(keep.sum()), sub.n_edges)


def _stats(x: np.ndarray) -> dict[str, float]:
    return {
        "min": float(x.min()), "mean": float(x.mean()), "median": float(np.median(x)), "max": float(x.max()),
    }


class GraphWalkSource(TokenSource):
    """Stationary random walks on a seeded random graph; tokens are node ids (vocab = n)."""

    def __init__(self, data: Any, *, cache_dir: Path | None):
        self.data = data
        self.label = describe_graph_spec(data.graph)
        raw, self.build_s, self.cached = load_graph(data.graph, cache_dir)
        self.graph, self.components = restrict_to_component(raw, data.component, self.label)
        self.raw_edges = raw.n_edges
        self.chain: MarkovChain = degree_biased_walk(self.graph.indptr, self.graph.indices, data.kappa)
        self.walker = Walker(self.chain)
        self.vocab_size = data.graph.n
        self.entropy_rate = self.chain.entropy_rate()

    def batch(self, split: Split, index: int, batch_size: int, seq_len: int) -> np.ndarray:
        check_batch_args(split, index, batch_size, seq_len)
        rng = batch_rng(self.data.seed, split, index)
        return self.walker.sample(rng, batch_size, seq_len)

    def describe(self) -> dict[str, Any]:
        deg = self.graph.degree
        walked = deg > 0
        pi = self.chain.pi[walked]
        return {
            "kind": "graph_walk",
            "vocab_size": self.vocab_size,
            "entropy_rate": self.entropy_rate,
            "graph": self.label,
            "kappa": self.data.kappa,
            "nodes": self.graph.n,
            "edges": self.raw_edges,
            "components": self.components.n_components,
            "walked_nodes": self.components.walked_nodes,
            "walked_edges": self.components.walked_edges,
            "degree": _stats(deg[walked]),
            "stationary": {
                "max": float(pi.max()),
                "min": float(pi.min()),
                # exp(H(pi)): how many nodes the walk effectively spreads over
                "perplexity": float(np.exp(-np.sum(pi * np.log(pi)))),
            },
            "fingerprint": self.graph.fingerprint(),
            "build_s": round(self.build_s, 3),
            "cached": self.cached,
        }

    def decode(self, tokens: np.ndarray | list[int]) -> str:
        return " ".join(str(int(t)) for t in tokens)
