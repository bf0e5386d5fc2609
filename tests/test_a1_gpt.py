"""Graded tests of assignment 1 (the GPT and its tokenizer): exercises/a1_gpt.md.

    python tools/grade.py --assignment a1
    python -m pytest tests/test_a1_gpt.py -k attention

The block and GPT tests replace the sublayers they build on by fixed stand-ins (tests/snapshot_cases.py
`standins`), so each exercise is graded on its own code.
"""

import math
import warnings

import pytest
import torch

from minigpt.model import KVCache
from tests import adapters
from tests.grading import case, expect, expect_close, expect_on_inputs_device, on_meta
from tests.snapshot_cases import CALLS, standins


# ---------------------------------------------------------------------------------------------------- §1


@pytest.mark.exercise("a1.count_pairs")
def test_count_pairs_example_and_stored_counts():
    got = adapters.run_count_pairs([1, 2, 3, 1, 2])
    expect(dict(got) == {(1, 2): 2, (2, 3): 1, (3, 1): 1},
           f"count_pairs([1, 2, 3, 1, 2]) gave {dict(got)}; expected {{(1, 2): 2, (2, 3): 1, (3, 1): 1}} "
           "(every ADJACENT pair, overlapping)", "a1.count_pairs")
    inputs, expected = case("a1", "count_pairs")
    got, want = sorted(adapters.run_count_pairs(**inputs).items()), [tuple(x) for x in expected]
    if got != want:
        diff = next((a, b) for a, b in zip(got + [None] * len(want), want + [None] * len(got)) if a != b)
        expect(False, f"pair counts of a 40-token sequence differ from the reference: first difference "
               f"(got, expected) = {diff}", "a1.count_pairs")


@pytest.mark.exercise("a1.count_pairs")
def test_count_pairs_adds_weight_into_an_existing_counter():
    counts = adapters.run_count_pairs([5, 6], weight=3)
    counts = adapters.run_count_pairs([5, 6, 5], counts, weight=2)
    expect(dict(counts) == {(5, 6): 5, (6, 5): 2}, f"counting [5, 6] with weight 3, then [5, 6, 5] with weight 2 "
           f"into the same Counter gave {dict(counts)}; expected {{(5, 6): 5, (6, 5): 2}}", "a1.count_pairs")
    expect(dict(adapters.run_count_pairs([7])) == {}, "a single id has no pair", "a1.count_pairs")


@pytest.mark.exercise("a1.merge_pair")
def test_merge_pair_left_to_right_without_overlap():
    got = adapters.run_merge_pair([97, 97, 97, 98], (97, 97), 256)
    expect(got == [256, 97, 98], f"merging (97, 97) in [97, 97, 97, 98] gave {got}; expected [256, 97, 98]: "
           "scan left to right and skip both ids of a merged pair", "a1.merge_pair")
    inputs, expected = case("a1", "merge_pair")
    got = adapters.run_merge_pair(**inputs)
    expect(got == list(expected), f"merge_pair on a longer sequence: got {got[:12]}..., expected "
           f"{list(expected)[:12]}...", "a1.merge_pair")
    expect(adapters.run_merge_pair([1, 2], (2, 1), 9) == [1, 2], "a pair in the wrong order is not a match",
           "a1.merge_pair")


# ---------------------------------------------------------------------------------------------------- §2


@pytest.mark.exercise("a1.learn_merges")
def test_learn_merges_textbook_example():
    got = adapters.run_learn_merges("aaabdaaabac", 3)
    expect(got == [(97, 97), (97, 98), (256, 257)],
           f'learn_merges("aaabdaaabac", 3) gave {got}; expected [(97, 97), (97, 98), (256, 257)]: aa is most '
           "frequent; then ab ties with (256, a) and the tie goes to the pair with the smaller ids", "a1.learn_merges")


@pytest.mark.exercise("a1.learn_merges")
def test_learn_merges_stops_with_a_warning_when_pairs_run_out():
    with warnings.catch_warnings(record=True) as caught:  # (not pytest.warns: it would hide a NotImplementedError)
        warnings.simplefilter("always")
        got = adapters.run_learn_merges("ab ab", 10)
    expect(any("ran out of pairs" in str(w.message) for w in caught), "when no pair is left, warn (warnings.warn) "
           "that the text ran out of pairs", "a1.learn_merges")
    expect(got == [(97, 98), (32, 256)], f'learn_merges("ab ab", 10) gave {got}; expected [(97, 98), (32, 256)] '
           "(ab, then \" ab\"; then no pair is left: warn and return the merges so far)", "a1.learn_merges")


