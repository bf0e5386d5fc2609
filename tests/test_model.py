"""Tests for minigpt.model and minigpt.config: attention against a hand-written reference, causality,
padding, the KV cache, initialisation, training, GPT-2 import/export.

    python -m pytest tests/test_model.py -q
"""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT, GPTConfig, load_pretrained
from minigpt.config import MODEL_PRESETS, model_preset
from minigpt.model import config_from_hf, config_to_hf, save_pretrained

V = 97


def tiny(**kw):
    return model_preset("tiny", vocab_size=V, **kw)


def twin_models(**kw):
    """The same weights behind the fused (SDPA) and the explicit attention path."""
    fused = GPT(tiny(fused_attention=True, **kw)).eval()
    explicit = GPT(tiny(fused_attention=False, **kw)).eval()
    explicit.load_state_dict(fused.state_dict())
    return fused, explicit


@torch.no_grad()
def reference_attention(attn, x):
    """Causal self-attention by loops over batch, head and query, in float64: the textbook formula."""
    B, T, C = x.shape
    nh, hs = attn.n_head, C // attn.n_head
    W, b = attn.c_attn.weight.double(), attn.c_attn.bias.double()
    qkv = x.double() @ W.T + b                                   # (B, T, 3C)
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    y = torch.zeros(B, T, C, dtype=torch.float64)
    for bi in range(B):
        for h in range(nh):
            sl = slice(h * hs, (h + 1) * hs)
            for i in range(T):
                scores = [float(q[bi, i, sl] @ k[bi, j, sl]) / math.sqrt(hs) for j in range(i + 1)]
                m = max(scores)
                w = [math.exp(s - m) for s in scores]
                z = sum(w)
                y[bi, i, sl] = sum((wj / z) * v[bi, j, sl] for j, wj in enumerate(w))
    return y @ attn.c_proj.weight.double().T + attn.c_proj.bias.double()


# ---------------------------------------------------------------------------- config
def test_presets_and_config_validation():
    assert model_preset("tiny").n_layer == 2 and model_preset("tiny").n_embd == 32
    assert model_preset("small").block_size == 256 and model_preset("small").n_layer == 4
    assert model_preset("gpt2").vocab_size == 50257 and model_preset("gpt2").n_embd == 768
    assert model_preset("tiny", vocab_size=300).vocab_size == 300
    assert set(MODEL_PRESETS) >= {"tiny", "small", "gpt2"}
    with pytest.raises(ValueError):
        model_preset("huge")
    with pytest.raises(ValueError):
        GPTConfig(n_embd=30, n_head=4)


# ---------------------------------------------------------------------------- attention
@pytest.mark.parametrize("fused", [True, False])
def test_attention_matches_handwritten_reference(fused):
    torch.manual_seed(1)
    model = GPT(tiny(fused_attention=fused)).eval()
    attn = model.transformer.h[0].attn
    with torch.no_grad():  # non-trivial biases so every term is exercised
        attn.c_attn.bias.normal_(0, 0.5)
        attn.c_proj.bias.normal_(0, 0.5)
        attn.c_attn.weight.normal_(0, 0.3)
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        got = attn(x)
    torch.testing.assert_close(got.double(), reference_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_explicit_equals_sdpa_with_and_without_padding():
    fused, explicit = twin_models()
    idx = torch.randint(0, V, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :4] = 0
    mask[2, :11] = 0
    with torch.no_grad():
        for m in (None, mask):
            a, _ = fused(idx, attention_mask=m)
            b, _ = explicit(idx, attention_mask=m)
            assert torch.isfinite(a).all() and torch.isfinite(b).all()
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_causality_future_tokens_never_change_earlier_logits(fused):
    model = GPT(tiny(fused_attention=fused)).eval()
    idx = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        base, _ = model(idx)
        for t in (0, 5, 15):
            changed = idx.clone()
            changed[:, t] = (changed[:, t] + 1) % V
            out, _ = model(changed)
            torch.testing.assert_close(out[:, :t], base[:, :t], atol=0, rtol=0)  # bit-identical before t
            assert not torch.allclose(out[:, t], base[:, t])                      # and it did matter at t


# ---------------------------------------------------------------------------- padding, positions, cache
@pytest.mark.parametrize("fused", [True, False])
def test_left_padded_batch_matches_each_prompt_alone(fused):
    model = GPT(tiny(fused_attention=fused)).eval()
    prompts = [torch.randint(0, V, (n,)) for n in (9, 4, 1)]
    P = 9
    idx = torch.zeros(3, P, dtype=torch.long)
    mask = torch.zeros(3, P, dtype=torch.long)
    for i, p in enumerate(prompts):
        idx[i, P - len(p):] = p
        mask[i, P - len(p):] = 1
    with torch.no_grad():
        batch_logits, _ = model(idx, attention_mask=mask)
        batch_h = model.hidden_states(idx, attention_mask=mask)
        for i, p in enumerate(prompts):
            alone, _ = model(p[None])
            torch.testing.assert_close(batch_logits[i, P - len(p):], alone[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batch_h[i, P - len(p):], model.hidden_states(p[None])[0],
                                       atol=1e-5, rtol=1e-5)


def test_positions_default_from_mask_and_explicit_ids_agree():
    model = GPT(tiny()).eval()
    idx = torch.randint(0, V, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    pos = torch.tensor([[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]])
    with torch.no_grad():
        a, _ = model(idx, attention_mask=mask)
        b, _ = model(idx, attention_mask=mask, position_ids=pos)
        c, _ = model(idx, attention_mask=mask, position_ids=pos + 1)  # shifted positions must change things
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a[:, -1], c[:, -1])


@pytest.mark.parametrize("fused", [True, False])
def test_kv_cache_incremental_logits_equal_full_forward(fused):
    model = GPT(tiny(fused_attention=fused)).eval()
    idx = torch.randint(0, V, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, :5] = 0
    with torch.no_grad():
        full, _ = model(idx, attention_mask=mask)
        cache = model.make_kv_cache(2)
        pieces = [model(idx[:, :8], attention_mask=mask[:, :8], kv_cache=cache)[0]]
        for t in range(8, 20):  # then one token at a time, the mask always covering past + current
            pieces.append(model(idx[:, t:t + 1], attention_mask=mask[:, :t + 1], kv_cache=cache)[0])
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)


def test_too_long_sequence_is_refused():
    model = GPT(tiny())
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 65, dtype=torch.long))


