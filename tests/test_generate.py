"""Tests for minigpt.generate: KV cache == recompute, left padding, log-probs == forward recompute,
top-k/top-p sets, stop tokens, seeding, temperature.

    python -m pytest tests/test_generate.py -q
"""

import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT
from minigpt.config import model_preset
from minigpt.generate import filter_logits, generate, left_pad

V = 61


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT(model_preset("tiny", vocab_size=V)).eval()
    with torch.no_grad():  # sharper-than-init logits so sampling is not uniform noise
        m.transformer.wte.weight.mul_(8.0)
    return m


PROMPTS = [[3, 14, 15, 9, 26, 5], [7], [2, 7, 18, 28]]


def recompute_logprobs(model, gen, temperature):
    """The training-side computation: one forward pass over the generated sequences."""
    with torch.no_grad():
        logits, _ = model(gen.sequences, attention_mask=gen.attention_mask)
    logits = logits[:, gen.prompt_length - 1:-1].float() / (temperature or 1.0)   # predicts response
    lp = F.log_softmax(logits, -1).gather(-1, gen.response[..., None]).squeeze(-1)
    return lp * gen.response_mask


def test_left_pad_hand_example():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_filter_logits_hand_example():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.isinf(filter_logits(z, top_k=2)[0, 2:]).all() and torch.isfinite(filter_logits(z, top_k=2)[0, :2]).all()
    p = torch.tensor([[0.5, 0.3, 0.2]]).log()
    kept = torch.isfinite(filter_logits(p, top_p=0.6))[0].tolist()
    assert kept == [True, True, False]      # 0.5 < 0.6, 0.5 + 0.3 >= 0.6
    assert torch.isfinite(filter_logits(p, top_p=0.4))[0].tolist() == [True, False, False]  # top token always kept
    assert torch.isfinite(filter_logits(p, top_p=1.0)).all()


@pytest.mark.parametrize("fused", [True, False])
def test_kv_cache_greedy_equals_recompute(model, fused):
    for blk in model.transformer.h:
        blk.attn.fused = fused
    try:
        a = generate(model, PROMPTS, 40, temperature=0, use_cache=True, return_logprobs=True)
        b = generate(model, PROMPTS, 40, temperature=0, use_cache=False, return_logprobs=True)
    finally:
        for blk in model.transformer.h:
            blk.attn.fused = True
    assert torch.equal(a.sequences, b.sequences)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
    # GPT.generate (the docs/DESIGN.md API) gives the same tokens either way too
    idx = torch.tensor([PROMPTS[0]])
    assert torch.equal(model.generate(idx, 30, temperature=0, use_cache=True),
                       model.generate(idx, 30, temperature=0, use_cache=False))


def test_left_padded_batch_gives_each_prompt_its_own_tokens(model):
    batch = generate(model, PROMPTS, 20, temperature=0, return_logprobs=True)
    for i, p in enumerate(PROMPTS):
        alone = generate(model, [p], 20, temperature=0, return_logprobs=True)
        assert torch.equal(batch.response[i], alone.response[0])
        torch.testing.assert_close(batch.logprobs[i], alone.logprobs[0], atol=1e-5, rtol=0)
    assert batch.prompt_length == 6
    assert batch.attention_mask[1].tolist()[:6] == [0, 0, 0, 0, 0, 1]
    # an already left-padded tensor with its mask is the same request
    ids, mask = left_pad(PROMPTS, pad_token_id=0)
    again = generate(model, ids, 20, temperature=0, attention_mask=mask)
    assert torch.equal(again.sequences, batch.sequences)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, None, None), (1.3, 5, 0.9), (0.0, None, None)])
def test_logprobs_equal_forward_recompute(model, use_cache, temperature, top_k, top_p):
    g = torch.Generator().manual_seed(0)
    gen = generate(model, PROMPTS, 24, temperature=temperature, top_k=top_k, top_p=top_p,
                   eos_token_id=[11, 12], use_cache=use_cache, generator=g, return_logprobs=True)
    torch.testing.assert_close(gen.logprobs, recompute_logprobs(model, gen, temperature), atol=1e-5, rtol=0)
    assert (gen.logprobs[gen.response_mask == 0] == 0).all()
    assert (gen.logprobs <= 0).all()


