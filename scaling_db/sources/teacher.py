"""`teacher_lm`: text sampled from a small transformer trained on a corpus (the paper's
T1L / T2L / T4L rungs, docs/science.md#the-complexity-ladder).

Teacher. The teacher is an upstream run: the compiler builds its
manifest (`scaling_db.spec.resolve.teacher_manifest`: a `n_layers`-layer, `d_model`-wide
transformer trained on the corpus for `train_tokens` tokens), the runners train it before any
student starts, and the students' data names it (`teacher_run_id`). This source trains nothing:
it loads the finished run from `runs_dir/<teacher_run_id>/` (manifest, `state.pt`, and the last
held-out loss of its log, shown in `describe()` as an upper reference for students) and fails
with a DataError naming the run when it is missing or not finished.

Streams. Each sequence starts with a token drawn from the corpus's train unigram distribution;
the rest is sampled from the teacher at `temperature`, one token at a time with a key/value
cache (positions past the teacher's context slide its window and recompute), and cached on disk
under `cache_dir/teachers/<teacher_run_id>-<state hash>/` per (temperature, seed, split, batch
shape, index): the state's hash keeps a retrained teacher from reusing old samples. Uniforms
come from numpy's per-batch RNG (seed, split, index), so batch i needs no earlier batch and
train/eval streams are disjoint. Sampling runs on the CPU in float32: the same machine and
thread count give the same tokens; elsewhere a token whose uniform falls within float rounding
of a bucket edge could flip (probability ~1e-7 per token).

The stream's lowest reachable loss is the teacher's own conditional entropy; `describe()`
estimates it from sampled sequences (a Monte Carlo average, so `entropy_rate` stays None).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from scaling_db.errors import DataError
from scaling_db.sources import SPLIT_IDS, Split, TokenSource, batch_rng, check_batch_args
from scaling_db.sources.language import CorpusSource
from scaling_db.spec.manifest import RunManifest
from scaling_db.workspace import atomic_write_bytes

_SAMPLE_STREAM = 0x7EAC  # RNG stream tag of sampled sequences


@dataclass(frozen=True)
class FinishedTeacher:
    """A finished teacher run, loaded: what sampling and `describe()` need."""

    run_id: str
    name: str
    model: Any  # scaling_db.training.model.Transformer, in eval mode on the CPU
    eval_loss: float | None
    state_sha256: str


def _run_state(run_dir: Path) -> str:
    """The status recorded in a run's status.json ('pending' when there is none yet)."""
    try:
        return str(json.loads((run_dir / "status.json").read_bytes()).get("status", "unknown"))
    except FileNotFoundError:
        return "pending"
    except (ValueError, AttributeError):
        return "unknown"


def _last_eval_loss(log_path: Path) -> float | None:
    """The held-out loss of the last complete record of a run's log (None if there is none)."""
    try:
        lines = log_path.read_bytes().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            value = json.loads(line).get("eval_loss")
        except (ValueError, AttributeError):
            continue  # a torn last line
        return float(value) if isinstance(value, (int, float)) else None
    return None


def load_teacher(runs_dir: Path, run_id: str) -> FinishedTeacher:
    """The finished teacher run `run_id` of a workspace's runs folder. Raises DataError."""
    from scaling_db.training.model import load_trained_model

    run_dir = runs_dir / run_id
    try:
        manifest = RunManifest.model_validate_json((run_dir / "manifest.json").read_bytes())
    except FileNotFoundError:
        raise DataError(
            f"teacher run {run_id}: not in this workspace (no {run_dir / 'manifest.json'}). "
            "Compile and run the spec: `scaledb run SPEC` trains the teacher before its students."
        ) from None
    except ValidationError as exc:
        raise DataError(f"teacher run {run_id}: {run_dir / 'manifest.json'} is not a valid manifest "
                        f"({exc.error_count()} problems). Recompile the spec.") from None
    state = _run_state(run_dir)
    if state != "finished" or manifest.model.kind != "transformer":
        retry = " --retry-failed" if state in ("failed", "diverged") else ""
        raise DataError(
            f"teacher run {run_id} ({manifest.name}) is {state}, not finished. Train it first: "
            f"`scaledb run SPEC{retry}` runs the teacher before its students (see `scaledb status {run_id}`)."
        )
    state_path = run_dir / "state.pt"
    model = load_trained_model(manifest.model, state_path, run_id)
    sha = hashlib.sha256(state_path.read_bytes()).hexdigest()
    return FinishedTeacher(run_id, manifest.name, model, _last_eval_loss(run_dir / "log.jsonl"), sha)


