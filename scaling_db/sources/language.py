"""Language sources: the tokenized corpus itself, and its token-bigram Markov chain.

`corpus`: the train split cut into non-overlapping windows of seq_len tokens, served in a
fixed shuffled order (one epoch: no window twice; batch i = windows [i*B, (i+1)*B) of that
order). The eval split is windowed the same way. Asking past the last window is a DataError:
the run wants more tokens than the corpus has.

`corpus_epochs` (manifests of teacher runs only): the same windows for as many passes as the
budget needs. Pass 1 is the `corpus` order; pass k > 1 is a fresh shuffle seeded by k. Eval
batches cycle through the held-out windows, so a held-out split shorter than the run's
`eval_tokens` repeats some windows (they count twice in the mean loss).

`language_bigram`: counts C_ab of token b following token a in the train split, with the text
closed into a loop by one extra bigram (last token, first token). Closing the loop makes every
row sum equal its column sum (a closed walk enters each token as often as it leaves it), so
the unigram frequency pi_a = C_a. / C.. is *exactly* the stationary distribution and no state
is absorbing (`walks.chain_from_counts`). Sequences are stationary walks of the chain
P(b | a) = C_ab / C_a.; the entropy rate -sum_ab (C_ab / C..) log(C_ab / C_a.) is exact.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from scaling_db.errors import DataError
from scaling_db.sources import SPLIT_IDS, Split, TokenSource, batch_rng, check_batch_args
from scaling_db.sources.tokenization import build_tokenizer, encode_text, load_corpus
from scaling_db.sources.walks import MarkovChain, Walker, chain_from_counts

#: Seed of the fixed window order of `corpus` sources (they have no seed field: one order per text).
WINDOW_ORDER_SEED = 0x5EED


class TextSource(TokenSource):
    """Shared part of corpus-backed sources: the corpus, its split and its tokens."""

    def __init__(self, data: Any, *, base_dir: Path, cache_dir: Path | None):
        self.data = data
        self.corpus = load_corpus(data.corpus, base_dir)
        train_text, eval_text = self.corpus.split(data.eval_frac)
        self.tokenizer = build_tokenizer(data.tokenizer, train_text, corpus=self.corpus, cache_dir=cache_dir)
        self.tokens = {
            "train": encode_text(self.tokenizer, train_text, cache_dir),
            "eval": encode_text(self.tokenizer, eval_text, cache_dir),
        }
        # the compiler sized the model's vocab from the spec alone; the ids must fit it
        self.vocab_size = 256 if data.tokenizer.kind == "char" else data.tokenizer.vocab_size
        top = max(int(t.max()) for t in self.tokens.values())
        assert top < self.vocab_size, f"token id {top} >= vocab {self.vocab_size}"

    def decode(self, tokens: np.ndarray | list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def _text_stats(self) -> dict[str, Any]:
        train = self.tokens["train"]
        counts = np.bincount(train, minlength=self.vocab_size)
        freq = counts / counts.sum()
        nz = freq[freq > 0]
        top = np.argsort(-counts, kind="stable")[:10]
        return {
            "corpus": str(self.corpus.path),
            "corpus_sha256": self.corpus.sha256[:16],
            "tokenizer": self.tokenizer.describe(),
            "characters": len(self.corpus.text),
            "train_tokens": int(len(train)),
            "eval_tokens": int(len(self.tokens["eval"])),
            "tokens_used": int((counts > 0).sum()),
            "unigram_entropy": float(-np.sum(nz * np.log(nz))),
            "top_tokens": [
                {"token": self.tokenizer.token_text(int(t)), "id": int(t), "freq": round(float(freq[t]), 5)}
                for t in top if counts[t] > 0
            ],
        }


class CorpusSource(TextSource):
    """The tokenized text itself; the lowest reachable loss is unknown."""

    entropy_rate = None

    def __init__(self, data: Any, *, base_dir: Path, cache_dir: Path | None):
        super().__init__(data, base_dir=base_dir, cache_dir=cache_dir)
        self._orders: dict[tuple[str, int], np.ndarray] = {}

    def max_sequences(self, split: Split, seq_len: int) -> int:
        return self._windows(split, seq_len)

    def _windows(self, split: Split, seq_len: int) -> int:
        return len(self.tokens[split]) // seq_len

    def _order(self, split: Split, seq_len: int) -> np.ndarray:
        """The fixed shuffled order of the split's windows (cached per seq_len)."""
        key = (split, seq_len)
        if key not in self._orders:
            rng = np.random.default_rng(np.random.SeedSequence([WINDOW_ORDER_SEED, SPLIT_IDS[split], seq_len]))
            self._orders[key] = rng.permutation(self._windows(split, seq_len))
        return self._orders[key]

    def batch(self, split: Split, index: int, batch_size: int, seq_len: int) -> np.ndarray:
        check_batch_args(split, index, batch_size, seq_len)
        order = self._order(split, seq_len)
        need = (index + 1) * batch_size
        if need > len(order):
            have = len(self.tokens[split])
            raise DataError(
                f"{self.corpus.path}: the {split} split has {have} tokens = {len(order)} sequences of "
                f"{seq_len}; batch {index} of {batch_size} needs {need}. Lower the run's "
                f"{'train.tokens' if split == 'train' else 'train.eval_tokens'} or use a larger corpus."
            )
        starts = order[index * batch_size : need] * seq_len
        return self.tokens[split][starts[:, None] + np.arange(seq_len)]

    def describe(self) -> dict[str, Any]:
        return {"kind": "corpus", "vocab_size": self.vocab_size, "entropy_rate": "unknown", **self._text_stats()}