@pytest.mark.exercise("a1.learn_merges")
def test_learn_merges_stored_merges():
    inputs, expected = case("a1", "learn_merges")
    got = adapters.run_learn_merges(**inputs)
    first_bad = next((i for i, (a, b) in enumerate(zip(got, expected)) if tuple(a) != tuple(b)), None)
    expect(len(got) == len(expected) and first_bad is None,
           f"{len(got)} merges (expected {len(expected)}); first difference at merge {first_bad}: got "
           f"{got[first_bad] if first_bad is not None else None}, expected "
           f"{tuple(expected[first_bad]) if first_bad is not None else None}. Count pairs within pre-tokens only "
           "(split_pretokens), never across them", "a1.learn_merges")


# ---------------------------------------------------------------------------------------------------- §3


@pytest.mark.exercise("a1.bpe_encode")
def test_bpe_encode_applies_the_earliest_merge_first():
    merges = [(97, 97), (97, 98), (256, 257)]                    # aa -> 256, ab -> 257, aaab -> 258
    got = adapters.run_bpe_encode(merges, "aaab")
    expect(got == [258], f'encoding "aaab" with merges aa, ab, (aa)(ab) gave {got}; expected [258]: '
           "[a a a b] -> [256 a b] -> [256 257] -> [258]", "a1.bpe_encode")
    got = adapters.run_bpe_encode([(98, 99), (97, 98)], "abc")
    expect(got == [97, 256], f'with merges bc (rank 0) before ab (rank 1), "abc" must become [a, bc] = [97, 256], '
           f"got {got}: merge the pair with the LOWEST rank first, wherever it is", "a1.bpe_encode")


@pytest.mark.exercise("a1.bpe_encode")
def test_bpe_encode_stored_ids():
    inputs, expected = case("a1", "bpe_encode")
    got = adapters.run_bpe_encode(**inputs)
    expect(got == list(expected), f"ids of {inputs['text']!r}: got {got}, expected {list(expected)}",
           "a1.bpe_encode")


# ---------------------------------------------------------------------------------------------------- §4


@pytest.mark.exercise("a1.attention")
def test_attention_stored_output():
    inputs, expected = case("a1", "attention/causal")
    expect_close(adapters.run_attention(**inputs), expected, "attention output", "a1.attention", atol=1e-5,
                 dims="b, t, c", hint="softmax(Q K^T / sqrt(head size) with -inf above the diagonal) V, per head")


@pytest.mark.exercise("a1.attention")
def test_attention_never_looks_ahead():
    inputs, _ = case("a1", "attention/causal")
    y = adapters.run_attention(**inputs)
    x2 = inputs["x"].clone()
    x2[:, 3:] += 10.0                                             # change only the future of positions 0..2
    y2 = adapters.run_attention(inputs["config"], inputs["state"], x2)
    changed = (y2[:, :3] - y[:, :3]).abs().max().item()
    expect(changed < 1e-5, f"changing tokens 3.. changed the outputs of positions 0..2 by {changed:.3g}: "
           "a position may attend only to itself and earlier positions (the causal mask)", "a1.attention")


@pytest.mark.exercise("a1.attention")
def test_attention_keeps_to_the_inputs_device():
    inputs, _ = case("a1", "attention/causal")
    expect_on_inputs_device(lambda: adapters.run_attention(inputs["config"], inputs["state"], on_meta(inputs["x"])),
                            "attention output", "a1.attention")


@pytest.mark.exercise("a1.attention")
def test_attention_with_an_additive_mask():
    inputs, expected = case("a1", "attention/padded")
    expect_close(adapters.run_attention(**inputs), expected, "attention output with a padding mask", "a1.attention",
                 atol=1e-5, dims="b, t, c", hint="when attn_mask is given, ADD it to the scaled scores (0 where "
                                                 "allowed, -inf where not) instead of building the causal mask")


# ---------------------------------------------------------------------------------------------------- §5


@pytest.mark.exercise("a1.mlp")
def test_mlp_stored_output():
    inputs, expected = case("a1", "mlp")
    expect_close(adapters.run_mlp(**inputs), expected, "MLP output", "a1.mlp", atol=1e-5, dims="b, t, c",
                 hint="c_proj(gelu(c_fc(x))) with the tanh-approximated GELU, then dropout")


