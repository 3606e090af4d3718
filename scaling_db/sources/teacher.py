"""`teacher_lm`: text sampled from a small transformer trained on a corpus (the paper's
T1L / T2L / T4L rungs, docs/science.md#the-complexity-ladder).

Teacher. A `n_layers`-layer, `d_model`-wide transformer (heads of 16, learned positions,
context `context`) is trained with scaledb's own model and trainer (`scaling_db.training.model`,
`scaling_db.training.trainer.train_lm`) on the corpus's train split for `train_tokens` tokens: AdamW,
lr 3e-3, weight decay 0.01, 2% warmup then cosine, batch 64 (the recipe DESIGN.md measured for
small models on this kind of machine). When `train_tokens` exceeds one pass over the split the
teacher sees it again, each pass in a fresh window order. The run lives in its own workspace
under `cache_dir/teachers/<hash>/`, the hash covering everything that shapes the teacher (the
corpus *content*, tokenizer, eval_frac, shape, budget, seed) and `TEACHER_FORMAT`, but not
`temperature`, which only affects sampling. Its held-out loss on the corpus is recorded in
`describe()` as an upper reference for students.

Streams. Each sequence starts with a token drawn from the corpus's train unigram distribution;
the rest is sampled from the teacher at `temperature`, one token at a time with a key/value
cache (positions past the teacher's context slide its window and recompute), and cached on disk
under the teacher's folder per (temperature, seed, split, batch shape, index). Uniforms come from
numpy's per-batch RNG (seed, split, index), so batch i needs no earlier batch and train/eval
streams are disjoint. Sampling runs on the CPU in float32: the same machine and thread count
give the same tokens; elsewhere a token whose uniform falls within float rounding of a bucket
edge could flip (probability ~1e-7 per token).

The stream's lowest reachable loss is the teacher's own conditional entropy; `describe()`
estimates it from sampled sequences (a Monte Carlo average, so `entropy_rate` stays None).
"""

from __future__ import annotations

import fcntl
import io
import math
import textwrap
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from scaling_db.errors import DataError
from scaling_db.sources import (
    SPLIT_IDS, Split, TokenSource, batch_rng, check_batch_args, config_hash,
)
from scaling_db.sources.language import CorpusSource
from scaling_db.workspace import atomic_write_bytes

TEACHER_FORMAT = 1
TEACHER_LR = 3e-3
TEACHER_BATCH = 64
TEACHER_EVAL_TOKENS = 20_000
_SAMPLE_STREAM = 0x7EAC  # RNG stream tag of sampled sequences


class _EpochCorpus(TokenSource):
    """The corpus train split served for as many passes as the teacher's budget needs."""

    def __init__(self, corpus: CorpusSource):
        self.corpus = corpus
        self.vocab_size = corpus.vocab_size
        self.entropy_rate = None

    def batch(self, split: Split, index: int, batch_size: int, seq_len: int) -> np.ndarray:
        if split == "eval":
            return self.corpus.batch("eval", index, batch_size, seq_len)
        per_pass = self.corpus.max_sequences("train", seq_len) // batch_size
        if per_pass == 0:
            raise DataError(
                f"{self.corpus.corpus.path}: the train split is shorter than one batch of {batch_size} "
                f"sequences of {seq_len} tokens. Use a longer corpus."
            )
        epoch, i = divmod(index, per_pass)
        if epoch == 0:
            return self.corpus.batch("train", i, batch_size, seq_len)
        rng = np.random.default_rng(np.random.SeedSequence([0xE70C, epoch, seq_len]))
        order = rng.permutation(self.corpus.max_sequences("train", seq_len))
        starts = order[i * batch_size : (i + 1) * batch_size] * seq_len
        return self.corpus.tokens["train"][starts[:, None] + np.arange(seq_len)]

    def describe(self) -> dict[str, Any]:
        return self.corpus.describe()

    def decode(self, tokens: Any) -> str:
        return self.corpus.decode(tokens)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Block until this process alone holds `path` (two runs must not train one teacher twice)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def teacher_key(data: Any, corpus_sha256: str) -> str:
    fields = data.model_dump(mode="json")
    fields.pop("temperature")
    fields["corpus"] = corpus_sha256  # the content, wherever the file lives
    return config_hash({"teacher": fields, "format": TEACHER_FORMAT})