class CorpusEpochsSource(CorpusSource):
    """The corpus for any number of passes (see the module docstring)."""

    def max_sequences(self, split: Split, seq_len: int) -> None:  # type: ignore[override]
        return None

    def batch(self, split: Split, index: int, batch_size: int, seq_len: int) -> np.ndarray:
        check_batch_args(split, index, batch_size, seq_len)
        n = self._windows(split, seq_len)
        if n < (batch_size if split == "train" else 1):
            raise DataError(
                f"{self.corpus.path}: the {split} split has {len(self.tokens[split])} tokens, fewer than "
                f"{'one batch of ' + str(batch_size) if split == 'train' else 'one'} sequence(s) of {seq_len}. "
                "Use a longer corpus."
            )
        if split == "eval":
            windows = self._order(split, seq_len)[(index * batch_size + np.arange(batch_size)) % n]
        else:
            per_pass = n // batch_size
            epoch, i = divmod(index, per_pass)
            if epoch == 0:
                return super().batch(split, i, batch_size, seq_len)
            rng = np.random.default_rng(np.random.SeedSequence([WINDOW_ORDER_SEED, SPLIT_IDS[split], seq_len, epoch]))
            windows = rng.permutation(n)[i * batch_size : (i + 1) * batch_size]
        return self.tokens[split][windows[:, None] * seq_len + np.arange(seq_len)]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": "corpus_epochs"}


class BigramSource(TextSource):
    """Stationary walks of the corpus's token-bigram chain (exact entropy rate)."""

    def __init__(self, data: Any, *, base_dir: Path, cache_dir: Path | None):
        super().__init__(data, base_dir=base_dir, cache_dir=cache_dir)
        self.chain = bigram_chain(self.tokens["train"], self.vocab_size)
        self.walker = Walker(self.chain)
        self.entropy_rate = self.chain.entropy_rate()

    def batch(self, split: Split, index: int, batch_size: int, seq_len: int) -> np.ndarray:
        check_batch_args(split, index, batch_size, seq_len)
        return self.walker.sample(batch_rng(self.data.seed, split, index), batch_size, seq_len)

    @cached_property
    def eval_cross_entropy(self) -> float | None:
        """Loss of the bigram model itself on the held-out text, in nats/token; None when the
        held-out text has a bigram the train text lacks (probability 0: infinite loss)."""
        ev = self.tokens["eval"]
        keys = self.chain.row_of_entry() * self.vocab_size + self.chain.indices  # sorted
        q = ev[:-1] * self.vocab_size + ev[1:]
        at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        found = keys[at] == q
        if len(q) == 0 or not found.all():
            return None
        return float(-np.log(self.chain.prob[at]).mean())

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "language_bigram",
            "vocab_size": self.vocab_size,
            "entropy_rate": self.entropy_rate,
            "bigrams": int(len(self.chain.indices)),
            "bigram_eval_cross_entropy": self.eval_cross_entropy if self.eval_cross_entropy is not None else "infinite (unseen bigrams)",
            **self._text_stats(),
        }


def bigram_chain(tokens: np.ndarray, vocab_size: int) -> MarkovChain:
    """The bigram chain of a token sequence closed into a loop (see module docstring)."""
    if len(tokens) < 2:
        raise DataError(f"need at least 2 train tokens for bigram statistics (got {len(tokens)})")
    nxt = np.roll(tokens, -1)  # (last, first) closes the loop
    keys, counts = np.unique(tokens * vocab_size + nxt, return_counts=True)
    rows, cols = keys // vocab_size, keys % vocab_size
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=vocab_size), out=indptr[1:])
    return chain_from_counts(indptr, cols.astype(np.int64), counts)
