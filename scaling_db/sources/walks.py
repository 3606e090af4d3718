"""Markov chains on sparse graphs: exact ground truth and fast vectorised sampling.

A chain is a CSR matrix of transition probabilities (`indptr`, `indices`, `prob`; `prob=None`
means uniform over each row's entries) plus its stationary distribution `pi`. Nothing here
builds a dense n x n matrix.

Graph walks (docs/science.md#the-complexity-ladder). On an undirected simple graph with degrees k_i, the walk
with bias strength kappa moves from i to a neighbour j with probability

    P(j | i) = k_j**kappa / W_i,      W_i = sum_{l ~ i} k_l**kappa,

so kappa = 0 is the unbiased walk (uniform over neighbours) and kappa > 0 favours hubs. The
chain is reversible: with the symmetric edge weights c_ij = k_i**kappa * k_j**kappa we have
P(j | i) = c_ij / sum_l c_il, i.e. a random walk on a weighted undirected graph, whose
stationary distribution is proportional to the weighted degree (Levin, Peres & Wilmer,
"Markov Chains and Mixing Times", 2nd ed., section 1.5 / 9.1):

    pi_i = k_i**kappa * W_i / Z,      Z = sum_i k_i**kappa * W_i.

(Detailed balance: pi_i P(j|i) = k_i**kappa k_j**kappa / Z is symmetric in i, j.) For kappa = 0
this is pi_i = k_i / 2m. The entropy rate of a stationary Markov chain is
H = -sum_i pi_i sum_j P(j|i) log P(j|i) nats/token (Cover & Thomas, "Elements of Information
Theory", 2nd ed., Theorem 4.2.4); it is the lowest expected next-token loss any model can
reach on walks started from pi. Unbiased: H = sum_i (k_i / 2m) log k_i.

Sampling: every sequence is an independent walk whose first node is drawn from pi, so every
position is distributed as pi. Walkers move together, one numpy step per position. Unbiased
steps pick neighbour floor(u * k_i) of the CSR row; biased steps use per-row alias tables
(Walker 1977; Vose 1991), one uniform per step: column floor(u * k_i), then the fractional
part of u * k_i against the column's threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MarkovChain:
    """A finite Markov chain in CSR form with its stationary distribution.

    Rows with no entries belong to states of zero stationary mass (never visited)."""

    indptr: np.ndarray  # int64 (n + 1,)
    indices: np.ndarray  # int64 (nnz,): next states, sorted within each row
    prob: np.ndarray | None  # float64 (nnz,) transition probabilities; None = uniform rows
    pi: np.ndarray  # float64 (n,), sums to 1

    @property
    def n_states(self) -> int:
        return len(self.indptr) - 1

    @property
    def out_degree(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row_of_entry(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_states), self.out_degree)

    def entry_prob(self) -> np.ndarray:
        """Transition probability of every CSR entry (materialised for uniform rows)."""
        if self.prob is not None:
            return self.prob
        deg = self.out_degree
        return np.repeat(1.0 / np.maximum(deg, 1), deg)

    def entropy_rate(self) -> float:
        """H = -sum_i pi_i sum_j P(j|i) log P(j|i), in nats (Cover & Thomas, Thm 4.2.4)."""
        if self.prob is None:
            deg = self.out_degree
            live = deg > 0
            return float(np.sum(self.pi[live] * np.log(deg[live])))
        p = self.prob
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        row_h = -np.bincount(self.row_of_entry(), weights=plogp, minlength=self.n_states)
        return float(np.sum(self.pi * row_h))

    def step_distribution(self, dist: np.ndarray) -> np.ndarray:
        """dist @ P, without a dense matrix (for checks like stationarity)."""
        return np.bincount(
            self.indices, weights=np.repeat(dist, self.out_degree) * self.entry_prob(), minlength=self.n_states
        )


def unbiased_walk(indptr: np.ndarray, indices: np.ndarray) -> MarkovChain:
    """Uniform walk on an undirected graph (CSR lists both directions): pi_i = k_i / 2m."""
    deg = np.diff(indptr).astype(np.float64)
    return MarkovChain(indptr=indptr, indices=indices, prob=None, pi=deg / deg.sum())


def degree_biased_walk(indptr: np.ndarray, indices: np.ndarray, kappa: float) -> MarkovChain:
    """P(j|i) proportional to k_j**kappa on an undirected graph; pi from the module docstring."""
    if kappa == 0:
        return unbiased_walk(indptr, indices)
    deg = np.diff(indptr).astype(np.float64)
    n = len(deg)
    # k**kappa in log space first: k**kappa overflows float64 for large kappa on hub graphs,
    # and normalising by each row's max keeps every row's weights in (0, 1].
    logw = kappa * np.log(np.maximum(deg, 1.0))
    w_entry = logw[indices]
    live_starts = indptr[:-1][deg > 0]
    live = deg > 0
    row_of = np.repeat(np.arange(n), np.diff(indptr))
    row_max = np.zeros(n)
    row_sum = np.zeros(n)
    if len(w_entry):
        row_max[live] = np.maximum.reduceat(w_entry, live_starts)
    w = np.exp(w_entry - row_max[row_of])
    if len(w):
        row_sum[live] = np.add.reduceat(w, live_starts)
    prob = w / row_sum[row_of]
    # pi_i proportional to k_i**kappa * W_i = exp(kappa log k_i + row_max_i) * row_sum_i.
    log_pi = np.full(n, -np.inf)
    log_pi[live] = logw[live] + row_max[live] + np.log(row_sum[live])
    pi = np.exp(log_pi - log_pi[live].max()) if live.any() else np.zeros(n)
    return MarkovChain(indptr=indptr, indices=indices, prob=prob, pi=pi / pi.sum())


def chain_from_counts(indptr: np.ndarray, indices: np.ndarray, counts: np.ndarray) -> MarkovChain:
    """The chain P(j|i) = C_ij / C_i. of a transition-count matrix whose row sums equal its
    column sums (counts of a closed walk): then pi_i = C_i. / C.. is exactly stationary, since
    sum_i pi_i P(j|i) = C_.j / C.. = pi_j."""
    counts = counts.astype(np.float64)
    n = len(indptr) - 1
    deg = np.diff(indptr)
    row_sum = np.zeros(n)
    live = deg > 0
    if len(counts):
        row_sum[live] = np.add.reduceat(counts, indptr[:-1][live])
    col_sum = np.bincount(indices, weights=counts, minlength=n)
    if not np.allclose(row_sum, col_sum):
        raise ValueError("transition counts are not balanced (row sums != column sums)")
    prob = counts / np.repeat(np.where(live, row_sum, 1.0), deg)
    return MarkovChain(indptr=indptr, indices=indices, prob=prob, pi=row_sum / row_sum.sum())


def alias_tables(indptr: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row alias tables (Vose 1991), built for all rows at once.

    Returns (threshold, alias): picking column c of row i uniformly, then entry c if the
    fractional uniform is below threshold[c] else entry alias[c] (absolute CSR positions),
    draws entry e with probability exactly prob[e] (up to float rounding).

    Vose's pairing runs sequentially within a row, so rows advance in lock-step: each round,
    every unfinished row pairs its next under-full column (scaled probability < 1) with its
    current over-full one, which donates the difference and, once under-full itself, is
    paired next. Rounds <= the largest row length; each is a few numpy operations over the
    rows still working."""
    nnz = len(prob)
    deg = np.diff(indptr)
    n = len(deg)
    row_of = np.repeat(np.arange(n), deg)
    scaled = prob * deg[row_of]  # mean 1 within each row
    threshold = np.ones(nnz)
    alias = np.arange(nnz, dtype=np.int64)
    small = np.flatnonzero(scaled < 1.0)
    large = np.flatnonzero(scaled >= 1.0)
    # per row: [s_lo, s_hi) into `small`, [l_lo, l_hi) into `large` (entries are row-sorted)
    s_hi = np.cumsum(np.bincount(row_of[small], minlength=n))
    s_lo = s_hi - np.bincount(row_of[small], minlength=n)
    l_hi = np.cumsum(np.bincount(row_of[large], minlength=n))
    l_lo = l_hi - np.bincount(row_of[large], minlength=n)
    rows = np.flatnonzero((s_hi > s_lo) & (l_hi > l_lo))
    si, li = s_lo[rows].copy(), l_lo[rows].copy()
    s_end, l_end = s_hi[rows], l_hi[rows]
    pending = np.full(len(rows), -1, dtype=np.int64)  # an over-full entry that became under-full
    pending_val = np.zeros(len(rows))
    g_val = scaled[large[li]] if len(rows) else np.zeros(0)
    while len(rows):
        has_pending = pending >= 0
        take = np.where(has_pending, 0, si)  # index into `small` (ignored where pending)
        lo_entry = np.where(has_pending, pending, small[np.minimum(take, len(small) - 1)])
        lo_val = np.where(has_pending, pending_val, scaled[lo_entry])
        si = np.where(has_pending, si, si + 1)
        g = large[li]
        threshold[lo_entry] = lo_val
        alias[lo_entry] = g
        g_val = g_val + lo_val - 1.0
        spent = g_val < 1.0
        pending = np.where(spent, g, -1)
        pending_val = np.where(spent, g_val, 0.0)
        li = li + spent
        more_large = li < l_end
        g_val = np.where(spent & more_large, scaled[large[np.minimum(li, len(large) - 1)]], g_val)
        keep = more_large & ((pending >= 0) | (si < s_end))
        # rows that stop keep threshold 1 for what is left: by conservation of total mass the
        # remaining columns each hold exactly 1 (up to rounding)
        rows, si, li, s_end, l_end = rows[keep], si[keep], li[keep], s_end[keep], l_end[keep]
        pending, pending_val, g_val = pending[keep], pending_val[keep], g_val[keep]
    return threshold, alias


