"""Graded tests of assignment 4 (PPO): exercises/a4_ppo.md.

    python tools/grade.py --assignment a4          # points per exercise
    python -m pytest tests/test_a4_ppo.py -k gae   # one exercise's tests, with pytest's output

Each test compares your code with values stored from the reference (tests/_snapshots/a4.pt) or checks
a property every correct answer has; the messages say what is wrong and where the handout explains it.
"""

import math

import pytest
import torch

from tests import adapters
from tests.grading import case, expect, expect_close, expect_on_inputs_device, on_meta
from tests.snapshot_cases import right_padded

f64 = torch.float64


# ---------------------------------------------------------------------------------------------------- §1


@pytest.mark.exercise("a4.token_logprobs")
def test_token_logprobs_hand_example():
    got = adapters.run_token_logprobs(torch.tensor([[[0.0, math.log(3.0)]]]), torch.tensor([[1]]))
    expect_close(got, torch.tensor([[math.log(0.75)]]), "log π of token 1 when p = [1/4, 3/4]", "a4.token_logprobs",
                 hint="log-softmax over the vocabulary, then pick the token's entry (log 0.75 = -0.288)")


@pytest.mark.exercise("a4.token_logprobs")
def test_token_logprobs_stored_values_and_shift_invariance():
    inputs, expected = case("a4", "token_logprobs")
    got = adapters.run_token_logprobs(**inputs)
    expect_close(got, expected, "log-probs", "a4.token_logprobs", dims="b, t",
                 hint="gather the log-softmax at tokens[b, t] along the last (vocabulary) axis")
    shifted = adapters.run_token_logprobs(inputs["logits"] + 100.0, inputs["tokens"])
    expect_close(shifted, expected, "log-probs of logits + 100", "a4.token_logprobs", atol=1e-5,
                 hint="softmax ignores a constant added to every logit; use log_softmax, not log(softmax) by hand")


@pytest.mark.exercise("a4.token_logprobs")
def test_token_logprobs_gradcheck():
    logits, tokens = torch.randn(2, 3, 4, dtype=f64, requires_grad=True), torch.randint(0, 4, (2, 3))
    expect(torch.autograd.gradcheck(lambda z: adapters.run_token_logprobs(z, tokens).to(f64), (logits,)),
           "the gradient of token_logprobs is wrong", "a4.token_logprobs")


@pytest.mark.exercise("a4.entropy")
def test_entropy_from_logits_limits_and_stored_values():
    got = adapters.run_entropy_from_logits(torch.zeros(4, dtype=f64))
    expect_close(got, torch.tensor(math.log(4), dtype=f64), "entropy of 4 equal logits", "a4.entropy",
                 hint="uniform over V tokens has entropy ln V")
    got = adapters.run_entropy_from_logits(torch.tensor([1000.0, 0.0, 0.0], dtype=f64))
    expect_close(got, torch.tensor(0.0, dtype=f64), "entropy of a one-hot distribution (logits 1000, 0, 0)",
                 "a4.entropy", hint="p log p must not become 0 * -inf = NaN: compute it from the logits")
    inputs, expected = case("a4", "entropy")
    expect_close(adapters.run_entropy_from_logits(**inputs), expected, "entropies", "a4.entropy", dims="b, t",
                 hint="H = -Σ_v p_v log p_v over the last axis")


# ---------------------------------------------------------------------------------------------------- §2


@pytest.mark.exercise("a4.kl_shaped_rewards")
def test_kl_shaped_rewards_hand_example():
    got = adapters.run_kl_shaped_rewards(torch.tensor([3.0]), torch.tensor([[-1.0, -1.0]]),
                                         torch.tensor([[-2.0, -1.0]]), torch.tensor([[1.0, 1.0]]), 0.1)
    expect_close(got, torch.tensor([[-0.1, 3.0]]), "rewards for β = 0.1, log π = [-1, -1], log π_ref = [-2, -1], "
                 "score 3", "a4.kl_shaped_rewards", dims="b, t",
                 hint="r_t = -β (log π - log π_ref), and the score is added on the last token only")