class TeacherSource(TokenSource):
    """Sequences sampled from a finished teacher run (see module docstring)."""

    entropy_rate = None

    def __init__(self, data: Any, *, base_dir: Path, cache_dir: Path, runs_dir: Path):
        teacher_run_id = getattr(data, "teacher_run_id", None)
        if teacher_run_id is None:
            raise DataError("teacher_lm data without a teacher run (a manifest compiled by an older scaledb). "
                            "Recompile the spec: `scaledb compile SPEC`.")
        self.data = data
        self.corpus = CorpusSource(data, base_dir=base_dir, cache_dir=cache_dir)
        self.vocab_size = self.corpus.vocab_size
        self.teacher = load_teacher(Path(runs_dir), teacher_run_id)
        self.model = self.teacher.model
        self.teacher_eval_loss = self.teacher.eval_loss
        self.dir = Path(cache_dir) / "teachers" / f"{teacher_run_id}-{self.teacher.state_sha256[:12]}"
        counts = np.bincount(self.corpus.tokens["train"], minlength=self.vocab_size).astype(np.float64)
        self._start_cdf = np.cumsum(counts / counts.sum())

    # -- sampling --------------------------------------------------------------------------------

    def _logits_step(self, idx: Any, cache: list[Any], pos: int) -> Any:
        """Logits for the last position of `idx` (B, 1) at position `pos`, extending the
        per-layer key/value cache. Mirrors `Transformer.forward` one position at a time."""
        import torch
        import torch.nn.functional as F

        m = self.model
        x = m.wte(idx)  # (B, 1, C)
        if m.wpe is not None:
            x = x + m.wpe.weight[pos : pos + 1]
        if m.emb_mult != 1.0:
            x = x * m.emb_mult
        rotary = (m.rope_cos[pos : pos + 1], m.rope_sin[pos : pos + 1]) if m.rope_cos is not None else None
        for layer, block in enumerate(m.blocks):
            attn = block.attn
            h = block.ln_1(x)
            B, T, C = h.shape
            q, k, v = attn.qkv(h).split(C, dim=2)
            q = q.view(B, T, attn.n_heads, attn.d_head).transpose(1, 2)  # (B, nh, 1, hs)
            k = k.view(B, T, attn.n_heads, attn.d_head).transpose(1, 2)
            v = v.view(B, T, attn.n_heads, attn.d_head).transpose(1, 2)
            if rotary is not None:
                from scaling_db.training.model import apply_rotary

                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            if cache[layer] is not None:
                k = torch.cat([cache[layer][0], k], dim=2)  # (B, nh, pos+1, hs)
                v = torch.cat([cache[layer][1], v], dim=2)
            cache[layer] = (k, v)
            # the newest query may attend to every cached position: no mask needed
            y = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
            x = x + attn.proj(y.transpose(1, 2).reshape(B, T, C))
            x = x + block.mlp(block.ln_2(x))
        logits = m.lm_head(m.ln_f(x))[:, -1]  # (B, V)
        return logits * m.out_mult if m.out_mult != 1.0 else logits

    def _choose(self, logits: Any, u: np.ndarray) -> np.ndarray:
        """Inverse-CDF draw from softmax(logits / temperature), in float64 on numpy."""
        z = logits.double().numpy() / self.data.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        cdf = np.cumsum(p, axis=1)
        return np.minimum((cdf < (u * cdf[:, -1])[:, None]).sum(axis=1), p.shape[1] - 1)

    def sample(self, rng: np.random.Generator, batch_size: int, seq_len: int, *, with_entropy: bool = False):
        """(batch_size, seq_len) int64 sampled sequences; optionally the per-position entropies
        of the sampling distributions (B, seq_len - 1), in nats."""
        import torch

        u = rng.random((seq_len, batch_size))
        out = np.empty((batch_size, seq_len), dtype=np.int64)
        out[:, 0] = np.minimum(np.searchsorted(self._start_cdf, u[0] * self._start_cdf[-1], side="right"), self.vocab_size - 1)
        ent = np.zeros((batch_size, max(seq_len - 1, 0)))
        ctx = self.data.context
        cache: list[Any] = [None] * len(self.model.blocks)
        with torch.inference_mode():
            for t in range(1, seq_len):
                if t - 1 < ctx:  # position t-1 still fits: extend the cache by one position
                    logits = self._logits_step(torch.from_numpy(out[:, t - 1 : t]), cache, t - 1)
                else:  # past the context: slide the window and recompute
                    logits = self.model(torch.from_numpy(out[:, t - ctx : t]))[:, -1]
                out[:, t] = self._choose(logits, u[t])
                if with_entropy:
                    logp = torch.log_softmax(logits.double() / self.data.temperature, dim=-1)
                    ent[:, t - 1] = -(logp.exp() * logp).sum(-1).numpy()
        return (out, ent) if with_entropy else out

    def batch(self, split: Split, index: int, batch_size: int, seq_len: int) -> np.ndarray:
        """Sampled sequences, cached on disk: a width sweep's runs all read the same batches, and
        sampling (~10k tokens/s on one core) is slower than training a small student."""
        check_batch_args(split, index, batch_size, seq_len)
        stream = f"t{self.data.temperature!r}-s{self.data.seed}-{split}-b{batch_size}-l{seq_len}"
        path = self.dir / "samples" / stream / f"{index}.npy"
        if path.exists():
            return np.load(path).astype(np.int64)
        out = self.sample(batch_rng(self.data.seed, split, index, _SAMPLE_STREAM), batch_size, seq_len)
        buf = io.BytesIO()
        np.save(buf, out.astype(np.uint16 if self.vocab_size <= 2**16 else np.uint32))
        atomic_write_bytes(path, buf.getvalue())
        return out

    @cached_property
    def stream_entropy(self) -> tuple[float, float]:
        """Monte Carlo estimate (mean, standard error) of the stream's conditional entropy per
        predicted token over a context-length window: the loss of a perfect student."""
        seq = self.data.context + 1
        rng = np.random.default_rng(np.random.SeedSequence([self.data.seed % 2**64, SPLIT_IDS["eval"], 0xE5]))
        _, ent = self.sample(rng, 64, seq, with_entropy=True)
        per_seq = ent.mean(axis=1)
        return float(per_seq.mean()), float(per_seq.std(ddof=1) / math.sqrt(len(per_seq)))

    def describe(self) -> dict[str, Any]:
        mean, se = self.stream_entropy
        return {
            "kind": "teacher_lm",
            "vocab_size": self.vocab_size,
            "entropy_rate": "unknown",
            "stream_entropy_estimate": mean,
            "stream_entropy_stderr": se,
            "teacher_eval_loss": self.teacher_eval_loss,
            "teacher": f"{self.data.n_layers} layers, d_model {self.data.d_model}, context {self.data.context}, "
            f"{self.data.train_tokens} tokens",
            "teacher_run": f"{self.teacher.run_id} ({self.teacher.name})",
            "samples_dir": str(self.dir),
            "temperature": self.data.temperature,
            "corpus": str(self.corpus.corpus.path),
            "tokenizer": self.corpus.tokenizer.describe(),
            "corpus_train_tokens": int(len(self.corpus.tokens["train"])),
        }

    def decode(self, tokens: np.ndarray | list[int]) -> str:
        return self.corpus.decode(tokens)
