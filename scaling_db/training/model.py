"""The decoder-only transformer that every token-level run trains, in SP or muP.

One file, read top to bottom (after nanoGPT's `model.py`). Pre-norm blocks; learned or rotary
positions; tied or untied readout; optional biases. Its parameter count is exactly
`scaling_db.spec.counting.count_params` (a test pins that for a grid of shapes and GPT-2 small).

Parameterizations, with width multiplier w = d_model / base_width (docs/science.md#mup, after
Tensor Programs V, Yang et al. 2022, Table 3 and its Appendix B "muP with multipliers"):

| group     | what                          | init std (x init_mult)       | forward mult  | Adam LR   |
|-----------|-------------------------------|------------------------------|---------------|-----------|
| embedding | token + position embeddings   | 0.02 (constant in width)     | alpha_emb     | eta       |
| hidden    | q, k, v, out, MLP in/out      | 1/sqrt(fan_in)               | 1             | eta / w   |
| norm      | LayerNorm weights, all biases | weight 1, bias 0             | 1             | eta       |
| readout   | unembedding (untied)          | 0 or 1/sqrt(base_width)      | alpha_out / w | eta       |
| attention | logits                        |                              | 1/d_head      |           |

With tied embeddings the readout is the token embedding: it keeps the embedding's init and LR
group, still gets the alpha_out / w multiplier under muP, and `zero_init_readout` does not apply.

SP is the same model with multipliers 1, attention 1/sqrt(d_head), readout init
1/sqrt(d_model) and one learning rate: hidden init is fan-in scaled in both, so at w = 1 the
two differ only in the attention scale (1/d_head vs 1/sqrt(d_head), as in TP V and the `mup`
package) and in the zero-init options. Every group's learning rate is further multiplied by
`lr_mult[g] * w ** lr_width_exponent[g]`, so "SP with embedding LR x width" (Kalra & Barkeshli
2026) is `lr_width_exponent: {embedding: 1}`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling_db.errors import WorkspaceError
from scaling_db.spec.manifest import ResolvedTransformer

ParamGroupName = Literal["embedding", "hidden", "readout", "norm"]
PARAM_GROUPS: tuple[ParamGroupName, ...] = ("embedding", "hidden", "readout", "norm")

#: Embedding init std, constant in width under both parameterizations (GPT-2 uses 0.02).
EMBED_STD = 0.02


def width_mult(cfg: ResolvedTransformer) -> float:
    """w = d_model / base_width: 1 at the base width, where muP and SP coincide."""
    return cfg.d_model / cfg.parameterization.base_width


def rotary_tables(context: int, d_head: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoFormer's rotation angles (Su et al. 2021, eq. 34), each (T, hs/2)."""
    inv_freq = 1.0 / base ** (torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angles = torch.outer(torch.arange(context, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of the last dim of x (B, nh, T, hs) by position-dependent angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, nh, T, hs/2) each
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ResolvedTransformer):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.d_head = cfg.n_heads, d // cfg.n_heads
        # q, k, v in one matmul: same parameter count as three d x d projections, one kernel.
        self.qkv = nn.Linear(d, 3 * d, bias=cfg.bias)
        self.proj = nn.Linear(d, d, bias=cfg.bias)
        # muP: logits scale 1/d_head, because q and k become correlated during training and
        # their dot product grows like d_head, not sqrt(d_head) (TP V, Sec. 4 / Table 3).
        mup = cfg.parameterization.kind == "mup"
        self.scale = 1.0 / self.d_head if mup else 1.0 / math.sqrt(self.d_head)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        if rotary is not None:
            cos, sin = rotary[0][:T], rotary[1][:T]
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: ResolvedTransformer):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: ResolvedTransformer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)