@pytest.mark.exercise("a1.block")
def test_block_is_pre_layernorm_residual():
    inputs, expected = case("a1", "block")
    with standins("attention", "mlp"):
        got = adapters.run_block(**inputs)
    expect_close(got, expected, "block output (with stand-in attention and MLP)", "a1.block", atol=1e-5,
                 dims="b, t, c", hint="x = x + attn(ln_1(x)); then x = x + mlp(ln_2(x)): normalise the INPUT of "
                                      "each sublayer and add its output to the residual stream")
    from minigpt.config import GPTConfig
    from minigpt.model import Block
    layer, mask, cache = Block(GPTConfig(**inputs["config"])), torch.zeros(1, 1, 4, 4), object()
    layer.load_state_dict(inputs["state"])
    with standins("attention", "mlp"):
        layer(inputs["x"], mask, cache)
    expect(len(CALLS) == 1 and CALLS[0][1] is mask and CALLS[0][2] is cache, "Block.forward must pass its attn_mask "
           "and kv_cache on to the attention", "a1.block")


# ---------------------------------------------------------------------------------------------------- §6


@pytest.mark.exercise("a1.gpt_forward")
@pytest.mark.parametrize("name", ["gpt_forward", "gpt_forward/padded"])
def test_gpt_forward_logits_and_loss(name):
    inputs, (logits_expected, loss_expected) = case("a1", name)
    with standins("block"):
        logits, loss = adapters.run_gpt_forward(**inputs)
    expect_close(logits, logits_expected, "logits (with stand-in blocks)", "a1.gpt_forward", atol=1e-4,
                 dims="b, t, v", hint="token embedding + position embedding, every block in order, the final "
                                      "LayerNorm (in hidden_states), then the tied LM head")
    expect_close(loss, loss_expected, "the LM loss", "a1.gpt_forward", atol=1e-5,
                 hint="mean cross-entropy over positions whose target is not -1 (targets are already shifted)")
    _, no_loss = adapters.run_gpt_forward(inputs["config"], inputs["state"], inputs["idx"])
    expect(no_loss is None, "without targets the loss must be None", "a1.gpt_forward")
    if "attention_mask" in inputs:  # the blocks get the padding mask (built in hidden_states) and the cache
        from minigpt.config import GPTConfig
        from minigpt.model import GPT
        model = GPT(GPTConfig(**inputs["config"]))
        model.load_state_dict(inputs["state"])
        cache = model.make_kv_cache(2, 7)
        with standins("block"):
            model.hidden_states(inputs["idx"], attention_mask=inputs["attention_mask"], kv_cache=cache)
        expect(len(CALLS) == inputs["config"]["n_layer"] and all(m is not None and c is cache for _, m, c in CALLS),
               "every block must get the attention mask and the kv_cache", "a1.gpt_forward")


@pytest.mark.exercise("a1.gpt_forward")
def test_gpt_loss_at_init_is_about_log_vocab():
    from minigpt.config import GPTConfig
    from minigpt.model import GPT
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    idx, targets = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    with standins("block"):
        _, loss = adapters.run_gpt_forward(dict(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16),
                                           model.state_dict(), idx, targets)
    expect(abs(loss.item() - math.log(64)) < 0.15, f"at initialisation the loss should be about ln V = "
           f"{math.log(64):.3f}, got {loss.item():.3f}", "a1.gpt_forward")


# ---------------------------------------------------------------------------------------------------- §7


@pytest.mark.exercise("a1.filter_logits")
@pytest.mark.parametrize("name", ["filter_logits/top_k", "filter_logits/top_p", "filter_logits/both"])
def test_filter_logits_stored(name):
    inputs, expected = case("a1", name)
    got = adapters.run_filter_logits(**inputs)
    kept, want = torch.isfinite(got), torch.isfinite(expected)
    if not torch.equal(kept, want):
        b = int((kept != want).any(-1).nonzero()[0])
        raise AssertionError(
            f"{name}: row {b} keeps tokens {kept[b].nonzero().flatten().tolist()}, expected "
            f"{want[b].nonzero().flatten().tolist()} (top_k={inputs.get('top_k')}, top_p={inputs.get('top_p')}). "
            "Hint: top-p keeps the smallest set of most likely tokens whose probability reaches p, so the token "
            "that crosses p is kept; top-k first, then top-p on what is left (see exercises/a1_gpt.md §7)")
    expect_close(got[kept], expected[want], "the kept logits", "a1.filter_logits",
                 hint="kept logits are unchanged; the others become -inf")


