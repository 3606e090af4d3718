"""Brill (2024), "Neural Scaling Laws Rooted in the Data Distribution" (arXiv:2412.07942),
docs/science.md#percolation: data on clusters of critical percolation, and a nearest-neighbour learner.

Universe. `n_clusters` clusters of bond percolation on a Bethe lattice of coordination
z = 2 * dimension, each grown from its own origin (a Galton-Watson tree: the origin has
Binomial(z, p) open bonds, every later node Binomial(z - 1, p)); p defaults to the critical
p_c = 1 / (z - 1). At p_c a cluster grown from a point has size distribution P(s) ~ s**(1 - tau)
with Fisher exponent tau = 5/2 (Stauffer & Aharony, "Introduction to Percolation Theory",
2nd ed., section 2.4). Clusters larger than `max_cluster_size` are discarded and regrown from a
fresh stream, so sizes are the same law truncated there.

Data. A point is a node drawn uniformly from all nodes of the universe (so a cluster is hit
in proportion to its size); its target is a Gaussian random walk along the cluster (origin 0,
each bond adds N(0, 1)), standardised per cluster to mean 0 and variance 1. Train and eval
points are independent draws from separate streams (the same node can occur in both, as it
would in any finite distribution); training point t is the same for every T.

Learner (`nearest_neighbor`). It stores training points; a query in a cluster holding stored
points is predicted from the nearest one in graph (tree) distance `dist`, shrunk towards the
cluster mean: y_hat = y_nn / (1 + dist / sqrt(size)) (docs/science.md#percolation); a query in a cluster with no
stored point is predicted as 0, the cluster mean. With `capacity` C below the number of distinct
training points, it keeps n_k points of cluster k in proportion to f_k**(2/3), f_k the cluster's
count in the training set: the allocation minimising sum_k f_k * n_k**(-1/2), the nearest-neighbour
error law inside a critical cluster (c / D = 1/2), so the model-size curve tests Brill's optimally
allocated model.

Theory (docs/science.md#percolation): alpha = (3 - tau)/(tau - 2) = 1; model-size exponent min(alpha, c/D) and data
exponent min(alpha/(1 + alpha), c/D), both 1/2 at c = 2, D = 4 (the data one with a log correction).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaling_db.errors import DataError
from scaling_db.sources import SPLIT_IDS, Split, config_hash
from scaling_db.workspace import atomic_write_bytes

UNIVERSE_FORMAT = 1
MAX_REGROW_ROUNDS = 64
_GROW, _TARGET, _POINTS = 1, 2, 3  # RNG stream tags


def critical_p(dimension: int) -> float:
    """p_c = 1 / (z - 1) for a Bethe lattice of coordination z = 2 * dimension."""
    return 1.0 / (2 * dimension - 1)


@dataclass(frozen=True)
class Universe:
    """All clusters as one forest; node ids are grouped by BFS generation (parents first)."""

    parent: np.ndarray  # int64 (S,), -1 at cluster origins
    depth: np.ndarray  # int32 (S,)
    cluster: np.ndarray  # int64 (S,)
    target: np.ndarray  # float64 (S,), standardised per cluster
    sizes: np.ndarray  # int64 (K,)

    @property
    def n_nodes(self) -> int:
        return len(self.parent)


def _grow(z: int, p: float, k: int, max_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Grow k clusters generation by generation; returns (parent, depth, cluster, overflowed)."""
    parents = [np.full(k, -1, dtype=np.int64)]
    depths = [np.zeros(k, dtype=np.int32)]
    clusters = [np.arange(k, dtype=np.int64)]
    sizes = np.ones(k, dtype=np.int64)
    overflow = np.zeros(k, dtype=bool)
    frontier = np.arange(k, dtype=np.int64)  # global ids of the newest generation
    frontier_cluster = clusters[0]
    next_id, depth = k, 0
    while len(frontier):
        trials = z if depth == 0 else z - 1  # the origin has z bonds; others z - 1 onward
        n_child = rng.binomial(trials, p, size=len(frontier))
        # stop clusters that grew past the cap: they will be regrown, no need to finish them
        sizes += np.bincount(frontier_cluster, weights=n_child, minlength=k).astype(np.int64)
        overflow |= sizes > max_size
        n_child[overflow[frontier_cluster]] = 0
        total = int(n_child.sum())
        if total == 0:
            break
        child_parent = np.repeat(frontier, n_child)
        child_cluster = np.repeat(frontier_cluster, n_child)
        depth += 1
        parents.append(child_parent)
        depths.append(np.full(total, depth, dtype=np.int32))
        clusters.append(child_cluster)
        frontier = np.arange(next_id, next_id + total, dtype=np.int64)
        frontier_cluster = child_cluster
        next_id += total
    return np.concatenate(parents), np.concatenate(depths), np.concatenate(clusters), overflow