class Transformer(nn.Module):
    """Decoder-only pre-norm transformer; `forward(idx)` gives logits, `forward(idx, targets)` the mean loss."""

    def __init__(self, cfg: ResolvedTransformer, generator: torch.Generator | None = None):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model must be a multiple of n_heads (got {cfg.d_model} and {cfg.n_heads})")
        if cfg.positions == "rotary" and (cfg.d_model // cfg.n_heads) % 2:
            raise ValueError(f"rotary positions need an even head size (got {cfg.d_model // cfg.n_heads})")
        self.cfg = cfg
        p = cfg.parameterization
        self.mup = p.kind == "mup"
        self.w = width_mult(cfg)
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model) if cfg.positions == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.bias and not cfg.tie_embeddings)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # one matrix, counted once by parameters()
        if cfg.positions == "rotary":
            cos, sin = rotary_tables(cfg.context, cfg.d_model // cfg.n_heads)
            # Not persistent: derived from the config, so neither saved nor counted.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None
        # Forward multipliers (TP V, Appendix B): embeddings x alpha_emb, logits x alpha_out / w.
        self.emb_mult = p.alpha_emb if self.mup else 1.0
        self.out_mult = p.alpha_out / self.w if self.mup else 1.0
        self._trace: dict[str, torch.Tensor] | None = None
        self.reset_parameters(generator)

    # -- init ------------------------------------------------------------------------------------
    def param_group_of(self, name: str) -> ParamGroupName:
        """The muP table row a parameter belongs to (by its name in `named_parameters()`)."""
        if name.endswith(".bias") or name.startswith("ln_f.") or ".ln_" in name:
            return "norm"
        if name.startswith(("wte.", "wpe.")):
            return "embedding"
        if name.startswith("lm_head."):
            return "readout"
        return "hidden"

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise every parameter per its group; `generator` makes it reproducible without global RNG."""
        cfg, p = self.cfg, self.cfg.parameterization
        for name, param in self.named_parameters():
            group = self.param_group_of(name)
            if group == "norm":
                if name.endswith(".bias"):
                    param.zero_()
                else:
                    param.fill_(p.init_mult.norm)
            elif group == "embedding":
                nn.init.normal_(param, 0.0, EMBED_STD * p.init_mult.embedding, generator=generator)
            elif group == "hidden":
                fan_in = param.shape[1]
                nn.init.normal_(param, 0.0, p.init_mult.hidden / math.sqrt(fan_in), generator=generator)
            else:  # readout (untied only: tied weights are listed once, as wte)
                if self.mup and p.zero_init_readout:
                    param.zero_()
                else:
                    # muP keeps the base width's std (the 1/w multiplier does the scaling);
                    # SP scales with the actual fan-in.
                    fan_in = p.base_width if self.mup else cfg.d_model
                    nn.init.normal_(param, 0.0, p.init_mult.readout / math.sqrt(fan_in), generator=generator)
        if self.mup and p.zero_init_query:
            # TP V, Sec. 4 / App. D.2: a zero query makes attention uniform at init, which keeps
            # the attention logits' update from depending on width.
            for block in self.blocks:
                block.attn.qkv.weight[: cfg.d_model].zero_()

    # -- optimizer groups ------------------------------------------------------------------------
    def lr_scale(self, group: ParamGroupName, optimizer: Literal["adamw", "sgd"]) -> float:
        """Factor on the base LR for one group: muP's width rule times lr_mult * w**lr_width_exponent."""
        p = self.cfg.parameterization
        scale = getattr(p.lr_mult, group) * self.w ** getattr(p.lr_width_exponent, group)
        if self.mup:
            if optimizer == "adamw":
                # Adam's update is scale-free in the gradient, so hidden matrices need eta / fan_in
                # (TP V, Table 3); vector-like groups keep eta.
                scale *= 1.0 / self.w if group == "hidden" else 1.0
            else:
                # SGD: vector-like groups (one width-sized dim) get eta * w, hidden matrices eta
                # (TP V, Table 3; the `mup` package's MuSGD).
                scale *= 1.0 if group == "hidden" else self.w
        return scale

    def param_groups(
        self, *, lr: float, weight_decay: float, optimizer: Literal["adamw", "sgd"]
    ) -> list[dict]:
        """Optimizer param groups, one per (group, decayed) pair, each with `name` and `lr_scale`.

        Weight decay applies to matrices (embedding, hidden, readout), not to norms and biases,
        as in nanoGPT. The trainer sets `lr = base_lr(step) * lr_scale` on every step.
        """
        buckets: dict[tuple[ParamGroupName, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            group = self.param_group_of(name)
            buckets.setdefault((group, group != "norm"), []).append(param)
        out = []
        for (group, decay), params in buckets.items():
            scale = self.lr_scale(group, optimizer)
            out.append({
                "params": params, "name": group, "lr_scale": scale, "lr": lr * scale,
                "weight_decay": weight_decay if decay else 0.0,
            })
        return out

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        B, T = idx.shape
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe.weight[:T]  # (T, C) broadcast over the batch
        if self.emb_mult != 1.0:
            x = x * self.emb_mult
        self._record("embed", x)
        rotary = (self.rope_cos, self.rope_sin) if self.rope_cos is not None else None
        for i, block in enumerate(self.blocks):
            a = block.attn(block.ln_1(x), rotary)
            self._record(f"block{i}.attn", a)
            x = x + a
            m = block.mlp(block.ln_2(x))
            self._record(f"block{i}.mlp", m)
            x = x + m
            self._record(f"block{i}.out", x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if self.out_mult != 1.0:
            logits = logits * self.out_mult
        self._record("logits", logits)
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))

    # -- coordinate checks -----------------------------------------------------------------------
    def _record(self, name: str, x: torch.Tensor) -> None:
        if self._trace is not None:
            self._trace[name] = x.detach().abs().float().mean()

    @contextmanager
    def trace_activations(self) -> Iterator[dict[str, float]]:
        """Record mean |activation| of each layer's output during forwards in this block.

        Yields a dict filled when the block exits, with keys `embed`, `block{i}.attn`,
        `block{i}.mlp`, `block{i}.out` (the residual stream) and `logits`; a later forward
        overwrites an earlier one. Used for muP coordinate checks (TP V, Fig. 5).
        """
        out: dict[str, float] = {}
        self._trace = {}
        try:
            yield out
            out.update({k: float(v) for k, v in self._trace.items()})  # one sync, at the end
        finally:
            self._trace = None


def load_trained_model(config: ResolvedTransformer, state_path: Path, run_id: str) -> Transformer:
    """The model of a run's saved state (`state.pt`, written by the trainer: the state dict under
    "model", the owning run under "run_id"), on the CPU in eval mode. Raises WorkspaceError."""
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WorkspaceError(f"{state_path}: missing (the run saved no model). Run it again with --force.") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WorkspaceError(f"{state_path}: unreadable saved state ({exc}). Run it again with --force.") from None
    if state.get("run_id") != run_id:
        raise WorkspaceError(f"{state_path}: saved state of run {state.get('run_id')!r}, not {run_id!r}. "
                             "Run it again with --force.")
    model = Transformer(config)
    model.load_state_dict(state["model"])
    return model.eval()