def test_top_k_and_top_p_never_sample_outside_the_allowed_set(model):
    g = torch.Generator().manual_seed(1)
    prompts = PROMPTS * 8
    for top_k, top_p in [(3, None), (None, 0.5), (4, 0.6)]:
        gen = generate(model, prompts, 16, temperature=1.5, top_k=top_k, top_p=top_p, generator=g)
        with torch.no_grad():
            logits, _ = model(gen.sequences, attention_mask=gen.attention_mask)
        logits = logits[:, gen.prompt_length - 1:-1] / 1.5                       # (B, N, V)
        # the allowed set, computed independently: top-k by rank, then the smallest nucleus of mass >= p
        probs = F.softmax(logits, -1)
        order = probs.argsort(-1, descending=True)
        rank = order.argsort(-1)                                                  # rank of each token
        allowed = torch.ones_like(probs, dtype=torch.bool)
        if top_k is not None:
            allowed &= rank < top_k
        if top_p is not None:
            renorm = torch.where(allowed, probs, torch.zeros_like(probs))
            renorm = renorm / renorm.sum(-1, keepdim=True)
            sorted_p = renorm.gather(-1, order)
            n_keep = ((sorted_p.cumsum(-1) - sorted_p) < top_p).sum(-1, keepdim=True)   # (B, N, 1)
            allowed &= rank < n_keep
        chosen_ok = allowed.gather(-1, gen.response[..., None]).squeeze(-1)
        assert chosen_ok.all(), (top_k, top_p)
        if top_k == 3:  # and the filter is not vacuous: more than one token did get sampled per step
            assert len(set(gen.response[:, 0].tolist())) > 1


def test_eos_stops_each_sequence_independently(model):
    free = generate(model, PROMPTS, 12, temperature=0)
    # pick a stop token that the rows first emit at different steps (or never)
    def first_index(row, tok):
        hits = (row == tok).nonzero()
        return int(hits[0]) if len(hits) else None
    eos = next(t for t in free.response[0].tolist()
               if len({first_index(r, t) for r in free.response}) > 1)
    gen = generate(model, PROMPTS, 12, temperature=0, eos_token_id=eos, pad_token_id=0)
    stops = [first_index(r, eos) for r in free.response]
    for i, s in enumerate(stops):
        if s is None:
            assert not gen.stopped[i] and torch.equal(gen.response[i], free.response[i])
            assert gen.response_mask[i].sum() == 12
        else:
            assert gen.stopped[i]
            assert torch.equal(gen.response[i, :s + 1], free.response[i, :s + 1])   # up to and incl. the stop
            assert (gen.response[i, s + 1:] == 0).all()                           # then padding
            assert gen.response_mask[i].tolist() == [1.0] * (s + 1) + [0.0] * (11 - s)
    assert torch.equal(gen.attention_mask[:, gen.prompt_length:], gen.response_mask.long())
    assert gen.sequences.shape == (3, 6 + 12)
    # GPT.generate on one prompt ends at its stop token
    s0 = stops[0]
    out = model.generate(torch.tensor([PROMPTS[0]]), 12, temperature=0, eos_token_id=eos)
    assert out.shape == (1, 6 + s0 + 1) and out[0, -1] == eos


def test_seeded_generator_is_reproducible(model):
    def run(seed):
        return generate(model, PROMPTS, 15, temperature=1.0, top_p=0.95,
                        generator=torch.Generator().manual_seed(seed)).sequences
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_temperature_sampling_follows_softmax(model):
    """First tokens of 4000 samples from one prompt match softmax(z / T) within sampling error."""
    T = 2.0
    prompt = torch.tensor([PROMPTS[0]]).repeat(4000, 1)
    gen = generate(model, prompt, 1, temperature=T, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = model(prompt[:1])
    expected = F.softmax(logits[0, -1] / T, -1)
    observed = torch.bincount(gen.response[:, 0], minlength=V).float() / 4000
    assert (observed - expected).abs().max() < 4 * (expected.max() / 4000) ** 0.5 + 1e-3


def test_gpt_generate_returns_prompt_plus_new_tokens_and_restores_mode(model):
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    model.train()
    out = model.generate(idx, 7, temperature=0.8, top_k=10)
    assert model.training
    model.eval()
    assert out.shape == (2, 10) and torch.equal(out[:, :3], idx)


def test_longer_than_block_size_falls_back_to_cropped_recompute(model):
    prompt = [[i % V for i in range(60)]]
    gen = generate(model, prompt, 10, temperature=0, use_cache=True)   # 60 + 10 > block_size 64
    assert gen.sequences.shape == (1, 70)
    with pytest.raises(ValueError):
        generate(model, [[]], 3)
