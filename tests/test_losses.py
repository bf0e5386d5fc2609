"""Tests for rlhf/losses.py, reached only through tests/adapters.py.

Three kinds of check per formula: a hand-worked example (the one in the docstring), a reference
recomputation written the slow obvious way in float64, and gradcheck where a gradient flows.
Each test name contains its function's name, so `pytest tests/test_losses.py -k gae` grades one exercise.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from tests import adapters

f64 = torch.float64


def _rand(*shape):
    return torch.randn(*shape, dtype=f64)


def _right_padded_mask(lengths, T):
    return torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths], dtype=f64)


# -----------------------------------------------------------------------------
# masked_mean / masked_whiten


def test_masked_mean_hand_example():
    x = torch.tensor([[1.0, 2.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert adapters.run_masked_mean(x, mask).item() == pytest.approx(1.5)


def test_masked_mean_matches_boolean_indexing():
    x, mask = _rand(4, 7), (torch.rand(4, 7) > 0.4).to(f64)
    got = adapters.run_masked_mean(x, mask)
    torch.testing.assert_close(got, x[mask.bool()].mean())
    rows = adapters.run_masked_mean(x, mask, dim=1)
    for b in range(4):
        if mask[b].sum() > 0:
            torch.testing.assert_close(rows[b], x[b][mask[b].bool()].mean())


def test_masked_mean_ignores_masked_values_and_empty_mask_is_zero():
    x, mask = _rand(3, 5), _right_padded_mask([5, 2, 3], 5)
    x2 = x.clone()
    x2[mask == 0] = 1e6
    torch.testing.assert_close(adapters.run_masked_mean(x, mask), adapters.run_masked_mean(x2, mask))
    assert adapters.run_masked_mean(x, torch.zeros_like(x)).item() == 0.0


def test_masked_whiten_hand_example():
    got = adapters.run_masked_whiten(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    torch.testing.assert_close(got, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-6, rtol=0)


def test_masked_whiten_zero_mean_unit_variance_over_valid():
    x, mask = 3 + 5 * _rand(4, 6), _right_padded_mask([6, 3, 1, 4], 6)
    w = adapters.run_masked_whiten(x, mask)
    valid = w[mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-10)
    assert valid.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(w[mask == 0] == 0)
    # shift_mean=False keeps the original mean
    w2 = adapters.run_masked_whiten(x, mask, shift_mean=False)
    assert w2[mask.bool()].mean().item() == pytest.approx(x[mask.bool()].mean().item(), abs=1e-10)


# -----------------------------------------------------------------------------
# sft_loss


def test_sft_loss_uniform_logits_is_log_vocab():
    logits = torch.zeros(2, 3, 5)
    targets = torch.randint(0, 5, (2, 3))
    loss = adapters.run_sft_loss(logits, targets, torch.ones(2, 3))
    assert loss.item() == pytest.approx(math.log(5), abs=1e-6)


def test_sft_loss_matches_cross_entropy_with_ignore_index():
    B, T, V = 3, 6, 11
    logits, targets = _rand(B, T, V), torch.randint(0, V, (B, T))
    mask = (torch.rand(B, T) > 0.3).to(f64)
    mask[0, 0] = 1.0
    ref = F.cross_entropy(logits.reshape(-1, V), targets.masked_fill(mask == 0, -1).reshape(-1), ignore_index=-1)
    torch.testing.assert_close(adapters.run_sft_loss(logits, targets, mask).to(f64), ref, rtol=1e-5, atol=1e-6)


def test_sft_loss_masked_positions_never_contribute():
    B, T, V = 2, 5, 7
    logits, targets, mask = _rand(B, T, V), torch.randint(0, V, (B, T)), _right_padded_mask([5, 2], 5)
    logits2, targets2 = logits.clone(), targets.clone()
    logits2[mask == 0] = 50 * _rand(int((mask == 0).sum()), V)
    targets2[mask == 0] = -1  # ignore-index style targets under the mask are allowed
    torch.testing.assert_close(adapters.run_sft_loss(logits, targets, mask),
                               adapters.run_sft_loss(logits2, targets2, mask))
    logits.requires_grad_(True)
    adapters.run_sft_loss(logits, targets, mask).backward()
    assert torch.all(logits.grad[mask == 0] == 0)


def test_sft_loss_gradcheck():
    logits = _rand(2, 3, 4).requires_grad_(True)
    targets, mask = torch.randint(0, 4, (2, 3)), _right_padded_mask([3, 2], 3)
    assert torch.autograd.gradcheck(lambda z: adapters.run_sft_loss(z, targets, mask).to(f64), (logits,))


# -----------------------------------------------------------------------------
# pairwise_reward_loss / ranked_reward_loss


def test_pairwise_reward_loss_tie_is_ln2():
    r = torch.tensor([0.3, -1.0, 7.0])
    assert adapters.run_pairwise_reward_loss(r, r.clone()).item() == pytest.approx(math.log(2), abs=1e-6)


def test_pairwise_reward_loss_reference_and_margin():
    chosen, rejected, margin = _rand(8), _rand(8), torch.rand(8, dtype=f64)
    ref = torch.tensor([-math.log(1 / (1 + math.exp(-(c - r)))) for c, r in zip(chosen.tolist(), rejected.tolist())], dtype=f64).mean()
    torch.testing.assert_close(adapters.run_pairwise_reward_loss(chosen, rejected), ref)
    ref_m = torch.tensor([-math.log(1 / (1 + math.exp(-(c - r - m))))
                          for c, r, m in zip(chosen.tolist(), rejected.tolist(), margin.tolist())], dtype=f64).mean()
    torch.testing.assert_close(adapters.run_pairwise_reward_loss(chosen, rejected, margin=margin), ref_m)
    # a float margin equals a constant tensor margin
    torch.testing.assert_close(adapters.run_pairwise_reward_loss(chosen, rejected, margin=0.5),
                               adapters.run_pairwise_reward_loss(chosen, rejected, margin=torch.full((8,), 0.5, dtype=f64)))


def test_pairwise_reward_loss_hand_value_and_gradcheck():
    got = adapters.run_pairwise_reward_loss(torch.tensor([2.0]), torch.tensor([0.0]))
    assert got.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)  # 0.1269
    c, r = _rand(5).requires_grad_(True), _rand(5).requires_grad_(True)
    assert torch.autograd.gradcheck(adapters.run_pairwise_reward_loss, (c, r))


def test_ranked_reward_loss_hand_example():
    got = adapters.run_ranked_reward_loss(torch.tensor([[2.0, 1.0, 0.0]]))
    expected = (2 * math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 3
    assert got.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("K", [2, 4, 9])
def test_ranked_reward_loss_equals_mean_over_explicit_pairs(K):
    P = 3
    rewards = _rand(P, K)
    chosen = [rewards[p, i] for p in range(P) for i in range(K) for j in range(i + 1, K)]
    rejected = [rewards[p, j] for p in range(P) for i in range(K) for j in range(i + 1, K)]
    assert len(chosen) == P * K * (K - 1) // 2
    ref = adapters.run_pairwise_reward_loss(torch.stack(chosen), torch.stack(rejected))
    torch.testing.assert_close(adapters.run_ranked_reward_loss(rewards), ref)


def test_ranked_reward_loss_pair_mask_drops_ties_and_padding():
    # prompt 0: K = 4 with responses 1 and 2 tied; prompt 1: only 3 real responses (column 3 is padding)
    rewards = _rand(2, 4)
    pair_mask = torch.zeros(2, 4, 4, dtype=f64)
    kept = [(0, 0, 1), (0, 0, 2), (0, 0, 3), (0, 1, 3), (0, 2, 3), (1, 0, 1), (1, 0, 2), (1, 1, 2)]
    for p, i, j in kept:
        pair_mask[p, i, j] = 1.0
    pair_mask[0, 3, 0] = 1.0  # below the diagonal: must be ignored
    def pairwise(pairs):
        return adapters.run_pairwise_reward_loss(torch.stack([rewards[p, i] for p, i, j in pairs]),
                                                 torch.stack([rewards[p, j] for p, i, j in pairs]))

    pooled = pairwise(kept)
    per_prompt = (pairwise(kept[:5]) + pairwise(kept[5:])) / 2      # eq. 1: each prompt's mean, then over prompts
    torch.testing.assert_close(adapters.run_ranked_reward_loss(rewards, pair_mask), per_prompt,
                               msg="reduction='prompt' (the default) is InstructGPT eq. 1: mean over each prompt's "
                                   "kept pairs, then mean over prompts")
    torch.testing.assert_close(adapters.run_ranked_reward_loss(rewards, pair_mask, reduction="pair"), pooled,
                               msg="reduction='pair' is one mean over every kept pair of the batch")
    # values in masked-out slots do not matter
    rewards2 = rewards.clone()
    rewards2[1, 3] = 1e4
    torch.testing.assert_close(adapters.run_ranked_reward_loss(rewards2, pair_mask), per_prompt)


def test_ranked_reward_loss_weighs_every_prompt_equally():
    """A prompt with 28 informative pairs (K = 8) weighs as much as a prompt with one (InstructGPT eq. 1);
    a prompt with no kept pair does not count at all."""
    rewards = _rand(3, 8)
    pair_mask = torch.zeros(3, 8, 8, dtype=f64)
    pair_mask[0] = torch.ones(8, 8, dtype=f64).triu(1)          # 28 pairs
    pair_mask[1, 0, 1] = 1.0                                    # 1 pair; prompt 2 keeps none
    diff = rewards[:, :, None] - rewards[:, None, :]
    prompt0 = -torch.nn.functional.logsigmoid(diff[0][pair_mask[0] > 0]).mean()
    prompt1 = -torch.nn.functional.logsigmoid(diff[1, 0, 1])
    torch.testing.assert_close(adapters.run_ranked_reward_loss(rewards, pair_mask), (prompt0 + prompt1) / 2,
                               msg="each prompt that keeps a pair must weigh the same; prompts without pairs none")


def test_ranked_reward_loss_gradcheck():
    rewards = _rand(2, 4).requires_grad_(True)
    pair_mask = torch.ones(2, 4, 4, dtype=f64)
    pair_mask[1, 1, 2] = 0.0
    assert torch.autograd.gradcheck(lambda r: adapters.run_ranked_reward_loss(r, pair_mask), (rewards,))


# -----------------------------------------------------------------------------
# token_logprobs / entropy_from_logits


def test_token_logprobs_hand_example_and_reference():
    got = adapters.run_token_logprobs(torch.tensor([[[0.0, math.log(3.0)]]]), torch.tensor([[1]]))
    assert got.item() == pytest.approx(math.log(0.75), abs=1e-6)
    logits, tokens = _rand(3, 5, 7), torch.randint(0, 7, (3, 5))
    ref = torch.empty(3, 5, dtype=f64)
    for b in range(3):
        for t in range(5):
            z = logits[b, t]
            ref[b, t] = z[tokens[b, t]] - torch.log(torch.exp(z).sum())
    torch.testing.assert_close(adapters.run_token_logprobs(logits, tokens).to(f64), ref, rtol=1e-5, atol=1e-6)


def test_token_logprobs_gradcheck_and_shift_invariance():
    logits, tokens = _rand(2, 3, 4).requires_grad_(True), torch.randint(0, 4, (2, 3))
    assert torch.autograd.gradcheck(lambda z: adapters.run_token_logprobs(z, tokens).to(f64), (logits,))
    shifted = logits.detach() + 100.0  # softmax ignores a constant added to every logit
    torch.testing.assert_close(adapters.run_token_logprobs(shifted, tokens).to(f64),
                               adapters.run_token_logprobs(logits.detach(), tokens).to(f64), rtol=1e-5, atol=1e-5)


def test_entropy_from_logits_uniform_onehot_and_reference():
    assert adapters.run_entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4), abs=1e-6)
    assert adapters.run_entropy_from_logits(torch.tensor([1000.0, 0.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)
    logits = _rand(2, 3, 6)
    p = torch.softmax(logits, -1)
    ref = -(p * torch.log(p)).sum(-1)
    torch.testing.assert_close(adapters.run_entropy_from_logits(logits).to(f64), ref, rtol=1e-5, atol=1e-6)
    z = _rand(2, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: adapters.run_entropy_from_logits(x).to(f64), (z,))


# -----------------------------------------------------------------------------
# kl_shaped_rewards


def test_kl_shaped_rewards_hand_example():
    got = adapters.run_kl_shaped_rewards(torch.tensor([3.0]), torch.tensor([[-1.0, -1.0]]),
                                         torch.tensor([[-2.0, -1.0]]), torch.tensor([[1.0, 1.0]]), 0.1)
    torch.testing.assert_close(got, torch.tensor([[-0.1, 3.0]]))


def test_kl_shaped_rewards_reference_with_padding():
    B, T, beta = 4, 6, 0.2
    lengths = [6, 3, 1, 0]
    scores, lp, ref_lp, mask = _rand(B), _rand(B, T), _rand(B, T), _right_padded_mask(lengths, T)
    got = adapters.run_kl_shaped_rewards(scores, lp, ref_lp, mask, beta)
    expected = torch.zeros(B, T, dtype=f64)
    for b, n in enumerate(lengths):
        for t in range(n):
            expected[b, t] = -beta * (lp[b, t] - ref_lp[b, t])
        if n > 0:
            expected[b, n - 1] += scores[b]
    torch.testing.assert_close(got, expected)
    assert torch.all(got[mask == 0] == 0)  # masked positions carry no reward
    # the inputs are not modified
    assert torch.equal(mask, _right_padded_mask(lengths, T))


# -----------------------------------------------------------------------------
# gae


def _gae_loop_reference(rewards, values, lengths, gamma, lam):
    """GAE written per trajectory with explicit Python floats."""
    B, T = rewards.shape
    adv, ret = torch.zeros(B, T, dtype=f64), torch.zeros(B, T, dtype=f64)
    for b, n in enumerate(lengths):
        r, v = rewards[b, :n].tolist(), values[b, :n].tolist() + [0.0]
        running = 0.0
        for t in reversed(range(n)):
            delta = r[t] + gamma * v[t + 1] - v[t]
            running = delta + gamma * lam * running
            adv[b, t] = running
            ret[b, t] = running + v[t]
    return adv, ret


def test_gae_three_step_trajectory_by_hand():
    # γ = 0.9, λ = 0.5; r = [0, 0, 1], V = [0.2, 0.4, 0.6]
    # δ2 = 1 - 0.6 = 0.4;  δ1 = 0 + 0.9*0.6 - 0.4 = 0.14;  δ0 = 0 + 0.9*0.4 - 0.2 = 0.16
    # A2 = 0.4;  A1 = 0.14 + 0.45*0.4 = 0.32;  A0 = 0.16 + 0.45*0.32 = 0.304
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]], dtype=f64), torch.tensor([[0.2, 0.4, 0.6]], dtype=f64)
    adv, ret = adapters.run_gae(rewards, values, torch.ones(1, 3, dtype=f64), 0.9, 0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.304, 0.32, 0.4]], dtype=f64))
    torch.testing.assert_close(ret, torch.tensor([[0.504, 0.72, 1.0]], dtype=f64))


def test_gae_docstring_example_gamma_lambda_one():
    adv, ret = adapters.run_gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.5, 0.5]]), torch.ones(1, 3), 1.0, 1.0)
    torch.testing.assert_close(adv, torch.tensor([[0.5, 0.5, 0.5]]))
    torch.testing.assert_close(ret, torch.tensor([[1.0, 1.0, 1.0]]))


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 1.0), (0.7, 0.3)])
def test_gae_matches_loop_reference_with_padding(gamma, lam):
    lengths, T = [7, 4, 1, 5], 7
    rewards, values, mask = _rand(4, T), _rand(4, T), _right_padded_mask(lengths, T)
    rewards2, values2 = rewards.clone(), values.clone()
    rewards2[mask == 0], values2[mask == 0] = 1e3, -1e3  # garbage in padding must not leak in
    adv, ret = adapters.run_gae(rewards2, values2, mask, gamma, lam)
    ref_adv, ref_ret = _gae_loop_reference(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)


def test_gae_lambda_one_is_discounted_return_minus_value():
    T, gamma = 5, 0.9
    rewards, values = _rand(1, T), _rand(1, T)
    adv, _ = adapters.run_gae(rewards, values, torch.ones(1, T, dtype=f64), gamma, 1.0)
    for t in range(T):
        G = sum(gamma ** (k - t) * rewards[0, k].item() for k in range(t, T))
        assert adv[0, t].item() == pytest.approx(G - values[0, t].item(), abs=1e-10)


# -----------------------------------------------------------------------------
# ppo_policy_loss


def test_ppo_policy_loss_ratio_one_is_minus_mean_advantage():
    lp, adv, mask = _rand(3, 5), _rand(3, 5), _right_padded_mask([5, 2, 4], 5)
    loss, stats = adapters.run_ppo_policy_loss(lp, lp.clone(), adv, mask, 0.2)
    torch.testing.assert_close(loss, -adv[mask.bool()].mean())
    assert float(stats["approx_kl"]) == pytest.approx(0.0, abs=1e-12)
    assert float(stats["clipfrac"]) == 0.0
    assert float(stats["ratio_mean"]) == pytest.approx(1.0)


def test_ppo_policy_loss_reference():
    eps = 0.2
    lp, old, adv, mask = 0.3 * _rand(4, 6), 0.3 * _rand(4, 6), _rand(4, 6), _right_padded_mask([6, 5, 3, 1], 6)
    loss, stats = adapters.run_ppo_policy_loss(lp, old, adv, mask, eps)
    terms, kls, clipped = [], [], []
    for b in range(4):
        for t in range(6):
            if mask[b, t] == 0:
                continue
            ratio = math.exp(lp[b, t] - old[b, t])
            a = adv[b, t].item()
            terms.append(-min(a * ratio, a * min(max(ratio, 1 - eps), 1 + eps)))  # -min(surrogates)
            kls.append(ratio - 1 - math.log(ratio))
            clipped.append(abs(ratio - 1) > eps)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), abs=1e-10)
    assert float(stats["approx_kl"]) == pytest.approx(sum(kls) / len(kls), abs=1e-10)
    assert float(stats["clipfrac"]) == pytest.approx(sum(clipped) / len(clipped))
    lp.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: adapters.run_ppo_policy_loss(x, old, adv, mask, eps)[0], (lp,))


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_ppo_policy_loss_clipping_engages_exactly_outside_band(advantage):
    # One token per column: ratios just inside and just outside 1 ± ε.
    eps = 0.2
    ratios = torch.tensor([[0.7, 0.79, 0.81, 1.0, 1.19, 1.21, 1.5]], dtype=f64)
    lp = torch.log(ratios).requires_grad_(True)
    old, adv, mask = torch.zeros_like(ratios), torch.full_like(ratios, advantage), torch.ones_like(ratios)
    loss, stats = adapters.run_ppo_policy_loss(lp, old, adv, mask, eps)
    loss.backward()
    outside = (ratios - 1).abs() > eps
    assert float(stats["clipfrac"]) == pytest.approx(outside.to(f64).mean().item())
    # the gradient vanishes where the clip is active: A > 0 above 1+ε, A < 0 below 1-ε
    flat = ratios > 1 + eps if advantage > 0 else ratios < 1 - eps
    grad = lp.grad[0]
    assert torch.all(grad[flat[0]] == 0)
    assert torch.all(grad[~flat[0]] != 0)
    # where it is not clipped, d loss / d logπ = -A * ratio / n
    torch.testing.assert_close(grad[~flat[0]], (-advantage * ratios[0] / ratios.numel())[~flat[0]])


def test_ppo_policy_loss_masked_positions_never_contribute():
    lp, old, adv, mask = _rand(2, 4), _rand(2, 4), _rand(2, 4), _right_padded_mask([4, 2], 4)
    lp2, adv2 = lp.clone(), adv.clone()
    lp2[mask == 0], adv2[mask == 0] = 30.0, 1e5
    l1, _ = adapters.run_ppo_policy_loss(lp, old, adv, mask, 0.2)
    l2, _ = adapters.run_ppo_policy_loss(lp2, old, adv2, mask, 0.2)
    torch.testing.assert_close(l1, l2)


# -----------------------------------------------------------------------------
# ppo_value_loss


def test_ppo_value_loss_hand_examples():
    z = torch.zeros(1, 2)
    loss, _ = adapters.run_ppo_value_loss(z, z, z, torch.ones(1, 2), 0.2)
    assert loss.item() == 0.0
    loss, _ = adapters.run_ppo_value_loss(z, z, torch.full((1, 2), 2.0), torch.ones(1, 2), 0.2)
    assert loss.item() == pytest.approx(2.0)
    # V moved 1.0 from V_old = 0 towards R = 1: clipped value 0.2 → max(0, 0.64) / 2 = 0.32
    loss, stats = adapters.run_ppo_value_loss(torch.ones(1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.2)
    assert loss.item() == pytest.approx(0.32)
    assert float(stats["vf_clipfrac"]) == 1.0


def test_ppo_value_loss_reference_and_gradcheck():
    eps = 0.3
    v, old, ret, mask = _rand(3, 5), _rand(3, 5), _rand(3, 5), _right_padded_mask([5, 3, 2], 5)
    loss, stats = adapters.run_ppo_value_loss(v, old, ret, mask, eps)
    terms = []
    for b, t in mask.nonzero().tolist():
        vc = old[b, t] + min(max(v[b, t] - old[b, t], -eps), eps)
        terms.append(0.5 * max((v[b, t] - ret[b, t]) ** 2, (vc - ret[b, t]) ** 2).item())
    assert loss.item() == pytest.approx(sum(terms) / len(terms), abs=1e-10)
    R, V = ret[mask.bool()], v[mask.bool()]
    ev = 1 - (R - V).var(unbiased=False) / R.var(unbiased=False)
    assert float(stats["explained_variance"]) == pytest.approx(ev.item(), abs=1e-8)
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: adapters.run_ppo_value_loss(x, old, ret, mask, eps)[0], (v,))


# -----------------------------------------------------------------------------
# dpo_loss


def test_dpo_loss_policy_equals_reference_is_ln2():
    pc, pr = _rand(6), _rand(6)
    loss, stats = adapters.run_dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    assert float(stats["chosen_reward"]) == 0.0 and float(stats["rejected_reward"]) == 0.0


def test_dpo_loss_reference_and_gradcheck():
    beta = 0.5
    pc, pr, rc, rr = _rand(5), _rand(5), _rand(5), _rand(5)
    loss, stats = adapters.run_dpo_loss(pc, pr, rc, rr, beta)
    logits = beta * ((pc - rc) - (pr - rr))
    ref = torch.log1p(torch.exp(-logits)).mean()
    torch.testing.assert_close(loss, ref)
    assert float(stats["accuracy"]) == pytest.approx((logits > 0).to(f64).mean().item())
    # DPO equals the pairwise RM loss on implicit rewards β log π/π_ref
    torch.testing.assert_close(loss, adapters.run_pairwise_reward_loss(beta * (pc - rc), beta * (pr - rr)))
    pc.requires_grad_(True), pr.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: adapters.run_dpo_loss(a, b, rc, rr, beta)[0], (pc, pr))


# -----------------------------------------------------------------------------
# AdaptiveKLController


def test_adaptive_kl_controller_by_hand():
    # KL = 12 vs target 6 → e = clip(1, ±0.2) = 0.2 → β = 0.1 * (1 + 0.2 * 1000/10000) = 0.102
    # then KL = 6.6 → e = 0.1 → β = 0.102 * (1 + 0.1 * 0.1) = 0.10302
    # then KL = 0 → e = -0.2 → β = 0.10302 * (1 - 0.02) = 0.1009596
    got = adapters.run_adaptive_kl_controller(0.1, 6.0, 10000, [(12.0, 1000), (6.6, 1000), (0.0, 1000)])
    assert got == pytest.approx([0.102, 0.10302, 0.1009596], abs=1e-12)


def test_adaptive_kl_controller_on_target_and_fixed():
    assert adapters.run_adaptive_kl_controller(0.2, 6.0, 100, [(6.0, 50)] * 3) == pytest.approx([0.2] * 3)
    assert adapters.run_adaptive_kl_controller(0.2, None, 100, [(60.0, 50)]) == [0.2]


# -----------------------------------------------------------------------------
# the exercise generator (tools/make_exercises.py)


def test_exercise_generator_blanks_solution_blocks(tmp_path):
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("make_exercises", os.path.join(root, "tools", "make_exercises.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = "def f(x):\n    '''doc'''\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\n"
    text, n = tool.blank_solutions(src)
    assert n == 1
    assert text == "def f(x):\n    '''doc'''\n    raise NotImplementedError(\"exercise: f\")\n"
    with pytest.raises(ValueError, match=":3:"):
        tool.blank_solutions("x = 1\n\n    # BEGIN SOLUTION\n")
    # every exercise in rlhf/losses.py has its marked block, and the blanked file still imports
    with open(os.path.join(root, "rlhf", "losses.py"), encoding="utf-8") as fh:
        source = fh.read()
    if tool.BEGIN not in source:
        pytest.skip("this is the student copy: its solutions are already blanked")
    text, n = tool.blank_solutions(source, "rlhf/losses.py")
    assert n == 13
    namespace = {}
    exec(compile(text, "student_losses.py", "exec"), namespace)
    with pytest.raises(NotImplementedError):
        namespace["masked_mean"](torch.ones(2), torch.ones(2))
