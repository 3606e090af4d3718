"""The transformer: its parameter count is the counting formula's, and SP/muP follow the table in docs/science.md#mup."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from scaling_db.spec.counting import count_params
from scaling_db.spec.manifest import ResolvedTransformer
from scaling_db.training.model import PARAM_GROUPS, Transformer


def make_cfg(**kw) -> ResolvedTransformer:
    d = kw.pop("d_model", 32)
    base = dict(kind="transformer", n_layers=kw.pop("n_layers", 2), d_model=d, n_heads=kw.pop("n_heads", max(1, d // 8)),
                d_ff=kw.pop("d_ff", 4 * d), vocab_size=kw.pop("vocab_size", 40), context=kw.pop("context", 12))
    return ResolvedTransformer(**base, **kw)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


GRID = list(itertools.product([1, 3], [16, 48], [(4, 64), (2, 40)], ["learned", "rotary"], [False, True], [False, True]))


@pytest.mark.parametrize("n_layers,d_model,ff_vocab,positions,tie,bias", GRID)
def test_param_count_equals_formula(n_layers, d_model, ff_vocab, positions, tie, bias):
    mult, vocab = ff_vocab
    cfg = make_cfg(n_layers=n_layers, d_model=d_model, d_ff=mult * d_model + 3, vocab_size=vocab,
                   positions=positions, tie_embeddings=tie, bias=bias, n_heads=d_model // 8)
    model = Transformer(cfg)
    counts = count_params(cfg.shape())
    assert n_params(model) == counts.n_params
    embed = sum(p.numel() for name, p in model.named_parameters() if name.startswith(("wte.", "wpe.", "lm_head.")))
    assert embed == counts.n_params_embed


def test_gpt2_small_has_124m_parameters():
    cfg = make_cfg(n_layers=12, d_model=768, n_heads=12, d_ff=3072, vocab_size=50257, context=1024,
                   bias=True, tie_embeddings=True)
    with torch.device("meta"):  # shapes only: no 500 MB allocation
        model = Transformer(cfg)
    assert n_params(model) == count_params(cfg.shape()).n_params == 124_439_808


def test_forward_shapes_and_loss_at_zero_readout():
    cfg = make_cfg(parameterization={"kind": "mup"})
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, cfg.context))
    assert model(idx).shape == (3, cfg.context, cfg.vocab_size)
    # muP's zero-initialised readout gives uniform predictions: loss = log V exactly.
    assert model(idx, idx).item() == pytest.approx(math.log(cfg.vocab_size), abs=1e-6)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_attention_is_causal(positions):
    model = Transformer(make_cfg(positions=positions), generator=torch.Generator().manual_seed(0))
    idx = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 40
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_rotary_positions_matter():
    model = Transformer(make_cfg(positions="rotary"), generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([[1, 2, 3, 4, 5, 6]])
    shifted = torch.tensor([[9, 1, 2, 3, 4, 5]])
    # Rotary attention is relative: with a different prefix token, position 5 still differs;
    # what we check is that a permutation of the context changes the output (positions are seen).
    permuted = torch.tensor([[2, 1, 3, 4, 5, 6]])
    assert not torch.allclose(model(idx)[0, -1], model(permuted)[0, -1])
    assert model(shifted).shape == (1, 6, 40)


def test_tied_readout_shares_the_embedding():
    model = Transformer(make_cfg(tie_embeddings=True))
    assert model.lm_head.weight is model.wte.weight


def test_init_is_deterministic_given_the_generator():
    cfg = make_cfg()
    a = Transformer(cfg, generator=torch.Generator().manual_seed(3))
    b = Transformer(cfg, generator=torch.Generator().manual_seed(3))
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na


def test_param_groups_cover_every_parameter_once():
    model = Transformer(make_cfg(bias=True))
    groups = model.param_groups(lr=1e-3, weight_decay=0.1, optimizer="adamw")
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    assert {g["name"] for g in groups} == set(PARAM_GROUPS)
    for g in groups:  # weight decay on matrices only
        assert (g["weight_decay"] > 0) == (g["name"] != "norm")


def test_mup_learning_rates_follow_the_table():
    # w = 128 / 32 = 4. Adam: hidden eta / w, others eta (TP V, Table 3).
    model = Transformer(make_cfg(d_model=128, parameterization={"kind": "mup", "base_width": 32}))
    assert model.lr_scale("hidden", "adamw") == pytest.approx(1 / 4)
    for group in ("embedding", "readout", "norm"):
        assert model.lr_scale(group, "adamw") == 1.0
    # SGD: vector-like groups eta * w, hidden eta.
    assert model.lr_scale("hidden", "sgd") == 1.0
    assert model.lr_scale("embedding", "sgd") == pytest.approx(4.0)


def test_sp_with_embedding_lr_times_width_is_one_field():
    cfg = make_cfg(d_model=128, parameterization={
        "kind": "sp", "base_width": 32, "lr_width_exponent": {"embedding": 1}, "lr_mult": {"readout": 0.5}})
    model = Transformer(cfg)
    assert model.lr_scale("embedding", "adamw") == pytest.approx(4.0)
    assert model.lr_scale("hidden", "adamw") == 1.0
    assert model.lr_scale("readout", "adamw") == 0.5


def test_mup_multipliers_and_attention_scale():
    cfg = make_cfg(d_model=64, parameterization={"kind": "mup", "base_width": 16, "alpha_out": 2.0, "alpha_emb": 3.0})
    model = Transformer(cfg)
    d_head = 64 // cfg.n_heads
    assert model.blocks[0].attn.scale == pytest.approx(1 / d_head)
    assert model.out_mult == pytest.approx(2.0 / 4) and model.emb_mult == 3.0
    sp = Transformer(make_cfg(d_model=64))
    assert sp.blocks[0].attn.scale == pytest.approx(1 / math.sqrt(d_head))
    assert sp.out_mult == 1.0 and sp.emb_mult == 1.0


def test_mup_zero_inits_and_init_scales():
    cfg = make_cfg(d_model=64, parameterization={"kind": "mup", "base_width": 16})
    model = Transformer(cfg, generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(model.lm_head.weight) == 0
    assert torch.count_nonzero(model.blocks[0].attn.qkv.weight[:64]) == 0  # the query rows
    k = model.blocks[0].attn.qkv.weight[64:]
    assert k.std().item() == pytest.approx(1 / math.sqrt(64), rel=0.1)  # 1/sqrt(fan_in)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(1 / math.sqrt(256), rel=0.1)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.15)  # constant in width


def test_mup_equals_sp_at_base_width_except_attention():
    # With the zero-inits off and multipliers 1, muP at w = 1 has SP's weights and LRs.
    p = {"base_width": 32}
    sp = Transformer(make_cfg(parameterization={"kind": "sp", **p}), generator=torch.Generator().manual_seed(0))
    mup = Transformer(make_cfg(parameterization={"kind": "mup", "zero_init_query": False, "zero_init_readout": False, **p}),
                      generator=torch.Generator().manual_seed(0))
    for (name, a), (_, b) in zip(sp.named_parameters(), mup.named_parameters()):
        assert torch.equal(a, b), name
    for g in PARAM_GROUPS:
        assert sp.lr_scale(g, "adamw") == mup.lr_scale(g, "adamw") == 1.0


def test_init_mult_scales_each_group():
    cfg = make_cfg(d_model=64, parameterization={"kind": "sp", "init_mult": {"hidden": 2.0, "norm": 0.5, "embedding": 3.0}})
    model = Transformer(cfg, generator=torch.Generator().manual_seed(0))
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(2 / math.sqrt(64), rel=0.1)
    assert torch.all(model.ln_f.weight == 0.5)
    assert model.wte.weight.std().item() == pytest.approx(0.06, rel=0.15)


def test_trace_activations_records_every_layer():
    model = Transformer(make_cfg(n_layers=2))
    with model.trace_activations() as acts:
        model(torch.randint(0, 40, (2, 12)))
    assert set(acts) == {"embed", "logits"} | {f"block{i}.{k}" for i in range(2) for k in ("attn", "mlp", "out")}
    assert all(v > 0 for v in acts.values())
    model(torch.randint(0, 40, (2, 12)))  # no tracing outside the block
    assert model._trace is None