@pytest.mark.exercise("a4.kl_shaped_rewards")
def test_kl_shaped_rewards_stored_values_with_padding():
    inputs, expected = case("a4", "kl_shaped_rewards")
    mask = inputs["mask"].clone()
    got = adapters.run_kl_shaped_rewards(**inputs)
    expect(bool(torch.all(got[mask == 0] == 0)), "rewards on padding positions (mask 0) must be exactly 0",
           "a4.kl_shaped_rewards")
    expect_close(got, expected, "rewards", "a4.kl_shaped_rewards", dims="b, t",
                 hint="the score goes on each row's LAST VALID token (rows have different lengths; a row with no "
                      "valid token gets nothing), not on column T-1")
    expect(torch.equal(inputs["mask"], mask), "kl_shaped_rewards must not modify its inputs", "a4.kl_shaped_rewards")


# ---------------------------------------------------------------------------------------------------- §3


@pytest.mark.exercise("a4.gae")
def test_gae_three_steps_by_hand():
    # γ = 0.9, λ = 0.5; r = [0, 0, 1], V = [0.2, 0.4, 0.6]: the handout works this one out
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]], dtype=f64), torch.tensor([[0.2, 0.4, 0.6]], dtype=f64)
    adv, ret = adapters.run_gae(rewards, values, torch.ones(1, 3, dtype=f64), 0.9, 0.5)
    expect_close(adv, torch.tensor([[0.304, 0.32, 0.4]], dtype=f64), "advantages (γ = 0.9, λ = 0.5)", "a4.gae",
                 dims="b, t", hint="δ_t = r_t + γ V_{t+1} - V_t with V after the last token = 0; A_t = δ_t + γλ A_{t+1}")
    expect_close(ret, torch.tensor([[0.504, 0.72, 1.0]], dtype=f64), "returns", "a4.gae", dims="b, t",
                 hint="returns = advantages + values (before any whitening)")


@pytest.mark.exercise("a4.gae")
@pytest.mark.parametrize("name", ["gae/discounted", "gae/undiscounted"])
def test_gae_stored_values_with_padding(name):
    inputs, (adv_expected, ret_expected) = case("a4", name)
    adv, ret = adapters.run_gae(**inputs)
    hint = ("padding holds garbage (1e3) that must not leak in: the value after a row's last valid token is 0, "
            "and masked positions are 0 in the output")
    expect_close(adv, adv_expected, f"advantages (γ = {inputs['gamma']}, λ = {inputs['lam']})", "a4.gae",
                 dims="b, t", hint=hint)
    expect_close(ret, ret_expected, "returns", "a4.gae", dims="b, t", hint=hint)


@pytest.mark.exercise("a4.gae")
def test_gae_of_one_token_responses():
    adv, ret = adapters.run_gae(torch.tensor([[2.0], [0.5]], dtype=f64), torch.tensor([[0.5], [1.0]], dtype=f64),
                                torch.ones(2, 1, dtype=f64), 0.9, 0.95)
    expect_close(adv, torch.tensor([[1.5], [-0.5]], dtype=f64), "advantages of one-token responses", "a4.gae",
                 dims="b, t", hint="with one token A = r - V (nothing comes after it)")


@pytest.mark.exercise("a4.gae")
def test_gae_keeps_to_the_inputs_device():
    x = on_meta(torch.zeros(2, 5))
    expect_on_inputs_device(lambda: adapters.run_gae(x, x, x, 1.0, 0.95), "advantages and returns", "a4.gae")


@pytest.mark.exercise("a4.gae")
def test_gae_lambda_one_is_the_discounted_return_minus_the_value():
    T, gamma = 5, 0.9
    rewards, values = torch.randn(1, T, dtype=f64), torch.randn(1, T, dtype=f64)
    adv, _ = adapters.run_gae(rewards, values, torch.ones(1, T, dtype=f64), gamma, 1.0)
    for t in range(T):
        G = sum(gamma ** (k - t) * rewards[0, k].item() for k in range(t, T))
        expect(abs(adv[0, t].item() - (G - values[0, t].item())) < 1e-9,
               f"with λ = 1, A_t must equal the discounted return minus V_t; at t = {t} got {adv[0, t].item():.6g}, "
               f"expected {G - values[0, t].item():.6g}", "a4.gae")


@pytest.mark.exercise("a4.whiten")
def test_masked_whiten_of_a_constant_is_zero_not_nan():
    got = adapters.run_masked_whiten(torch.full((2, 3), 4.0, dtype=f64), torch.ones(2, 3, dtype=f64))
    expect(bool(torch.isfinite(got).all()) and bool((got.abs() < 1e-6).all()), f"whitening a constant gave "
           f"{got.tolist()}; the variance is 0, so add the 1e-8 inside the square root", "a4.whiten")


