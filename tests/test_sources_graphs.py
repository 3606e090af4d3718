"""Graph-walk sources: ground truth against independent computation, determinism, errors."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from scaling_db.errors import DataError
from scaling_db.sources import build_source
from scaling_db.sources.graphs import (
    GraphWalkSource, _pair_from_index, construct_graph, graph_from_edges,
)
from scaling_db.sources.walks import Walker, alias_tables, degree_biased_walk, unbiased_walk
from scaling_db.spec.data import GraphWalkData
def walk_data(graph: dict, **kw) -> GraphWalkData:
    return GraphWalkData.model_validate({"kind": "graph_walk", "graph": graph, **kw})


def source(graph: dict, tmp_path: Path | None = None, **kw) -> GraphWalkSource:
    """Through the public entry point when a cache folder is given; uncached otherwise."""
    if tmp_path is None:
        return GraphWalkSource(walk_data(graph, **kw), cache_dir=None)
    src = build_source(walk_data(graph, **kw), base_dir=Path("."), cache_dir=tmp_path)
    assert isinstance(src, GraphWalkSource)
    return src


# -- ground truth ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 7, 40])
def test_complete_graph_entropy_rate_is_log_n_minus_1(n):
    # G(n, p=1) is the complete graph K_n: every step is uniform over n - 1 neighbours
    src = source({"kind": "erdos_renyi_gnp", "n": n, "p": 1.0})
    assert src.graph.n_edges == n * (n - 1) // 2
    assert src.entropy_rate == pytest.approx(math.log(n - 1), abs=1e-12)


def test_cycle_entropy_rate_is_log_2():
    # Watts-Strogatz with k=2, p=0 is the ring lattice with one neighbour per side: a cycle
    src = source({"kind": "watts_strogatz", "n": 30, "k": 2, "p": 0.0})
    assert (src.graph.degree == 2).all()
    assert src.entropy_rate == pytest.approx(math.log(2), abs=1e-12)


def test_unbiased_entropy_rate_matches_networkx_degrees():
    g = nx.barabasi_albert_graph(200, 3, seed=5)
    deg = np.array([d for _, d in sorted(g.degree())], dtype=float)
    expected = float(np.sum(deg / deg.sum() * np.log(deg)))  # sum_i (k_i / 2m) log k_i
    src = source({"kind": "barabasi_albert", "n": 200, "m": 3, "seed": 5})
    assert src.entropy_rate == pytest.approx(expected, rel=1e-12)


def dense_biased_matrix(g: nx.Graph, kappa: float) -> np.ndarray:
    """P(j|i) proportional to deg(j)**kappa, written out densely (small graphs only)."""
    a = nx.to_numpy_array(g, nodelist=sorted(g.nodes()))
    deg = a.sum(1)
    w = a * deg[None, :] ** kappa
    return w / w.sum(1, keepdims=True)


@pytest.mark.parametrize("kappa", [0.0, 0.7, 2.0, -1.0])
def test_biased_walk_stationary_distribution_matches_power_iteration(kappa):
    g = nx.barabasi_albert_graph(60, 2, seed=1)
    p = dense_biased_matrix(g, kappa)
    # P is aperiodic here (BA graphs have triangles), so power iteration converges to pi
    pi = np.full(len(p), 1.0 / len(p))
    for _ in range(5000):
        pi = pi @ p
    src = source({"kind": "barabasi_albert", "n": 60, "m": 2, "seed": 1}, kappa=kappa)
    np.testing.assert_allclose(src.chain.pi, pi, rtol=1e-9, atol=1e-12)
    expected_h = -np.sum(pi[:, None] * np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0))
    assert src.entropy_rate == pytest.approx(expected_h, rel=1e-10)


def test_alias_tables_reproduce_probabilities_exactly():
    g = graph_from_edges(*_random_edges(300, 2000, seed=3))
    chain = degree_biased_walk(g.indptr, g.indices, 1.3)
    threshold, alias = alias_tables(chain.indptr, chain.prob)
    deg = chain.out_degree[chain.row_of_entry()]
    implied = threshold / deg  # mass kept by each column ...
    np.add.at(implied, alias, (1 - threshold) / deg)  # ... plus what columns hand to their alias
    np.testing.assert_allclose(implied, chain.prob, atol=1e-14)


def _random_edges(n: int, m: int, seed: int):
    rng = np.random.default_rng(seed)
    i, j = _pair_from_index(np.sort(rng.choice(n * (n - 1) // 2, m, replace=False)), n)
    return n, i, j


@pytest.mark.parametrize("kappa", [0.0, 1.5])
def test_empirical_transitions_match_p_within_sampling_error(kappa):
    src = source({"kind": "barabasi_albert", "n": 40, "m": 2, "seed": 2}, kappa=kappa)
    p = dense_biased_matrix(nx.barabasi_albert_graph(40, 2, seed=2), kappa)
    walks = np.concatenate([src.batch("train", i, 500, 200) for i in range(4)])  # 400k transitions
    a, b = walks[:, :-1].ravel(), walks[:, 1:].ravel()
    counts = np.zeros_like(p)
    np.add.at(counts, (a, b), 1)
    visits = counts.sum(1, keepdims=True)
    freq = counts / visits
    # binomial standard error per entry; 5 sigma over ~150 entries leaves no room for flakes
    se = np.sqrt(p * (1 - p) / visits)
    assert np.all(np.abs(freq - p) <= 5 * se + 1e-12)
    # every position is distributed as pi (walks start from it): first and last positions
    for col in (walks[:, 0], walks[:, -1]):
        emp = np.bincount(col, minlength=40) / len(col)
        assert np.all(np.abs(emp - src.chain.pi) <= 5 * np.sqrt(src.chain.pi / len(col)) + 1e-12)


def test_long_walk_loss_of_true_model_equals_entropy_rate():
    src = source({"kind": "erdos_renyi_gnm", "n": 200, "m": 800, "seed": 4}, kappa=0.5)
    p = src.chain.entry_prob()
    walks = src.batch("eval", 0, 2000, 100)
    a, b = walks[:, :-1].ravel(), walks[:, 1:].ravel()
    keys = src.chain.row_of_entry() * 200 + src.chain.indices
    logp = np.log(p[np.searchsorted(keys, a * 200 + b)])
    assert -logp.mean() == pytest.approx(src.entropy_rate, rel=0.01)


def test_gnm_is_a_uniform_simple_graph():
    g = construct_graph(walk_data({"kind": "erdos_renyi_gnm", "n": 300, "m": 4000, "seed": 9}).graph)
    assert g.n_edges == 4000
    src = np.repeat(np.arange(g.n), g.degree)
    assert not np.any(src == g.indices)  # no self-loops
    assert len(np.unique(src * g.n + g.indices)) == len(src)  # no duplicate edges
    # undirected: every (i, j) has its (j, i)
    assert np.array_equal(np.sort(src * g.n + g.indices), np.sort(g.indices * g.n + src))
    # each of the 44,850 pairs is present with probability m / pairs: check by degree mean/var
    deg = g.degree
    p = 4000 / (300 * 299 / 2)
    assert deg.mean() == pytest.approx(299 * p)
    assert deg.var() == pytest.approx(299 * p * (1 - p), rel=0.2)


def test_pair_index_round_trip_large_n():
    n = 3_000_000
    k = np.array([0, 1, n - 2, n - 1, n * (n - 1) // 2 - 1, 4_499_998_499_999])
    i, j = _pair_from_index(k, n)
    assert np.all((0 <= i) & (i < j) & (j < n))
    assert np.array_equal(i * (2 * n - i - 1) // 2 + (j - i - 1), k)


@pytest.mark.parametrize(
    "graph",
    [
        {"kind": "barabasi_albert", "n": 100, "m": 3},
        {"kind": "random_regular", "n": 100, "d": 4},
        {"kind": "watts_strogatz", "n": 100, "k": 4, "p": 0.2},
        {"kind": "erdos_renyi_gnp", "n": 100, "p": 0.08},
    ],
)
def test_every_family_gives_a_simple_undirected_graph(graph):
    g = construct_graph(walk_data(graph).graph)
    a = np.zeros((g.n, g.n), dtype=int)
    np.add.at(a, (np.repeat(np.arange(g.n), g.degree), g.indices), 1)
    assert a.max() <= 1 and np.all(np.diag(a) == 0) and np.array_equal(a, a.T)
    if graph["kind"] == "random_regular":
        assert (g.degree == 4).all()


# -- determinism, splits, vocab ------------------------------------------------------------------


def test_batches_are_deterministic_and_independent_of_order(tmp_path):
    cfg = {"kind": "erdos_renyi_gnm", "n": 500, "m": 3000, "seed": 1}
    a = source(cfg, tmp_path, kappa=1.0)
    b = source(cfg, tmp_path, kappa=1.0)  # second build comes from the on-disk cache
    assert b.cached and a.graph.fingerprint() == b.graph.fingerprint()
    later_first = b.batch("train", 7, 8, 20)
    for i in range(7):
        a.batch("train", i, 8, 20)
    np.testing.assert_array_equal(a.batch("train", 7, 8, 20), later_first)
    assert a.batch("train", 7, 8, 20).dtype == np.int64


def test_train_eval_and_batches_are_distinct_streams():
    src = source({"kind": "erdos_renyi_gnm", "n": 5000, "m": 20000})
    train = {tuple(r) for i in range(5) for r in src.batch("train", i, 64, 30)}
    held = {tuple(r) for i in range(5) for r in src.batch("eval", i, 64, 30)}
    assert len(train) == 5 * 64 and len(held) == 5 * 64  # no sequence served twice
    assert not train & held


def test_seeds_change_walks_and_graphs():
    base = {"kind": "erdos_renyi_gnm", "n": 500, "m": 2000}
    a = source(base).batch("train", 0, 4, 10)
    assert not np.array_equal(a, source(base, seed=1).batch("train", 0, 4, 10))
    assert source(base).graph.fingerprint() != source({**base, "seed": 1}).graph.fingerprint()


def test_tokens_stay_in_vocab_and_in_the_walked_component():
    src = source({"kind": "erdos_renyi_gnm", "n": 400, "m": 300, "seed": 0})  # far below connectivity
    assert src.components.n_components > 1
    toks = src.batch("train", 0, 64, 50)
    assert toks.min() >= 0 and toks.max() < src.vocab_size == 400
    assert np.all(src.graph.degree[toks] > 0)  # only nodes of the largest component appear
    d = src.describe()
    assert d["walked_nodes"] < 400 and d["vocab_size"] == 400


# -- bad input ---------------------------------------------------------------------------------


def test_disconnected_graph_with_component_error():
    cfg = {"kind": "erdos_renyi_gnm", "n": 10, "m": 3, "seed": 0}
    g = construct_graph(walk_data(cfg).graph)
    nxg = nx.Graph()
    nxg.add_nodes_from(range(10))
    nxg.add_edges_from(zip(np.repeat(np.arange(10), g.degree), g.indices))
    parts = list(nx.connected_components(nxg))  # independent count of the components
    with pytest.raises(DataError) as exc:
        source(cfg, component="error")
    assert str(exc.value) == (
        f"graph erdos_renyi_gnm(n=10, m=3, seed=0): not connected ({len(parts)} components; the largest has "
        f"{max(map(len, parts))} of 10 nodes). Set `component: largest` to walk on the largest component, "
        "or add edges."
    )


def test_graph_without_edges_is_refused():
    with pytest.raises(DataError) as exc:
        source({"kind": "erdos_renyi_gnp", "n": 5, "p": 1e-9})
    assert str(exc.value) == (
        "graph erdos_renyi_gnp(n=5, p=1e-09, seed=0): no edges to walk on (got 5 nodes and 0 edges). "
        "Raise m (or p, d, k) so the graph has edges."
    )


def test_walker_handles_zero_mass_states():
    # a path 0-1-2 plus an isolated node 3: the walk never starts at, nor enters, node 3
    g = graph_from_edges(4, np.array([0, 1]), np.array([1, 2]))
    chain = unbiased_walk(g.indptr, g.indices)
    walks = Walker(chain).sample(np.random.default_rng(0), 1000, 5)
    assert not np.any(walks == 3)