def build_universe(data: Any) -> Universe:
    """Grow the clusters (regrowing any above max_cluster_size) and their targets."""
    z = 2 * data.dimension
    p = data.p if data.p is not None else critical_p(data.dimension)
    seed = data.seed % 2**64
    parent_parts, depth_parts, cluster_parts = [], [], []
    todo = np.arange(data.n_clusters, dtype=np.int64)  # universe cluster ids still to grow
    offset = 0
    for round_ in range(MAX_REGROW_ROUNDS):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _GROW, round_]))
        par, dep, clu, over = _grow(z, p, len(todo), data.max_cluster_size, rng)
        keep_node = ~over[clu]
        # renumber kept nodes compactly after the nodes kept in earlier rounds
        new_id = np.cumsum(keep_node) - 1 + offset
        par_k = par[keep_node]
        parent_parts.append(np.where(par_k >= 0, new_id[np.maximum(par_k, 0)], -1))
        depth_parts.append(dep[keep_node])
        cluster_parts.append(todo[clu[keep_node]])
        offset += int(keep_node.sum())
        todo = todo[over]
        if not len(todo):
            break
    else:
        raise DataError(
            f"percolation (dimension={data.dimension}, p={p:g}): clusters keep exceeding "
            f"max_cluster_size={data.max_cluster_size} ({len(todo)} still too large after "
            f"{MAX_REGROW_ROUNDS} regrowths); p is above the critical {critical_p(data.dimension):.4g}. "
            "Lower p or raise max_cluster_size."
        )
    parent = np.concatenate(parent_parts)
    depth = np.concatenate(depth_parts)
    cluster = np.concatenate(cluster_parts)
    # order by generation so that every parent comes before its children
    order = np.argsort(depth, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    parent = np.where(parent[order] >= 0, rank[np.maximum(parent[order], 0)], -1)
    depth, cluster = depth[order], cluster[order]
    sizes = np.bincount(cluster, minlength=data.n_clusters)

    # Gaussian random walk along each tree, one generation at a time (parents are set first)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TARGET]))
    step = rng.standard_normal(len(parent))
    walk = np.zeros(len(parent))
    bounds = np.searchsorted(depth, np.arange(int(depth.max()) + 2))
    for d in range(1, len(bounds) - 1):
        lo, hi = bounds[d], bounds[d + 1]
        walk[lo:hi] = walk[parent[lo:hi]] + step[lo:hi]
    mean = np.bincount(cluster, weights=walk, minlength=data.n_clusters) / sizes
    centred = walk - mean[cluster]
    var = np.bincount(cluster, weights=centred**2, minlength=data.n_clusters) / sizes
    std = np.sqrt(var)
    target = np.where(std[cluster] > 0, centred / np.where(std > 0, std, 1.0)[cluster], 0.0)
    return Universe(parent=parent, depth=depth, cluster=cluster, target=target, sizes=sizes)


def load_universe(data: Any, cache_dir: Path | None) -> Universe:
    """The universe of `data`, cached in cache_dir/percolation/<hash>.npz."""
    path = None
    if cache_dir is not None:
        key = config_hash({"data": data.model_dump(mode="json"), "format": UNIVERSE_FORMAT})
        path = Path(cache_dir) / "percolation" / f"{key}.npz"
        if path.exists():
            with np.load(path) as z:
                return Universe(**{k: z[k] for k in ("parent", "depth", "cluster", "target", "sizes")})
    uni = build_universe(data)
    if path is not None:
        buf = io.BytesIO()
        np.savez(buf, parent=uni.parent, depth=uni.depth, cluster=uni.cluster, target=uni.target, sizes=uni.sizes)
        atomic_write_bytes(path, buf.getvalue())
    return uni


def sample_points(uni: Universe, data: Any, split: Split, count: int) -> np.ndarray:
    """Node ids of the first `count` points of a split (uniform over all nodes)."""
    rng = np.random.default_rng(np.random.SeedSequence([data.seed % 2**64, _POINTS, SPLIT_IDS[split]]))
    return rng.integers(0, uni.n_nodes, size=count)


def allocate_capacity(train_nodes: np.ndarray, uni: Universe, capacity: int | None) -> np.ndarray:
    """Which distinct training nodes the learner stores (see module docstring)."""
    nodes, first = np.unique(train_nodes, return_index=True)
    nodes = nodes[np.argsort(first, kind="stable")]  # distinct nodes in order of first sighting
    if capacity is None or capacity >= len(nodes):
        return nodes
    clu = uni.cluster[nodes]
    k = len(uni.sizes)
    avail = np.bincount(clu, minlength=k).astype(np.float64)
    freq = np.bincount(uni.cluster[train_nodes], minlength=k).astype(np.float64)
    weight = freq ** (2.0 / 3.0)  # n_k proportional to f_k^(1/(1 + c/D)), c/D = 1/2
    # water-filling: clusters whose share exceeds what they hold are capped, the rest shared again
    share = np.zeros(k)
    capped = np.zeros(k, dtype=bool)
    for _ in range(k + 1):
        free = ~capped & (avail > 0)
        left = capacity - share[capped].sum()
        share[free] = left * weight[free] / weight[free].sum()
        over = free & (share > avail)
        if not over.any():
            break
        capped |= over
        share[over] = avail[over]
    n_k = np.floor(share).astype(np.int64)
    # hand out the rounding remainder by largest fractional part (ties: lowest cluster id)
    rest = int(capacity - n_k.sum())
    if rest > 0:
        frac = np.where(n_k < avail, share - n_k, -1.0)
        n_k[np.argsort(-frac, kind="stable")[:rest]] += 1
    # keep the first n_k sightings of each cluster
    rank_in_cluster = _rank_within_groups(clu)
    return nodes[rank_in_cluster < n_k[clu]]


def _rank_within_groups(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each group, in array order."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    start = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    run = np.repeat(start, np.diff(np.r_[start, len(g)]))
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(g)) - run
    return rank


def nearest_stored(uni: Universe, stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every node: (tree distance to the nearest stored node in its cluster, that node),
    distance -1 and node -1 where its cluster stores none. Two sweeps over the generations
    (leaves up, then origins down) of a multi-source search on the forest; ties go to the
    lowest node id."""
    s = uni.n_nodes
    none = np.iinfo(np.int64).max // 2
    # key = dist * s + node: minimising it picks the nearest, then the lowest id
    key = np.full(s, none, dtype=np.int64)
    key[stored] = stored
    bounds = np.searchsorted(uni.depth, np.arange(int(uni.depth.max()) + 2))
    for d in range(len(bounds) - 2, 0, -1):  # children -> parents
        lo, hi = bounds[d], bounds[d + 1]
        np.minimum.at(key, uni.parent[lo:hi], np.minimum(key[lo:hi] + s, none))
    for d in range(1, len(bounds) - 1):  # parents -> children
        lo, hi = bounds[d], bounds[d + 1]
        key[lo:hi] = np.minimum(key[lo:hi], np.minimum(key[uni.parent[lo:hi]] + s, none))
    found = key < none
    dist = np.where(found, key // s, -1)
    node = np.where(found, key % s, -1)
    return dist, node


def predict(uni: Universe, stored: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, distances) for query nodes; distance -1 where the cluster stores nothing."""
    dist, node = nearest_stored(uni, stored)
    d, nn = dist[query], node[query]
    size = uni.sizes[uni.cluster[query]]
    pred = np.where(d >= 0, uni.target[np.maximum(nn, 0)] / (1.0 + np.maximum(d, 0) / np.sqrt(size)), 0.0)
    return pred, d


@dataclass(frozen=True)
class PercolationResult:
    train_loss: float
    eval_loss: float
    metrics: dict[str, float]


def solve_percolation(data: Any, model: Any, train: Any, cache_dir: Path | None) -> PercolationResult:
    uni = load_universe(data, cache_dir)
    train_nodes = sample_points(uni, data, "train", train.samples)
    eval_nodes = sample_points(uni, data, "eval", train.eval_samples)
    stored = allocate_capacity(train_nodes, uni, model.capacity)
    pred_ev, d_ev = predict(uni, stored, eval_nodes)
    pred_tr, _ = predict(uni, stored, train_nodes)
    seen = d_ev >= 0
    return PercolationResult(
        train_loss=float(np.mean((pred_tr - uni.target[train_nodes]) ** 2)),
        eval_loss=float(np.mean((pred_ev - uni.target[eval_nodes]) ** 2)),
        metrics={
            "stored_points": float(len(stored)),
            "clusters_stored": float(len(np.unique(uni.cluster[stored]))),
            "eval_unseen_frac": float(1.0 - seen.mean()),
            "eval_mean_distance": float(d_ev[seen].mean()) if seen.any() else math.nan,
        },
    )


def describe_percolation(data: Any, cache_dir: Path | None) -> dict[str, Any]:
    uni = load_universe(data, cache_dir)
    sizes = uni.sizes
    p = data.p if data.p is not None else critical_p(data.dimension)
    # tau from the maximum-likelihood slope of the size distribution P(s) ~ s^(1 - tau) above
    # s_min (Clauset, Shalizi & Newman 2009, eq. 3.7, continuous approximation)
    s_min = 10
    tail = sizes[sizes >= s_min].astype(np.float64)
    slope = 1.0 + len(tail) / np.sum(np.log(tail / (s_min - 0.5))) if len(tail) else math.nan
    return {
        "kind": "percolation",
        "coordination": 2 * data.dimension,
        "p": p,
        "p_critical": critical_p(data.dimension),
        "clusters": int(len(sizes)),
        "nodes": int(uni.n_nodes),
        "cluster_size": {
            "min": int(sizes.min()), "median": float(np.median(sizes)), "mean": float(sizes.mean()),
            "max": int(sizes.max()),
        },
        "fisher_tau_estimate": float(slope + 1.0),
        "fisher_tau_theory": 2.5,
        "max_depth": int(uni.depth.max()),
        "entropy_rate": "n/a (regression)",
    }