class Walker:
    """Vectorised sampler of independent stationary walks of a `MarkovChain`."""

    def __init__(self, chain: MarkovChain):
        self.chain = chain
        self._start = chain.indptr[:-1].astype(np.int64)
        self._deg = chain.out_degree.astype(np.float64)
        self._indices = chain.indices.astype(np.int64)
        self._cdf = np.cumsum(chain.pi)
        self._uniform = chain.prob is None or _rows_uniform(chain)
        if not self._uniform:
            threshold, alias = alias_tables(chain.indptr, chain.prob)
            self._threshold = threshold
            self._alias_state = self._indices[alias]  # the state itself: one gather saved per step

    def start_states(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` states drawn from pi (inverse CDF; zero-mass states are never drawn)."""
        u = rng.random(count) * self._cdf[-1]
        return np.minimum(np.searchsorted(self._cdf, u, side="right"), len(self._cdf) - 1)

    def sample(self, rng: np.random.Generator, batch_size: int, seq_len: int) -> np.ndarray:
        """(batch_size, seq_len) int64: independent walks started from pi."""
        out = np.empty((seq_len, batch_size), dtype=np.int64)  # row-major over time: contiguous writes
        cur = self.start_states(rng, batch_size)
        out[0] = cur
        start, deg, indices = self._start, self._deg, self._indices
        if self._uniform:
            for t in range(1, seq_len):
                # neighbour floor(u * k) of the row; u * k < k exactly in float64 for k < 2**53
                cur = indices[start[cur] + (rng.random(batch_size) * deg[cur]).astype(np.int64)]
                out[t] = cur
        else:
            threshold, alias_state = self._threshold, self._alias_state
            for t in range(1, seq_len):
                x = rng.random(batch_size) * deg[cur]
                col = x.astype(np.int64)
                e = start[cur] + col
                # x - col is a fresh uniform on [0, 1) (with log2(k) fewer bits), independent of col
                cur = np.where(x - col < threshold[e], indices[e], alias_state[e])
                out[t] = cur
        return np.ascontiguousarray(out.T)


def _rows_uniform(chain: MarkovChain) -> bool:
    """True when every row's probabilities are equal (e.g. kappa = 0, or a regular graph)."""
    p = chain.prob
    if p is None:
        return True
    deg = chain.out_degree
    return bool(np.allclose(p, np.repeat(1.0 / np.maximum(deg, 1), deg), rtol=1e-12, atol=0))
