"""teacher_lm: a tiny teacher trained with scaledb's own trainer, cached, and sampled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_db.errors import DataError
from scaling_db.sources import build_source
from scaling_db.sources.teacher import TeacherSource
from scaling_db.spec.data import TeacherLMData

FIXTURE = Path(__file__).resolve().parents[1] / "specs" / "data" / "tiny_corpus.txt"
TINY = {"kind": "teacher_lm", "corpus": str(FIXTURE), "n_layers": 1, "d_model": 16, "context": 16,
        "train_tokens": 40_000}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models: a second intra-op thread only adds spin-waiting on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def teacher(cache: Path, **kw) -> TeacherSource:
    src = build_source(TeacherLMData.model_validate({**TINY, **kw}), base_dir=Path("."), cache_dir=cache)
    assert isinstance(src, TeacherSource)
    return src


def test_teacher_is_trained_once_and_cached(cache):
    a = teacher(cache)
    runs = list((cache / "teachers").iterdir())
    assert len(runs) == 1
    mtime = next(runs[0].rglob("state.pt")).stat().st_mtime_ns
    b = teacher(cache, temperature=0.5)  # temperature does not change the teacher
    assert b.key == a.key and next(runs[0].rglob("state.pt")).stat().st_mtime_ns == mtime
    assert a.teacher_eval_loss is not None and 0 < a.teacher_eval_loss < 5.6  # below uniform log 256
    assert teacher(cache, seed=1).key != a.key  # the seed trains another teacher


def test_cached_decoding_matches_the_full_forward_pass(cache):
    src = teacher(cache)
    idx = torch.from_numpy(src.batch("train", 0, 4, 16))
    with torch.inference_mode():
        full = src.model(idx)  # (B, T, V)
        kv: list = [None] * len(src.model.blocks)
        for t in range(16):
            step = src._logits_step(idx[:, t : t + 1], kv, t)
            torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=1e-5)


def test_samples_are_deterministic_disjoint_and_in_vocab(cache):
    src = teacher(cache)
    a = src.batch("train", 3, 8, 24)  # 24 > context 16: exercises the sliding window too
    assert a.shape == (8, 24) and a.dtype == np.int64 and a.max() < 256
    fresh = TeacherSource(TeacherLMData.model_validate(TINY), base_dir=Path("."), cache_dir=cache)
    fresh_rng_batch = fresh.sample(
        np.random.default_rng(np.random.SeedSequence([0, 0, 3, 0x7EAC])), 8, 24
    )
    np.testing.assert_array_equal(a, fresh_rng_batch)  # the disk cache holds what sampling gives
    assert not np.array_equal(a, src.batch("eval", 3, 8, 24))
    assert not np.array_equal(a, src.batch("train", 4, 8, 24))


def test_temperature_controls_the_stream_entropy(cache):
    cold, hot = teacher(cache, temperature=0.5), teacher(cache, temperature=1.5)
    assert cold.stream_entropy[0] < hot.stream_entropy[0]
    d = cold.describe()
    assert d["entropy_rate"] == "unknown" and d["teacher_eval_loss"] == cold.teacher_eval_loss


def test_teacher_needs_a_cache_folder():
    with pytest.raises(DataError, match="needs a cache folder"):
        TeacherSource(TeacherLMData.model_validate(TINY), base_dir=Path("."), cache_dir=None)