# ---------------------------------------------------------------------------- init, loss, training
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_loss_at_init_is_about_log_vocab(preset):
    vocab = 1000
    model = GPT(model_preset(preset, vocab_size=vocab, n_layer=2)).eval()
    idx = torch.randint(0, vocab, (4, 64))
    targets = torch.randint(0, vocab, (4, 64))
    with torch.no_grad():
        _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(vocab)) < 0.15, loss.item()


def test_gpt2_init_scales_residual_projections():
    cfg = model_preset("tiny", vocab_size=V, n_layer=8, n_embd=64, n_head=4)
    model = GPT(cfg)
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert abs(proj.std().item() - 0.02 / math.sqrt(16)) < 0.001
    assert abs(fc.std().item() - 0.02) < 0.002
    assert abs(model.transformer.wte.weight.std().item() - 0.02) < 0.002
    assert model.lm_head.weight is model.transformer.wte.weight  # tied


def test_ignore_index_and_loss_matches_cross_entropy():
    model = GPT(tiny()).eval()
    idx = torch.randint(0, V, (2, 10))
    targets = torch.randint(0, V, (2, 10))
    targets[:, :4] = -1
    with torch.no_grad():
        logits, loss = model(idx, targets)
    keep = targets >= 0
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, expected)


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(tiny())
    data = torch.randint(0, V, (2, 17))
    x, y = data[:, :-1], data[:, 1:]
    opt = model.configure_optimizers(weight_decay=0.0, learning_rate=1e-2, betas=(0.9, 0.95))
    for _ in range(50):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, loss.item()  # from ln(97) = 4.57


def test_dropout_only_in_train_mode():
    model = GPT(tiny(dropout=0.5))
    idx = torch.randint(0, V, (2, 10))
    model.train()
    a, _ = model(idx)
    b, _ = model(idx)
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        c, _ = model(idx)
        d, _ = model(idx)
    torch.testing.assert_close(c, d, atol=0, rtol=0)


def test_bias_false_has_no_biases():
    model = GPT(tiny(bias=False))
    assert all(not n.endswith(".bias") for n, _ in model.named_parameters())
    model(torch.randint(0, V, (1, 5)))


# ---------------------------------------------------------------------------- accounting
def test_num_params_flops_and_optimizer_groups():
    cfg = tiny()
    model = GPT(cfg)
    C, L, T = cfg.n_embd, cfg.n_layer, cfg.block_size
    # per block: ln_1 (2C) + c_attn (3C^2 + 3C) + c_proj (C^2 + C) + ln_2 (2C) + c_fc (4C^2 + 4C) + proj (4C^2 + C)
    per_block = 12 * C * C + 13 * C
    total = V * C + T * C + L * per_block + 2 * C
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - T * C
    assert model.flops_per_token() == 6 * (total - T * C) + 12 * L * C * T
    assert model.estimate_mfu(fwdbwd_per_iter=2, dt=1.0, peak_flops=1e9) == pytest.approx(
        2 * T * model.flops_per_token() / 1e9)

    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.95))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == total  # tied weight once


