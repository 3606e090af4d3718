"""teacher_lm: the source samples from a finished teacher run and trains nothing itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from scaling_db.errors import DataError
from scaling_db.sources import build_source
from scaling_db.sources.teacher import TeacherSource
from scaling_db.spec.compiler import compile_spec
from scaling_db.spec.data import TeacherLMData
from scaling_db.training.execute import execute_run
from scaling_db.workspace import Workspace
from teacher_helpers import TEACHER, teacher_spec


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models: a second intra-op thread only adds spin-waiting on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace whose teacher run is finished, and the students' data section."""
    root = tmp_path_factory.mktemp("teacher")
    compiled = compile_spec(teacher_spec(root))
    ws = Workspace(root / "ws")
    ws.write_compiled(compiled)
    (teacher,) = compiled.upstream
    assert execute_run(ws, teacher.run_id, device="cpu").status.value == "finished"
    return ws, compiled.runs[0].data


def teacher(trained, **kw) -> TeacherSource:
    ws, data = trained
    src = build_source(data.model_copy(update=kw), base_dir=Path("."), cache_dir=ws.cache_dir, runs_dir=ws.runs_dir)
    assert isinstance(src, TeacherSource)
    return src


def test_the_source_loads_the_finished_teacher_run(trained):
    ws, data = trained
    src = teacher(trained)
    assert src.teacher.run_id == data.teacher_run_id
    assert src.teacher_eval_loss is not None and 0 < src.teacher_eval_loss < 5.6  # below uniform log 256
    assert not list(ws.cache_dir.rglob("state.pt"))  # nothing trained in the cache
    hot = teacher(trained, temperature=1.5)  # temperature only changes sampling: same teacher
    assert hot.teacher.state_sha256 == src.teacher.state_sha256


def test_cached_decoding_matches_the_full_forward_pass(trained):
    src = teacher(trained)
    idx = torch.from_numpy(src.batch("train", 0, 4, 16))
    with torch.inference_mode():
        full = src.model(idx)  # (B, T, V)
        kv: list = [None] * len(src.model.blocks)
        for t in range(16):
            step = src._logits_step(idx[:, t : t + 1], kv, t)
            torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=1e-5)


def test_samples_are_deterministic_disjoint_and_in_vocab(trained):
    src = teacher(trained)
    a = src.batch("train", 3, 8, 24)  # 24 > context 16: exercises the sliding window too
    assert a.shape == (8, 24) and a.dtype == np.int64 and a.max() < 256
    fresh = teacher(trained)
    fresh_rng_batch = fresh.sample(np.random.default_rng(np.random.SeedSequence([0, 0, 3, 0x7EAC])), 8, 24)
    np.testing.assert_array_equal(a, fresh_rng_batch)  # the disk cache holds what sampling gives
    assert not np.array_equal(a, src.batch("eval", 3, 8, 24))
    assert not np.array_equal(a, src.batch("train", 4, 8, 24))


def test_temperature_controls_the_stream_entropy(trained):
    cold, hot = teacher(trained, temperature=0.5), teacher(trained, temperature=1.5)
    assert cold.stream_entropy[0] < hot.stream_entropy[0]
    d = cold.describe()
    assert d["entropy_rate"] == "unknown" and d["teacher_eval_loss"] == cold.teacher_eval_loss
    assert d["teacher_run"].startswith(cold.teacher.run_id)


def test_an_unfinished_teacher_is_a_clear_error(tmp_path):
    compiled = compile_spec(teacher_spec(tmp_path))
    ws = Workspace(tmp_path / "ws")
    data = compiled.runs[0].data
    with pytest.raises(DataError, match=f"teacher run {data.teacher_run_id}: not in this workspace"):
        build_source(data, base_dir=Path("."), cache_dir=ws.cache_dir, runs_dir=ws.runs_dir)
    ws.write_compiled(compiled)
    with pytest.raises(DataError, match=f"teacher run {data.teacher_run_id} \\(teacher-L1-d16.*\\) is pending"):
        build_source(data, base_dir=Path("."), cache_dir=ws.cache_dir, runs_dir=ws.runs_dir)


def test_teacher_data_without_a_teacher_run_asks_for_a_recompile(tmp_path):
    with pytest.raises(DataError, match="Recompile the spec"):
        build_source(TeacherLMData.model_validate(TEACHER), base_dir=Path("."), cache_dir=tmp_path, runs_dir=tmp_path)
    with pytest.raises(DataError, match="needs the workspace's runs folder"):
        build_source(TeacherLMData.model_validate(TEACHER), base_dir=Path("."), cache_dir=tmp_path)


# -- the import graph: sources load artefacts, they never train or compile -------------------------

FORBIDDEN = ("scaling_db.training", "scaling_db.spec.compiler", "scaling_db.cli", "runners")
ALLOWED = ("scaling_db.training.model",)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):  # function-local imports included
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_sources_import_no_trainer_and_no_compiler():
    bad = {
        f"{path.name}: {name}"
        for path in sorted((REPO / "scaling_db" / "sources").glob("*.py"))
        for name in _imports(path)
        if name.startswith(FORBIDDEN) and name not in ALLOWED
    }
    assert not bad, f"scaling_db/sources imports {sorted(bad)}"
    # and transitively: importing every source (and the model it may load) pulls in neither
    code = ("import sys, pkgutil, importlib, scaling_db.sources as s, scaling_db.training.model\n"
            "for m in pkgutil.iter_modules(s.__path__): importlib.import_module('scaling_db.sources.' + m.name)\n"
            "print(sorted(n for n in sys.modules if n in ('scaling_db.training.trainer', "
            "'scaling_db.training.execute', 'scaling_db.spec.compiler')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_the_teachers_corpus_repeats_in_fresh_orders(tmp_path):
    from scaling_db.spec.manifest import CorpusEpochsData

    src = build_source(CorpusEpochsData(kind="corpus_epochs", corpus=TEACHER["corpus"]), base_dir=Path("."),
                       cache_dir=tmp_path)
    per_pass = src._windows("train", 17) // 64
    first = np.concatenate([src.batch("train", i, 64, 17) for i in range(per_pass)])
    second = np.concatenate([src.batch("train", per_pass + i, 64, 17) for i in range(per_pass)])
    n = src._windows("train", 17)
    windows = {r.tobytes() for r in src.tokens["train"][: n * 17].reshape(n, 17)}
    assert {r.tobytes() for r in second} <= windows  # the corpus's own windows again
    assert not np.array_equal(first, second)  # in a fresh order
    n_eval = src._windows("eval", 17)
    cycled = src.batch("eval", n_eval // 64 + 1, 64, 17)  # past the held-out split: wraps around
    assert cycled.shape == (64, 17) and src.max_sequences("train", 17) is None