@pytest.mark.exercise("a1.filter_logits")
def test_filter_logits_handout_examples_and_no_op():
    got = adapters.run_filter_logits(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), top_k=2)
    expect(torch.isfinite(got).tolist() == [[True, True, False, False]], f"top_k=2 of [2, 1, 0, -1] gave {got.tolist()}",
           "a1.filter_logits")
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    got = adapters.run_filter_logits(probs.log(), top_p=0.6)
    expect(torch.isfinite(got).tolist() == [[True, True, False]], "top_p=0.6 of probabilities [.5, .3, .2] must keep "
           f"the first two (0.5 < 0.6, then 0.8 >= 0.6), got {torch.isfinite(got).tolist()}", "a1.filter_logits")
    x = torch.randn(2, 5)
    expect(torch.equal(adapters.run_filter_logits(x), x), "with neither top_k nor top_p the logits are unchanged",
           "a1.filter_logits")
    for bad in (dict(top_k=0), dict(top_p=0.0)):
        with pytest.raises(ValueError):
            adapters.run_filter_logits(x, **bad)


# ---------------------------------------------------------------------------------------------------- §8


@pytest.mark.exercise("a1.kv_cache")
def test_kv_cache_returns_everything_stored_so_far():
    inputs, expected = case("a1", "kv_cache")
    got = adapters.run_kv_cache(**inputs)
    for i, ((k, v), (k_want, v_want)) in enumerate(zip(got, expected)):
        layer = inputs["steps"][i][0]
        expect_close(k, k_want, f"keys returned by update #{i} (layer {layer})", "a1.kv_cache", dims="b, h, s, d",
                     hint="write the new keys at positions length .. length+T-1 of this layer, then return "
                          "positions 0 .. length+T-1; `length` advances only after the LAST layer")
        expect_close(v, v_want, f"values returned by update #{i} (layer {layer})", "a1.kv_cache", dims="b, h, s, d")


@pytest.mark.exercise("a1.kv_cache")
def test_kv_cache_refuses_to_overflow():
    cache = KVCache(1, 1, 1, 2, 1)
    with pytest.raises(ValueError):
        cache.update(0, torch.zeros(1, 1, 3, 1), torch.zeros(1, 1, 3, 1))


@pytest.mark.exercise("a1.sample_next")
def test_sample_next_greedy_and_log_probs():
    logits = torch.tensor([[0.5, 2.0, -1.0], [3.0, 0.0, 1.0]])
    tokens, logp = adapters.run_sample_next(logits, temperature=0)
    expect(tokens.tolist() == [1, 0], f"temperature 0 is greedy: expected tokens [1, 0], got {tokens.tolist()}",
           "a1.sample_next")
    expect(bool(torch.allclose(logp.exp().sum(-1), torch.ones(2))) and tuple(logp.shape) == (2, 3),
           "greedy decoding still returns log_softmax over the vocabulary (each row's probabilities sum to 1)",
           "a1.sample_next")
    inputs, expected = case("a1", "sample_next/logprobs")
    _, logp = adapters.run_sample_next(**inputs, generator=torch.Generator().manual_seed(0))
    expect_close(logp, expected, "returned log-probs (τ = 0.7, top_k = 3)", "a1.sample_next", atol=1e-5,
                 dims="b, v", hint="return log_softmax(logits / τ) of the UNFILTERED distribution: it is what a "
                                   "training forward pass recomputes, and PPO's ratio needs the two to agree")


@pytest.mark.exercise("a1.sample_next")
def test_sample_next_draws_from_softmax_at_the_temperature():
    logits = torch.tensor([[1.0, 0.0, -1.0, 0.5]]).repeat(4000, 1)
    tau = 0.5
    g = torch.Generator().manual_seed(0)
    tokens, logp = adapters.run_sample_next(logits, temperature=tau, generator=g)
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    want = logp[0].exp()
    expect(bool((freq - want).abs().max() < 0.03), f"4000 draws at τ = 0.5 gave frequencies {freq.tolist()}, but the "
           f"distribution is {[round(x, 3) for x in want.tolist()]}: sample with torch.multinomial from "
           "softmax(logits / τ) (after filtering)", "a1.sample_next")
    tokens, _ = adapters.run_sample_next(logits[:50], temperature=2.0, top_k=1, generator=g)
    expect(bool((tokens == 0).all()), "with top_k = 1 only the most likely token can be drawn (filter before "
           "sampling)", "a1.sample_next")
    tokens, _ = adapters.run_sample_next(logits[:50], temperature=2.0, top_p=0.01, generator=g)
    expect(bool((tokens == 0).all()), "with top_p = 0.01 only the most likely token can be drawn (pass top_p to the "
           "filter too)", "a1.sample_next")