# ---------------------------------------------------------------------------- GPT-2 import/export
def test_hf_round_trip_is_exact_and_uses_hf_layout():
    model = GPT(tiny())
    sd = model.to_hf_gpt2()
    C = model.config.n_embd
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (C, 3 * C)  # Conv1D: (in, out)
    assert sd["transformer.h.1.mlp.c_proj.weight"].shape == (4 * C, C)
    assert torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"])
    back = GPT.from_hf_gpt2(sd, model.config)
    for (k1, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k1 == k2 and torch.equal(a, b), k1
    assert back.lm_head.weight is back.transformer.wte.weight


def test_from_hf_accepts_gpt2model_keys_and_mask_buffers_and_rejects_bad_input():
    model = GPT(tiny()).eval()
    sd = model.to_hf_gpt2()
    bare = {k[len("transformer."):]: v for k, v in sd.items() if k.startswith("transformer.")}
    for i in range(model.config.n_layer):  # old HF checkpoints carry these causal-mask buffers
        bare[f"h.{i}.attn.bias"] = torch.ones(1, 1, 64, 64)
        bare[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    idx = torch.randint(0, V, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(GPT.from_hf_gpt2(bare, model.config).eval()(idx)[0], model(idx)[0])
    with pytest.raises(ValueError, match="shape"):
        GPT.from_hf_gpt2(sd, replace(model.config, n_embd=64))
    with pytest.raises(ValueError, match="missing"):
        GPT.from_hf_gpt2({k: v for k, v in sd.items() if "ln_f" not in k}, model.config)
    with pytest.raises(ValueError, match="unexpected"):
        GPT.from_hf_gpt2({**sd, "transformer.extra.weight": torch.zeros(1)}, model.config)
    untied = dict(sd, **{"lm_head.weight": torch.zeros_like(sd["lm_head.weight"])})
    with pytest.raises(ValueError, match="ties"):
        GPT.from_hf_gpt2(untied, model.config)


def test_load_pretrained_reads_a_local_hf_directory(tmp_path):
    model = GPT(tiny()).eval()
    save_pretrained(model, tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "pytorch_model.bin").exists()
    loaded = load_pretrained(str(tmp_path)).eval()
    assert loaded.config.n_layer == 2 and loaded.config.vocab_size == V
    idx = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx)[0], model(idx)[0], atol=0, rtol=0)


def test_load_pretrained_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    model = GPT(tiny()).eval()
    save_pretrained(model, tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    sd = {k: v.contiguous() for k, v in model.to_hf_gpt2().items() if k != "lm_head.weight"}
    st.save_file(sd, str(tmp_path / "model.safetensors"))
    idx = torch.randint(0, V, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained(str(tmp_path)).eval()(idx)[0], model(idx)[0])


class _Evil:  # a pickled object that a weights-only load must refuse to construct
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_load_pretrained_never_unpickles_arbitrary_objects(tmp_path):
    model = GPT(tiny())
    save_pretrained(model, tmp_path)
    torch.save({"payload": _Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported"):
        load_pretrained(str(tmp_path))


def test_config_from_hf_round_trip_and_refusals():
    cfg = tiny()
    back = config_from_hf(config_to_hf(cfg))
    assert (back.vocab_size, back.block_size, back.n_layer, back.n_head, back.n_embd) == (
        cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd)
    with pytest.raises(ValueError, match="activation"):
        config_from_hf({**config_to_hf(cfg), "activation_function": "relu"})


def test_logits_match_transformers_gpt2():
    """Against Hugging Face's own GPT2LMHeadModel (randomly initialised, nothing downloaded)."""
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():  # give the LayerNorms non-trivial parameters too
        for n, p in hf.named_parameters():
            if ".ln_" in n:
                p.normal_(1.0 if n.endswith("weight") else 0.0, 0.1)
    ours = GPT.from_hf_gpt2(hf.state_dict(), config_from_hf(hf_cfg.to_dict())).eval()
    idx = torch.randint(0, V, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, :5] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = hf(idx).logits
        torch.testing.assert_close(ours(idx)[0], ref, atol=1e-4, rtol=1e-4)
        ref_pad = hf(idx, attention_mask=mask, position_ids=pos).logits
        torch.testing.assert_close(ours(idx, attention_mask=mask)[0][1, 5:], ref_pad[1, 5:], atol=1e-4, rtol=1e-4)
    # and our export loads into their model
    hf2 = transformers.GPT2LMHeadModel(hf_cfg).eval()
    missing, unexpected = hf2.load_state_dict(ours.to_hf_gpt2(), strict=False)
    assert not unexpected and all(k.endswith(("attn.bias", "attn.masked_bias")) for k in missing)
    with torch.no_grad():
        torch.testing.assert_close(hf2(idx).logits, ref, atol=1e-6, rtol=1e-6)


def test_bench_model_measures_in_the_training_precision(capsys):
    """python -m bench.model --dtype=bfloat16: the peak and the training steps in bf16 (the stages' autocast),
    on a model small enough for a second."""
    from bench import model as bench_model
    bench_model.main(["--steps=1", "--no_tokenizer", "--dtype=bfloat16", "--n_layer=1", "--n_embd=32", "--n_head=2",
                      "--block_size=32", "--vocab_size=64", "--new_tokens=4", "--batch_size=2", "--device=cpu"])
    out = capsys.readouterr().out
    assert "bfloat16 matmul peak" in out and "MFU" in out and "greedy tokens identical: True" in out, out
