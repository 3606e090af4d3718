"""The trainer: one transformer manifest in, checkpoint records and a resumable state out.

What it writes, all under `runs/<run_id>/` (see `scaling_db.workspace`):
- `log.jsonl`: one `CheckpointRecord` per step of `train.checkpoint_steps`, appended, flushed and
  fsynced as soon as that checkpoint is evaluated;
- `status.json`: its `step` advances with every logged checkpoint (the executor owns the rest);
- `state.pt`: model, optimizer, step, the per-step train losses of the open checkpoint interval,
  wall time and torch RNG states, replaced atomically (write, fsync, rename) at every checkpoint
  (or every `state_every` steps), at the end, and when asked to stop.

Resume: the data position is a function of the step (train batch i is `source.batch("train", i)`),
so a run restarted after being killed at any point loads `state.pt` (if any) and continues from
its step. Records are appended in the order record -> state, so the log is never behind the
state; on resume a torn last line is cut off and a checkpoint already in the log is not appended
again. The mean train loss of an interval is `math.fsum` of its per-step losses, exact whatever
the interval was split by flushes or restarts. Together: on CPU a resumed run's log equals an
uninterrupted run's, record for record, except the timing fields.

Hot loop: no `.item()` per step. Each step's loss is copied into a device buffer that is read
back (one sync) about once a second, at checkpoints and at state saves; that is where NaN/Inf
is caught, with the exact step it first appeared at.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from scaling_db.errors import RunError
from scaling_db.spec.manifest import ResolvedLMTrain, RunManifest
from scaling_db.training.model import Transformer
from scaling_db.training.records import (
    CheckpointRecord, RunState, RunStatus, append_record, repair_log, utc_now,
)
from scaling_db.spec.schema import ConstantSchedule, CosineSchedule, OptimizerSpec, WsdSchedule
from scaling_db.workspace import Workspace, atomic_write_bytes

STATE_FORMAT = 1
#: Per-step losses are read back from the device at least this often (seconds); it bounds how
#: late a divergence is noticed and how stale the progress display is.
FLUSH_INTERVAL_S = 1.0
LOSS_BUFFER_STEPS = 1024

Precision = Literal["fp32", "bf16"]


class TokenSource(Protocol):
    """What the trainer needs from `scaling_db.sources` (deterministic in split and index)."""

    vocab_size: int
    entropy_rate: float | None

    def batch(self, split: str, index: int, batch_size: int, seq_len: int) -> np.ndarray: ...


@dataclass(frozen=True)
class TrainProgress:
    """A progress report, sent about once a second (never per step)."""

    run_id: str
    step: int
    steps: int
    tokens_per_s: float | None
    eval_loss: float | None


@dataclass
class TrainOutcome:
    """How a call to `train_lm` ended: finished, diverged, or stopped on request (pending)."""

    state: RunState
    step: int
    diverged_at_step: int | None = None
    #: seconds spent in training steps, evaluation, and recording (log, status, state) in this call
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Schedules, devices
# ---------------------------------------------------------------------------------------------


def lr_multiplier(step: int, train: ResolvedLMTrain) -> float:
    """Factor on the base LR for the update with 0-based index `step` (in [0, steps)).

    Linear warmup over `warmup_steps` reaching 1 on its last step, then: constant; cosine from 1
    to final_lr_frac over the rest (Loshchilov & Hutter 2017, no restarts); or WSD, constant
    until the last `decay_frac` of steps, then linear to final_lr_frac on the last step
    (Hu et al. 2024, MiniCPM).
    """
    sched, total, warmup = train.schedule, train.steps, train.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if isinstance(sched, ConstantSchedule):
        return 1.0
    if isinstance(sched, CosineSchedule):
        progress = (step - warmup) / max(1, total - warmup)
        return sched.final_lr_frac + (1 - sched.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress))
    if isinstance(sched, WsdSchedule):
        decay = max(1, int(round(sched.decay_frac * total)))
        start = total - decay
        if step < start:
            return 1.0
        return 1.0 - (1.0 - sched.final_lr_frac) * (step - start + 1) / decay
    raise AssertionError(f"unknown schedule {sched!r}")


def resolve_device(device: str) -> torch.device:
    """`auto` is CUDA when available, else CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device {device!r} asked for, but torch sees no CUDA device. Use --device cpu or auto.")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """`auto`: bf16 autocast on GPU (tensor cores), fp32 on CPU (bf16 matmuls are slower there)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision  # type: ignore[return-value]


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def build_optimizer(model: Transformer, spec: OptimizerSpec, device: torch.device) -> torch.optim.Optimizer:
    """AdamW or SGD over the model's per-group param groups (each carries its `lr_scale`)."""
    groups = model.param_groups(lr=spec.lr, weight_decay=spec.weight_decay, optimizer=spec.kind)
    if spec.kind == "adamw":
        # The fused kernel (CPU since torch 2.4, and CUDA) is the fastest step for small models.
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps, fused=True)
    return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, foreach=True)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def eval_sequences(manifest: RunManifest) -> int:
    """Held-out sequences per evaluation: eval_tokens rounded up to whole contexts."""
    return max(1, math.ceil(manifest.train.eval_tokens / manifest.model.context))