@pytest.mark.exercise("a4.whiten")
def test_masked_whiten_hand_example():
    got = adapters.run_masked_whiten(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    expect_close(got, torch.tensor([[-1.0, 1.0, 0.0]]), "whiten([1, 3, pad])", "a4.whiten", atol=1e-5, dims="b, t",
                 hint="mean and (population) variance over valid positions only; padding set to 0")


@pytest.mark.exercise("a4.whiten")
@pytest.mark.parametrize("name", ["whiten/shift", "whiten/keep_mean"])
def test_masked_whiten_stored_values(name):
    inputs, expected = case("a4", name)
    got = adapters.run_masked_whiten(**inputs)
    mask = inputs["mask"]
    valid = got[mask.bool()]
    if inputs.get("shift_mean", True):
        expect(abs(valid.mean().item()) < 1e-8, f"whitened values must have mean 0 over valid positions, got "
               f"{valid.mean().item():.4g}", "a4.whiten")
        expect(abs(valid.var(unbiased=False).item() - 1) < 1e-5, "whitened values must have variance 1 over valid "
               f"positions, got {valid.var(unbiased=False).item():.4g}", "a4.whiten")
    expect_close(got, expected, f"whitened values ({name})", "a4.whiten", dims="b, t",
                 hint="shift_mean=False adds the mean back after dividing by the std")


# ---------------------------------------------------------------------------------------------------- §4


@pytest.mark.exercise("a4.policy_loss")
def test_ppo_policy_loss_first_minibatch():
    lp, adv, mask = torch.randn(3, 5, dtype=f64), torch.randn(3, 5, dtype=f64), right_padded([5, 2, 4], 5)
    loss, stats = adapters.run_ppo_policy_loss(lp, lp.clone(), adv, mask, 0.2)
    expect_close(loss, -adv[mask.bool()].mean(), "the loss when π = π_old (ratio 1)", "a4.policy_loss",
                 hint="at ratio 1 both terms equal -A: the loss is minus the mean advantage over valid tokens")
    expect(abs(float(stats["approx_kl"])) < 1e-12, "approx_kl must be 0 when π = π_old", "a4.policy_loss")
    expect(float(stats["clipfrac"]) == 0.0, "clipfrac must be 0 when π = π_old", "a4.policy_loss")


@pytest.mark.exercise("a4.policy_loss")
def test_ppo_policy_loss_stored_values():
    inputs, (loss_expected, stats_expected) = case("a4", "policy_loss")
    loss, stats = adapters.run_ppo_policy_loss(**inputs)
    expect_close(loss, loss_expected, "the clipped surrogate loss", "a4.policy_loss",
                 hint="ratio = exp(log π - log π_old); loss = mean over valid tokens of max(-A ratio, -A clip(ratio)) "
                      "(the max of the negated terms is the pessimistic bound)")
    for key in ("approx_kl", "clipfrac", "ratio_mean"):
        expect(key in stats, f"stats must contain {key!r}", "a4.policy_loss")
        expect_close(stats[key], stats_expected[key], f"stats[{key!r}]", "a4.policy_loss",
                     hint="approx_kl = mean((ratio - 1) - log ratio); clipfrac = share of |ratio - 1| > ε")


@pytest.mark.exercise("a4.policy_loss")
@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_ppo_policy_loss_gradient_vanishes_exactly_where_clipped(advantage):
    ratios = torch.tensor([[0.7, 0.79, 0.81, 1.0, 1.19, 1.21, 1.5]], dtype=f64)
    lp = torch.log(ratios).requires_grad_(True)
    loss, _ = adapters.run_ppo_policy_loss(lp, torch.zeros_like(ratios), torch.full_like(ratios, advantage),
                                           torch.ones_like(ratios), 0.2)
    loss.backward()
    flat = (ratios > 1.2) if advantage > 0 else (ratios < 0.8)
    for j, r in enumerate(ratios[0].tolist()):
        g = lp.grad[0, j].item()
        if flat[0, j]:
            expect(g == 0, f"A = {advantage:+}: at ratio {r} the clipped term is the active one, so the gradient "
                   f"must be 0; got {g:.4g}", "a4.policy_loss")
        else:
            want = -advantage * r / ratios.numel()
            expect(abs(g - want) < 1e-9, f"A = {advantage:+}: at ratio {r} the unclipped term is active, d loss / "
                   f"d log π = -A ratio / n = {want:.4g}; got {g:.4g}", "a4.policy_loss")


@pytest.mark.exercise("a4.value_loss")
def test_ppo_value_loss_hand_examples():
    z = torch.zeros(1, 2, dtype=f64)
    loss, _ = adapters.run_ppo_value_loss(z, z, torch.full((1, 2), 2.0, dtype=f64), torch.ones(1, 2, dtype=f64), 0.2)
    expect_close(loss, torch.tensor(2.0, dtype=f64), "value loss for V = 0, R = 2", "a4.value_loss",
                 hint="L = 1/2 mean (V - R)^2 (note the 1/2)")
    one = torch.ones(1, 1, dtype=f64)
    loss, stats = adapters.run_ppo_value_loss(one, 0 * one, one, one, 0.2)
    expect_close(loss, torch.tensor(0.32, dtype=f64), "value loss for V = 1, V_old = 0, R = 1, ε = 0.2",
                 "a4.value_loss", hint="clip V around the ROLLOUT's V_old: V_clip = 0.2, and max(0, (0.2 - 1)^2) / 2 = 0.32")
    expect_close(stats["vf_clipfrac"], torch.tensor(1.0, dtype=f64), "vf_clipfrac", "a4.value_loss")
    loss, stats = adapters.run_ppo_value_loss(0.25 * one, 0 * one, one, one, 0.3)
    expect_close(loss, torch.tensor(0.28125, dtype=f64), "value loss for V = 0.25 (inside the clip range), R = 1",
                 "a4.value_loss")
    expect_close(stats["vf_clipfrac"], torch.tensor(0.0, dtype=f64), "vf_clipfrac when V moved less than ε",
                 "a4.value_loss", hint="a token counts as clipped only where the clipped term is strictly larger")


@pytest.mark.exercise("a4.value_loss")
def test_ppo_value_loss_stored_values():
    inputs, (loss_expected, stats_expected) = case("a4", "value_loss")
    loss, stats = adapters.run_ppo_value_loss(**inputs)
    expect_close(loss, loss_expected, "the clipped value loss", "a4.value_loss",
                 hint="max of the unclipped and clipped squared errors, 1/2 mean over valid tokens")
    for key in ("vf_clipfrac", "explained_variance"):
        expect_close(stats[key], stats_expected[key], f"stats[{key!r}]", "a4.value_loss",
                     hint="explained_variance = 1 - Var(R - V) / Var(R) over valid tokens")


# ---------------------------------------------------------------------------------------------------- §5


@pytest.mark.exercise("a4.adaptive_kl")
def test_adaptive_kl_controller_by_hand():
    got = adapters.run_adaptive_kl_controller(0.1, 6.0, 10000, [(12.0, 1000)])
    expect(abs(got[0] - 0.102) < 1e-12, f"β after KL = 12 against target 6 (n = 1000, horizon 10000): got {got[0]}, "
           "expected 0.1 * (1 + 0.2 * 0.1) = 0.102 (the error KL/target - 1 = 1 is clipped to 0.2)", "a4.adaptive_kl")


@pytest.mark.exercise("a4.adaptive_kl")
def test_adaptive_kl_controller_stored_values():
    inputs, expected = case("a4", "adaptive_kl")
    got = torch.tensor(adapters.run_adaptive_kl_controller(**inputs), dtype=f64)
    expect_close(got, expected, "β after each update", "a4.adaptive_kl", atol=1e-12,
                 hint="β ← β (1 + clip(KL / target - 1, -0.2, 0.2) · n_steps / horizon), multiplicative")
    fixed = adapters.run_adaptive_kl_controller(0.2, None, 100, [(60.0, 50)])
    expect(fixed == [0.2], "target None keeps β fixed", "a4.adaptive_kl")


# ---------------------------------------------------------------------------------------------------- §1 (rollout)


@pytest.mark.exercise("a4.response_logprobs")
def test_shift_to_response_aligns_logits_with_response_tokens():
    inputs, expected = case("a4", "shift_to_response")
    got = adapters.run_shift_to_response(**inputs)
    expect_close(got, expected, "response logits (P = 3, N = 4, τ = 0.7)", "a4.response_logprobs", dims="b, t, v",
                 hint="the logits at position P-1+t predict response token t: take columns P-1 .. P+N-2, and divide "
                      "by the sampling temperature (the policy that sampled was softmax(logits / τ))")


# ---------------------------------------------------------------------------------------------------- §6


@pytest.mark.exercise("a4.minibatches")
def test_minibatch_updates_visit_every_row_once_per_epoch():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    seen, steps = [], []

    def make_batch(rows):
        seen.append(rows.tolist())
        return rows

    def loss_fn(m, rows):
        return m(torch.ones(len(rows), 2)).sum() * 0 + m.weight.sum(), {"n": float(len(rows))}

    original_step = opt.step
    opt.step = lambda *a, **k: (steps.append(1), original_step(*a, **k))[1]
    mean_stats, first = adapters.run_minibatch_updates(model, opt, 10, loss_fn, make_batch, epochs=2,
                                                       n_minibatches=3, micro_batch_size=2,
                                                       generator=torch.Generator().manual_seed(0))
    rows = [r for batch in seen for r in batch]
    epoch_1, epoch_2 = rows[:10], rows[10:]
    expect(sorted(rows) == sorted(list(range(10)) * 2), f"over 2 epochs every one of the 10 rows must be used "
           f"exactly twice; got the rows {sorted(rows)}", "a4.minibatches")
    expect(len(steps) == 6, f"2 epochs x 3 minibatches = 6 optimizer steps, got {len(steps)}", "a4.minibatches")
    expect(max(len(b) for b in seen) <= 2, "micro-batches must hold at most micro_batch_size rows", "a4.minibatches")
    expect(first is not None and "n" in mean_stats, "return (mean stats of all minibatches, stats of the first)",
           "a4.minibatches")
    expect(abs(mean_stats["n"] - 2.0) < 1e-9 and abs(mean_stats["loss"] - model.weight.sum().item()) < 1e-6
           and "grad_norm" in mean_stats and "grad_norm" in first,
           f"mean stats {mean_stats}: every minibatch's stats plus its 'loss' and 'grad_norm' (from optimizer_step), "
           "averaged over the minibatches", "a4.minibatches")
    orders = []
    for _ in range(2):
        seen.clear()
        torch.manual_seed(len(orders))  # a different global seed each time: only the generator may matter
        adapters.run_minibatch_updates(model, opt, 10, loss_fn, make_batch, epochs=1, n_minibatches=3,
                                       micro_batch_size=2, generator=torch.Generator().manual_seed(7))
        orders.append([list(b) for b in seen])
    expect(orders[0] == orders[1], "the same generator seed must give the same minibatches: shuffle with "
           "torch.randperm(n_rows, generator=generator)", "a4.minibatches")
    expect(epoch_1 != list(range(10)) and epoch_1 != epoch_2, f"rows must be shuffled afresh each epoch "
           f"(torch.randperm with the generator, once per epoch); the 2 epochs visited {epoch_1} and {epoch_2}",
           "a4.minibatches")


@pytest.mark.exercise("a4.truncate_after_stop")
def test_truncate_after_stop_keeps_the_first_stop_and_pads_the_rest():
    END, PAD = 9, 0
    response = torch.tensor([[4, END, 5, END], [4, 5, 6, 7], [END, 4, 4, 4]])
    got, mask, stopped = adapters.run_truncate_after_stop(response, END, PAD)
    expect(got.tolist() == [[4, END, PAD, PAD], [4, 5, 6, 7], [END, PAD, PAD, PAD]],
           f"responses {got.tolist()}; expected [[4, 9, 0, 0], [4, 5, 6, 7], [9, 0, 0, 0]]: keep up to AND including "
           "the first <|end|> (9), pad (0) everything after it, even a second <|end|>", "a4.truncate_after_stop")
    expect(mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], f"mask {mask.tolist()}: 1 on the kept tokens, "
           "the stop token included (its log-prob is part of the action)", "a4.truncate_after_stop")
    expect(stopped.tolist() == [True, False, True], f"stopped {stopped.tolist()}; expected [True, False, True]",
           "a4.truncate_after_stop")


@pytest.mark.exercise("a4.truncate_after_stop")
def test_truncate_after_stop_keeps_to_the_responses_device():
    responses = on_meta(torch.zeros(3, 4, dtype=torch.long))
    expect_on_inputs_device(lambda: adapters.run_truncate_after_stop(responses, 9, 0),
                            "the truncated responses, mask and stop flags", "a4.truncate_after_stop")
