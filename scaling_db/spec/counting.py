"""Parameter and FLOP counts of a transformer, computed from its config alone.

Conventions (each FLOP figure is named by the convention it follows):
- `n_params`: every trainable parameter of `scaling_db.training.model.Transformer`.
- `n_params_embed`: the vocabulary- and position-sized matrices: token embedding, learned
  position embedding and, when untied, the readout (Kaplan et al. 2020, Table 1, count
  neither embedding nor de-embedding in N). `n_params_nonembed = n_params - n_params_embed`.
- `flops_6n_nonembed`: 6 * n_params_nonembed per token (Kaplan et al. 2020, Sec. 2.1).
- `flops_6n`: 6 * n_params per token.
- `flops_exact`: forward FLOPs per token counted as in Hoffmann et al. 2022, Appendix F
  (embeddings, QKV, attention logits, softmax, attention over values, output projection,
  MLP, final logits), times 3 for forward + backward. Like Appendix F it ignores the causal
  mask (counts the full context) and norms and nonlinearities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FlopConvention = Literal["6n_nonembed", "6n", "exact"]
FLOP_CONVENTIONS: tuple[FlopConvention, ...] = ("6n_nonembed", "6n", "exact")


@dataclass(frozen=True)
class TransformerShape:
    """The shape facts counting needs; built from a resolved model config and vocab size."""

    vocab_size: int
    context: int
    n_layers: int
    d_model: int
    n_heads: int
    d_ff: int
    positions: Literal["learned", "rotary"] = "learned"
    tie_embeddings: bool = False
    bias: bool = False

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class ParamCounts:
    n_params: int
    n_params_embed: int

    @property
    def n_params_nonembed(self) -> int:
        return self.n_params - self.n_params_embed


def count_params(shape: TransformerShape) -> ParamCounts:
    """Trainable parameters of the pre-norm transformer in `scaling_db.training.model`."""
    d, f, v = shape.d_model, shape.d_ff, shape.vocab_size
    b = 1 if shape.bias else 0
    norm = d * (1 + b)  # LayerNorm weight (+ bias)
    attn = 4 * d * d + 4 * d * b  # q, k, v, out projections
    mlp = 2 * d * f + (f + d) * b
    per_layer = 2 * norm + attn + mlp
    token_emb = v * d
    pos_emb = shape.context * d if shape.positions == "learned" else 0
    readout = 0 if shape.tie_embeddings else v * d + v * b
    total = token_emb + pos_emb + shape.n_layers * per_layer + norm + readout
    return ParamCounts(n_params=total, n_params_embed=token_emb + pos_emb + readout)


def forward_flops_per_token_exact(shape: TransformerShape) -> int:
    """Forward FLOPs per token, Hoffmann et al. 2022 App. F (a multiply-add is 2 FLOPs)."""
    d, f, v, t, h = shape.d_model, shape.d_ff, shape.vocab_size, shape.context, shape.n_heads
    kq = shape.d_head * h  # key_size * num_heads
    embeddings = 2 * v * d
    qkv = 2 * 3 * d * kq
    logits = 2 * t * kq  # query . key over the context
    softmax = 3 * h * t
    reduce = 2 * t * kq  # softmax-weighted sum of values
    project = 2 * kq * d
    dense = 2 * 2 * d * f
    final_logits = 2 * d * v
    per_layer = qkv + logits + softmax + reduce + project + dense
    return embeddings + shape.n_layers * per_layer + final_logits


def flops_per_token(shape: TransformerShape) -> dict[FlopConvention, int]:
    """Training FLOPs per token (forward + backward) under each convention."""
    counts = count_params(shape)
    return {
        "6n_nonembed": 6 * counts.n_params_nonembed,
        "6n": 6 * counts.n_params,
        "exact": 3 * forward_flops_per_token_exact(shape),
    }


def estimate_peak_memory_bytes(shape: TransformerShape, batch_size: int, bytes_per_value: int = 4) -> int:
    """A rough upper estimate of training memory: weights, grads, two Adam moments, activations.

    Activations follow Korthikanti et al. 2022 (Sec. 4.1): about 34*s*b*h + 5*a*s^2*b values
    per layer at 16 bits; at `bytes_per_value` we scale the byte count, plus the logits and
    their gradient (2*b*s*V values), which dominate for small models with large vocabularies.
    """
    counts = count_params(shape)
    s, b, h, a = shape.context, batch_size, shape.d_model, shape.n_heads
    state = 4 * counts.n_params * bytes_per_value
    per_layer = (34 * s * b * h + 5 * a * s * s * b) // 2 * bytes_per_value
    logits = 2 * b * s * shape.vocab_size * bytes_per_value
    return state + shape.n_layers * per_layer + logits