def load_eval_batches(source: TokenSource, manifest: RunManifest, device: torch.device) -> list[torch.Tensor]:
    """The fixed held-out set, as (b, T+1) token batches on the device (the same at every checkpoint)."""
    n, bs, seq = eval_sequences(manifest), manifest.train.batch_size, manifest.model.context + 1
    out = []
    for i in range(math.ceil(n / bs)):
        arr = source.batch("eval", i, bs, seq)[: n - i * bs]
        out.append(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64)).to(device))
    return out


@torch.inference_mode()
def evaluate(
    model: Transformer, batches: list[torch.Tensor], amp: AbstractContextManager
) -> tuple[float, dict[str, float]]:
    """Mean next-token loss over the held-out batches, and mean |activation| per layer on the first."""
    total = torch.zeros((), dtype=torch.float64, device=batches[0].device)
    count = 0
    acts: dict[str, float] = {}
    for i, batch in enumerate(batches):
        x, y = batch[:, :-1], batch[:, 1:]  # (b, T) each
        trace = model.trace_activations() if i == 0 else nullcontext(None)
        with trace as traced, amp:
            logits = model(x)  # (b, T, V)
        total += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").double()
        count += y.numel()
        if traced is not None:
            acts = traced
    return float(total) / count, acts


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class _Run:
    """The state of one `train_lm` call (kept together so the loop reads as a loop)."""

    def __init__(self, manifest: RunManifest, source: TokenSource, workspace: Workspace,
                 device: torch.device, precision: Precision, status: RunStatus):
        assert manifest.model.kind == "transformer" and manifest.train.kind == "lm"
        self.m, self.tr, self.cfg = manifest, manifest.train, manifest.model
        self.source, self.ws, self.device, self.status = source, workspace, device, status
        self.run_id = manifest.run_id
        self.amp = autocast(device, precision)
        self.tokens_per_step = self.tr.batch_size * self.cfg.context
        self.fpt = manifest.flops_per_token or {}
        self.checkpoints = set(self.tr.checkpoint_steps)
        self.timings = {"train_s": 0.0, "eval_s": 0.0, "record_s": 0.0}

        # Init on CPU from the manifest's seed, then move: the same weights on every device.
        model = Transformer(self.cfg, generator=torch.Generator().manual_seed(self.tr.seed))
        self.model = model.to(device)
        self.opt = build_optimizer(self.model, self.tr.optimizer, device)
        self.params = [p for p in self.model.parameters()]
        self.step = 0
        self.segment_losses: list[float] = []  # per-step train losses since the last checkpoint
        self.wall_before = 0.0  # wall time of earlier processes of this run
        self._load_state()
        self.logged = {r.step for r in repair_log(workspace.log_path(self.run_id))}

    # -- state ---------------------------------------------------------------------------------
    def _load_state(self) -> None:
        path = self.ws.state_path(self.run_id)
        if not path.exists():
            return
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") != STATE_FORMAT or state.get("run_id") != self.run_id:
            raise RunError(
                f"{path}: saved state is for run {state.get('run_id')!r} (format {state.get('format')}), "
                f"not {self.run_id!r}. Delete it or run with --force."
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        for group in self.opt.param_groups:  # lr_scale is ours; keep the manifest's, not the file's
            group["lr_scale"] = self.model.lr_scale(group["name"], self.tr.optimizer.kind)
        self.step = int(state["step"])
        self.segment_losses = [float(x) for x in state["segment_losses"]]
        self.wall_before = float(state["wall_time_s"])
        if self.device.type == "cpu" and int(state["threads"]) != torch.get_num_threads():
            # CPU kernels split their sums by thread: keep the count the run started with so
            # the resumed curve is bit-identical (at worst a little oversubscription).
            torch.set_num_threads(int(state["threads"]))
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)

    def save_state(self) -> None:
        t0 = time.perf_counter()
        state = {
            "format": STATE_FORMAT,
            "run_id": self.run_id,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "segment_losses": torch.tensor(self.segment_losses, dtype=torch.float64),
            "wall_time_s": self.wall_time(),
            "rng_cpu": torch.get_rng_state(),
            "threads": torch.get_num_threads(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.ws.state_path(self.run_id), buf.getvalue())
        self.timings["record_s"] += time.perf_counter() - t0

    def is_state_step(self, step: int) -> bool:
        if step == self.tr.steps:
            return True
        if self.tr.state_every is None:
            return step in self.checkpoints
        return step % self.tr.state_every == 0

    def wall_time(self) -> float:
        return self.wall_before + (time.perf_counter() - self.t_start)

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self, log, lr: float, seg_tokens: int, seg_train_s: float) -> float:
        """Evaluate, append the record (unless already logged), update status; returns eval loss."""
        t0 = time.perf_counter()
        self.model.eval()
        eval_loss, acts = evaluate(self.model, self.eval_batches, self.amp)
        self.model.train()
        t1 = time.perf_counter()
        self.timings["eval_s"] += t1 - t0
        tokens = self.step * self.tokens_per_step
        train_loss = math.fsum(self.segment_losses) / len(self.segment_losses) if self.segment_losses else None
        flops = {k: (float(v) * tokens if v is not None else None) for k, v in self.fpt.items()}
        record = CheckpointRecord(
            run_id=self.run_id,
            step=self.step,
            tokens=tokens,
            flops_6n_nonembed=flops.get("6n_nonembed"),
            flops_6n=flops.get("6n"),
            flops_exact=flops.get("exact"),
            train_loss=train_loss,
            eval_loss=eval_loss,
            lr=lr,
            wall_time_s=self.wall_time(),
            tokens_per_s=seg_tokens / seg_train_s if seg_train_s > 0 and seg_tokens else None,
            metrics={f"act_mean_abs.{k}": v for k, v in acts.items()},
        )
        if self.step not in self.logged:
            append_record(log, record)
            self.logged.add(self.step)
        self.status = self.status.model_copy(update={"step": self.step, "updated_at": utc_now()})
        self.ws.write_status(self.status)
        self.segment_losses = []
        self.timings["record_s"] += time.perf_counter() - t1
        return eval_loss

    # -- log completeness ----------------------------------------------------------------------
    def check_log(self, upto: int) -> None:
        """Every checkpoint step <= `upto` must be in the log (records are appended before the
        state is saved, so only outside damage leaves a gap); a run with gaps is never finished."""
        missing = [s for s in self.tr.checkpoint_steps if s <= upto and s not in self.logged]
        if missing:
            raise RunError(
                f"run {self.run_id}: {self.ws.log_path(self.run_id)} lacks checkpoint step(s) "
                f"{', '.join(map(str, missing))} that the saved state (step {self.step}) is past: the log lost "
                f"records after they were written. Run it again from scratch: "
                f"`scaledb run {self.m.origin.spec_path} --force --only {self.run_id}`"
            )

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop: Callable[[], bool] | None, progress: Callable[[TrainProgress], None] | None) -> TrainOutcome:
        if self.step > 0:  # resuming from a saved state: its checkpoints must all be logged
            self.check_log(self.step)
        self.t_start = time.perf_counter()
        self.eval_batches = load_eval_batches(self.source, self.m, self.device)
        self.losses = torch.empty(LOSS_BUFFER_STEPS, dtype=torch.float32, device=self.device)
        self.n_buf = 0  # losses in the buffer, not yet read back
        self.last_eval: float | None = None
        with open(self.ws.log_path(self.run_id), "ab") as log:
            if self.step == 0 and 0 in self.checkpoints:  # an evaluation of the initial weights
                self.last_eval = self.checkpoint(log, self.tr.optimizer.lr * lr_multiplier(0, self.tr), 0, 0.0)
            self.seg_step0, self.seg_t0 = self.step, time.perf_counter()  # the open checkpoint interval
            self.flush_t0, self.flush_step0 = self.seg_t0, self.step  # since the last read-back
            self.model.train()
            while self.step < self.tr.steps:
                if stop is not None and stop():
                    return self._stop_early()
                lr = self._train_step()
                ended = self._after_step(log, lr, progress)
                if ended is not None:
                    return ended
            self.check_log(self.tr.steps)
            return self._outcome(RunState.FINISHED)

    def _outcome(self, state: RunState, diverged: int | None = None) -> TrainOutcome:
        self.timings["total_s"] = time.perf_counter() - self.t_start
        return TrainOutcome(state, self.step, diverged, dict(self.timings))

    def _train_step(self) -> float:
        """One optimizer step on train batch `self.step`; its loss stays on the device. Returns the LR."""
        tr = self.tr
        lr = tr.optimizer.lr * lr_multiplier(self.step, tr)
        for group in self.opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        tokens = self.source.batch("train", self.step, tr.batch_size, self.cfg.context + 1)  # (B, T+1): position = step
        batch = torch.from_numpy(tokens).to(self.device, torch.long, non_blocking=True)
        with self.amp:
            loss = self.model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        if tr.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, tr.grad_clip, foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses[self.n_buf] = loss.detach()  # no sync: read back in bulk by `_read_losses`
        self.n_buf += 1
        self.step += 1
        return lr

    def _after_step(self, log, lr: float, progress: Callable[[TrainProgress], None] | None) -> TrainOutcome | None:
        """Read back losses, report progress, checkpoint and save state when due; an outcome if it diverged."""
        is_ckpt, is_state = self.step in self.checkpoints, self.is_state_step(self.step)
        now = time.perf_counter()
        if not (is_ckpt or is_state or self.n_buf == LOSS_BUFFER_STEPS or now - self.flush_t0 >= FLUSH_INTERVAL_S):
            return None
        diverged = self._read_losses()
        if diverged is not None:
            return diverged
        now = time.perf_counter()
        if progress is not None:
            rate = (self.step - self.flush_step0) * self.tokens_per_step / max(now - self.flush_t0, 1e-9)
            progress(TrainProgress(self.run_id, self.step, self.tr.steps, rate, self.last_eval))
        self.flush_t0, self.flush_step0 = now, self.step
        if is_ckpt:
            seg_s = now - self.seg_t0
            self.timings["train_s"] += seg_s
            self.last_eval = self.checkpoint(log, lr, (self.step - self.seg_step0) * self.tokens_per_step, seg_s)
            if not math.isfinite(self.last_eval):
                return self._outcome(RunState.DIVERGED, self.step)
        if is_state:
            t_save = time.perf_counter()
            self.save_state()
            if not is_ckpt:  # keep the save out of the interval's tokens/s
                self.seg_t0 += time.perf_counter() - t_save
        if is_ckpt:
            self.seg_step0, self.seg_t0 = self.step, time.perf_counter()
            self.flush_t0 = self.seg_t0
        return None

    def _read_losses(self) -> TrainOutcome | None:
        """Read back the buffered losses (one sync); the first non-finite one is the divergence."""
        values = self.losses[: self.n_buf].tolist()
        first = self.step - self.n_buf
        self.n_buf = 0
        for i, v in enumerate(values):
            if not math.isfinite(v):
                self.step = first + i + 1
                return self._outcome(RunState.DIVERGED, self.step)
        self.segment_losses.extend(values)
        return None

    def _stop_early(self) -> TrainOutcome:
        """Asked to stop: keep the work done since the last save, then hand back as pending."""
        diverged = self._read_losses()
        if diverged is not None:
            return diverged
        self.timings["train_s"] += time.perf_counter() - self.seg_t0
        self.save_state()
        return self._outcome(RunState.PENDING)


def train_lm(
    manifest: RunManifest,
    source: TokenSource,
    workspace: Workspace,
    *,
    device: torch.device,
    precision: Precision,
    status: RunStatus,
    stop: Callable[[], bool] | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainOutcome:
    """Train (or resume) one transformer run, recording every checkpoint; see the module docstring.

    `stop` is polled once per step; when it returns True the run saves its state and returns
    `pending`. `status` is the run's current status (the trainer advances its `step`).
    """
    if manifest.model.kind != "transformer" or manifest.train.kind != "lm":
        raise RunError(f"run {manifest.run_id}: train_lm needs a transformer manifest (got {manifest.model.kind!r})")
    if source.vocab_size > manifest.model.vocab_size:
        raise RunError(
            f"run {manifest.run_id}: the data source has {source.vocab_size} tokens but the model's "
            f"vocabulary is {manifest.model.vocab_size}. Recompile the spec."
        )
    return _Run(manifest, source, workspace, device, precision, status).run(stop, progress)