def _teacher_spec(data: Any, corpus_path: Path, eval_tokens: int) -> str:
    """The teacher's run as a scaledb spec (compiled like any other, so it gets a manifest)."""
    tok = data.tokenizer.model_dump(mode="json")
    tok_yaml = "{" + ", ".join(f"{k}: {v}" for k, v in tok.items()) + "}"
    return textwrap.dedent(
        f"""\
        # Generated by scaling_db.sources.teacher: the teacher of a teacher_lm data source.
        experiment: teacher
        data:
          kind: corpus
          corpus: {str(corpus_path)!r}
          tokenizer: {tok_yaml}
          eval_frac: {data.eval_frac!r}
        model:
          kind: transformer
          n_layers: {data.n_layers}
          d_model: {data.d_model}
          d_head: 16
          context: {data.context}
        train:
          optimizer: {{kind: adamw, lr: {TEACHER_LR}, weight_decay: 0.01}}
          schedule: {{kind: cosine, warmup_frac: 0.02}}
          batch_size: {TEACHER_BATCH}
          tokens: {data.train_tokens}
          checkpoints: {{kind: log, count: 6, first: 10}}
          eval_tokens: {eval_tokens}
          precision: fp32
          seed: {data.seed}
        """
    )


class TeacherSource(TokenSource):
    """Sequences sampled from a cached teacher transformer (see module docstring)."""

    entropy_rate = None

    def __init__(self, data: Any, *, base_dir: Path, cache_dir: Path | None):
        import torch

        from scaling_db.training.model import Transformer

        if cache_dir is None:
            raise DataError("teacher_lm needs a cache folder to keep its trained teacher")
        self.data = data
        self.corpus = CorpusSource(data, base_dir=base_dir, cache_dir=cache_dir)
        self.vocab_size = self.corpus.vocab_size
        self.key = teacher_key(data, self.corpus.corpus.sha256)
        self.dir = Path(cache_dir) / "teachers" / self.key
        with _exclusive(self.dir / ".lock"):
            manifest, state_path, self.teacher_eval_loss = self._train_teacher(cache_dir)
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        self.model = Transformer(manifest.model)
        self.model.load_state_dict(state["model"])
        self.model.eval()
        counts = np.bincount(self.corpus.tokens["train"], minlength=self.vocab_size).astype(np.float64)
        self._start_cdf = np.cumsum(counts / counts.sum())

    def _train_teacher(self, cache_dir: Path) -> tuple[Any, Path, float | None]:
        from scaling_db.spec.compiler import compile_spec
        from scaling_db.training.records import RunState, last_record
        from scaling_db.training.trainer import resolve_device, resolve_precision, train_lm
        from scaling_db.workspace import Workspace, atomic_write_text

        # at most half the held-out text: the trainer asks for whole batches of eval windows
        eval_tokens = max(1, min(TEACHER_EVAL_TOKENS, len(self.corpus.tokens["eval"]) // 2))
        spec_path = self.dir / "teacher.yaml"
        text = _teacher_spec(self.data, self.corpus.corpus.path, eval_tokens)
        if not spec_path.exists() or spec_path.read_text() != text:
            atomic_write_text(spec_path, text)
        compiled = compile_spec(spec_path)
        manifest = compiled.runs[0]
        ws = Workspace(self.dir / "ws")
        ws.write_compiled(compiled)
        status = ws.read_status(manifest.run_id)
        if status.status != RunState.FINISHED:
            dev = resolve_device("cpu")
            outcome = train_lm(
                manifest, _EpochCorpus(self.corpus), ws, device=dev,
                precision=resolve_precision("fp32", dev), status=status,
            )
            if outcome.state != RunState.FINISHED:
                raise DataError(
                    f"teacher {self.key}: training ended {outcome.state.value} (see {ws.run_dir(manifest.run_id)}). "
                    "Lower the teacher's learning rate by shrinking d_model, or delete that folder to retry."
                )
            ws.write_status(ws.read_status(manifest.run_id).model_copy(update={"status": RunState.FINISHED}))
        record = last_record(ws.log_path(manifest.run_id))
        return manifest, ws.state_path(manifest.run_id), (record.eval_loss if record else None)

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
            "teacher_dir": str(self.dir),
            "temperature": self.data.temperature,
            "corpus": str(self.corpus.corpus.path),
            "tokenizer": self.corpus.tokenizer.describe(),
            "corpus_train_tokens": int(len(self.corpus.tokens["train"])),
        }

    def decode(self, tokens: np.ndarray | list[int]) -> str:
        return self.corpus.decode(tokens)
