"""Language sources: tokenizers, the bigram chain's ground truth, corpus windows, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from scaling_db.errors import DataError
from scaling_db.sources import build_source
from scaling_db.sources.language import BigramSource, CorpusSource, bigram_chain
from scaling_db.spec.data import CorpusData, LanguageBigramData

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "specs" / "data" / "tiny_corpus.txt"


def bigram(corpus: str | Path, tmp_path: Path, **kw) -> BigramSource:
    data = LanguageBigramData.model_validate({"kind": "language_bigram", "corpus": str(corpus), **kw})
    src = build_source(data, base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert isinstance(src, BigramSource)
    return src


def corpus(path: str | Path, tmp_path: Path, **kw) -> CorpusSource:
    data = CorpusData.model_validate({"kind": "corpus", "corpus": str(path), **kw})
    src = build_source(data, base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert isinstance(src, CorpusSource)
    return src


# -- ground truth ------------------------------------------------------------------------------


def test_bigram_chain_of_a_known_text():
    # "abab...ab" closed into a loop: a->b and b->a with certainty, entropy rate 0
    toks = np.array([0, 1] * 50)
    chain = bigram_chain(toks, 4)
    assert chain.entropy_rate() == 0.0
    np.testing.assert_allclose(chain.pi, [0.5, 0.5, 0, 0])
    # "aab" repeated: a->a 1/2, a->b 1/2, b->a 1; pi = (2/3, 1/3); H = (2/3) log 2
    chain = bigram_chain(np.array([0, 0, 1] * 30), 2)
    assert chain.entropy_rate() == pytest.approx(2 / 3 * math.log(2), abs=1e-12)
    np.testing.assert_allclose(chain.pi, [2 / 3, 1 / 3])


def test_bigram_entropy_rate_matches_direct_count_formula(tmp_path):
    src = bigram(FIXTURE, tmp_path)
    toks = src.tokens["train"]
    a, b = toks, np.roll(toks, -1)
    # independent computation: H = -sum_ab (C_ab / N) log(C_ab / C_a.) with a dense count matrix
    c = np.zeros((256, 256))
    np.add.at(c, (a, b), 1)
    row = c.sum(1, keepdims=True)
    nz = c > 0
    expected = -np.sum(c[nz] / c.sum() * np.log((c / np.where(row > 0, row, 1))[nz]))
    assert src.entropy_rate == pytest.approx(expected, rel=1e-12)
    # the unigram frequencies are exactly stationary: pi P = pi
    np.testing.assert_allclose(src.chain.step_distribution(src.chain.pi), src.chain.pi, atol=1e-15)


def test_bigram_samples_follow_the_counts(tmp_path):
    src = bigram(FIXTURE, tmp_path)
    walks = np.concatenate([src.batch("train", i, 400, 100) for i in range(3)])
    x, y = walks[:, :-1].ravel(), walks[:, 1:].ravel()
    space = int(np.flatnonzero(src.chain.pi == src.chain.pi.max())[0])  # the commonest token
    emp = np.bincount(y[x == space], minlength=256) / (x == space).sum()
    p = np.zeros(256)
    lo, hi = src.chain.indptr[space], src.chain.indptr[space + 1]
    p[src.chain.indices[lo:hi]] = src.chain.prob[lo:hi]
    se = np.sqrt(p * (1 - p) / (x == space).sum())
    assert np.all(np.abs(emp - p) <= 5 * se + 1e-12)


def test_char_tokenizer_round_trips_utf8(tmp_path):
    text = "Grüße, naïve café — ünïcödé\n" * 20
    path = tmp_path / "u.txt"
    path.write_text(text, encoding="utf-8")
    src = corpus(path, tmp_path, eval_frac=0.1)
    train_text = text[: int(len(text) * 0.9)]
    assert src.decode(src.tokens["train"]) == train_text
    assert src.tokens["train"].max() < 256


def test_bpe_tokenizer_is_trained_on_train_split_and_cached(tmp_path):
    src = bigram(FIXTURE, tmp_path, tokenizer={"kind": "bpe", "vocab_size": 300})
    assert src.vocab_size == 300 and src.tokenizer.vocab_size == 300
    assert max(int(t.max()) for t in src.tokens.values()) < 300
    text = FIXTURE.read_text()
    assert src.decode(src.tokens["train"]) == text[: int(len(text) * 0.9)]
    assert len(list((tmp_path / "cache" / "tokenizers").iterdir())) == 1
    again = bigram(FIXTURE, tmp_path, tokenizer={"kind": "bpe", "vocab_size": 300})
    np.testing.assert_array_equal(again.tokens["eval"], src.tokens["eval"])
    assert again.entropy_rate == src.entropy_rate


# -- corpus windows, determinism ----------------------------------------------------------------


def test_corpus_windows_are_disjoint_one_epoch_and_deterministic(tmp_path):
    src = corpus(FIXTURE, tmp_path)
    seq = 51
    n = src.max_sequences("train", seq)
    assert n == len(src.tokens["train"]) // seq
    batches = [src.batch("train", i, 64, seq) for i in range(n // 64)]
    flat = np.concatenate(batches)
    # every served sequence is one of the non-overlapping windows train[k*seq : (k+1)*seq] ...
    train = src.tokens["train"]
    grid = train[: n * seq].reshape(n, seq)
    where: dict[bytes, list[int]] = {}
    for k, row in enumerate(grid):
        where.setdefault(row.tobytes(), []).append(k)
    assert all(row.tobytes() in where for row in flat)
    # ... and no window index is served twice (equal windows of text are told apart by count)
    served: dict[bytes, int] = {}
    for row in flat:
        served[row.tobytes()] = served.get(row.tobytes(), 0) + 1
    assert all(c <= len(where[key]) for key, c in served.items())
    np.testing.assert_array_equal(corpus(FIXTURE, tmp_path).batch("train", 3, 64, seq), batches[3])
    # eval windows come from the held-out end of the file
    ev = src.batch("eval", 0, 8, seq)
    assert src.decode(ev[0]) in FIXTURE.read_text()[int(len(FIXTURE.read_text()) * 0.9) :]


def test_corpus_refuses_a_batch_past_the_end(tmp_path):
    src = corpus(FIXTURE, tmp_path)
    last = src.max_sequences("train", 50) // 64
    src.batch("train", last - 1, 64, 50)
    with pytest.raises(DataError) as exc:
        src.batch("train", last, 64, 50)
    have = len(src.tokens["train"])
    assert str(exc.value) == (
        f"{FIXTURE}: the train split has {have} tokens = {have // 50} sequences of 50; batch {last} of 64 "
        f"needs {(last + 1) * 64}. Lower the run's train.tokens or use a larger corpus."
    )


def test_bigram_streams_deterministic_and_disjoint(tmp_path):
    src = bigram(FIXTURE, tmp_path)
    a = src.batch("train", 5, 16, 40)
    np.testing.assert_array_equal(a, bigram(FIXTURE, tmp_path).batch("train", 5, 16, 40))
    assert not np.array_equal(a, src.batch("eval", 5, 16, 40))
    assert not np.array_equal(a, src.batch("train", 6, 16, 40))
    assert not np.array_equal(a, bigram(FIXTURE, tmp_path, seed=1).batch("train", 5, 16, 40))


def test_describe_reports_frequencies(tmp_path):
    d = bigram(FIXTURE, tmp_path).describe()
    assert d["vocab_size"] == 256 and d["top_tokens"][0]["token"] == " "
    assert 0 < d["entropy_rate"] < d["unigram_entropy"]
    assert corpus(FIXTURE, tmp_path).describe()["entropy_rate"] == "unknown"


# -- bad input ---------------------------------------------------------------------------------


def test_missing_corpus(tmp_path):
    with pytest.raises(DataError) as exc:
        corpus("nope/missing.txt", tmp_path)
    assert str(exc.value) == (
        f"{tmp_path / 'nope/missing.txt'}: corpus file does not exist. Check `data.corpus` "
        "(relative paths start at the spec file's folder)."
    )


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError) as exc:
        corpus("empty.txt", tmp_path)
    assert str(exc.value) == f"{tmp_path / 'empty.txt'}: corpus is empty. Give a UTF-8 text file with some text."


def test_binary_corpus(tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(DataError) as exc:
        corpus("blob.bin", tmp_path)
    assert str(exc.value) == (
        f"{tmp_path / 'blob.bin'}: not a text file (NUL byte at offset 4). A corpus must be UTF-8 text."
    )


def test_non_utf8_corpus(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(DataError) as exc:
        corpus("latin1.txt", tmp_path)
    assert str(exc.value) == (
        f"{tmp_path / 'latin1.txt'}: not UTF-8 text (invalid byte at offset 3). Re-encode the file as UTF-8."
    )


def test_vocab_larger_than_the_corpus_supports(tmp_path):
    (tmp_path / "small.txt").write_text("hello world, hello there. " * 40)
    with pytest.raises(DataError) as exc:
        bigram("small.txt", tmp_path, tokenizer={"kind": "bpe", "vocab_size": 5000})
    msg = str(exc.value)
    assert msg.startswith(f"{tmp_path / 'small.txt'}: the corpus supports a BPE vocabulary of at most ")
    assert msg.endswith(" tokens (asked for 5000). Lower `tokenizer.vocab_size` or use a larger corpus.")


def test_corpus_too_short_to_split(tmp_path):
    (tmp_path / "tiny.txt").write_text("a")
    with pytest.raises(DataError) as exc:
        corpus("tiny.txt", tmp_path, eval_frac=0.1)
    assert str(exc.value) == (
        f"{tmp_path / 'tiny.txt'}: corpus too short to split (1 characters; eval_frac 0.1 leaves an empty "
        "train part). Use a longer corpus."
    )


# -- the real corpus ---------------------------------------------------------------------------


@pytest.mark.reference
def test_shakespeare_bigram_and_bpe(corpus_dir, tmp_path):
    path = corpus_dir / "tinyshakespeare.txt"
    char = bigram(path, tmp_path)
    # a character bigram model of English sits between the unigram entropy and ~2 nats
    assert 2.0 < char.entropy_rate < char.describe()["unigram_entropy"] < 3.5
    bpe = bigram(path, tmp_path, tokenizer={"kind": "bpe", "vocab_size": 1024})
    assert bpe.tokenizer.vocab_size == 1024
    assert bpe.decode(bpe.tokens["eval"][:20])  # decodes to text
    # BPE tokens carry more information each: a higher per-token entropy rate
    assert bpe.entropy_rate > char.entropy_rate
