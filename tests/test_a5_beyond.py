"""Graded tests of assignment 5 (beyond PPO): exercises/a5_beyond.md.

    python tools/grade.py --assignment a5
    python -m pytest tests/test_a5_beyond.py -k dpo
"""

import math

import pytest
import torch

from tests import adapters
from tests.grading import case, expect, expect_close, expect_on_inputs_device, on_meta

f64 = torch.float64


# ---------------------------------------------------------------------------------------------------- §2


@pytest.mark.exercise("a5.dpo_loss")
def test_dpo_loss_policy_equals_reference_is_ln2():
    pc, pr = torch.randn(6, dtype=f64), torch.randn(6, dtype=f64)
    loss, stats = adapters.run_dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=0.1)
    expect_close(loss, torch.tensor(math.log(2), dtype=f64), "the DPO loss when the policy is the reference",
                 "a5.dpo_loss", hint="every implicit reward β log π/π_ref is 0 then, so the loss is -log σ(0)")
    expect(float(stats["chosen_reward"]) == 0.0 and float(stats["rejected_reward"]) == 0.0,
           "implicit rewards must be 0 when the policy is the reference", "a5.dpo_loss")
    expect(float(stats["accuracy"]) == 0.0, f"accuracy must be 0 when every pair ties (chosen reward must be "
           f"strictly higher), got {float(stats['accuracy'])}", "a5.dpo_loss")


@pytest.mark.exercise("a5.dpo_loss")
def test_dpo_loss_stored_values():
    inputs, (loss_expected, stats_expected) = case("a5", "dpo_loss")
    loss, stats = adapters.run_dpo_loss(**inputs)
    expect_close(loss, loss_expected, "the DPO loss", "a5.dpo_loss",
                 hint="-mean log σ(β[(log π_w - log π_ref,w) - (log π_l - log π_ref,l)]): β multiplies the "
                      "difference, and both log-ratios are against the reference")
    for key in ("chosen_reward", "rejected_reward", "accuracy"):
        expect_close(stats[key], stats_expected[key], f"stats[{key!r}]", "a5.dpo_loss")


@pytest.mark.exercise("a5.dpo_loss")
def test_dpo_loss_gradcheck():
    pc, pr = torch.randn(5, dtype=f64, requires_grad=True), torch.randn(5, dtype=f64, requires_grad=True)
    rc, rr = torch.randn(5, dtype=f64), torch.randn(5, dtype=f64)
    expect(torch.autograd.gradcheck(lambda a, b: adapters.run_dpo_loss(a, b, rc, rr, 0.5)[0], (pc, pr)),
           "the gradient of dpo_loss is wrong", "a5.dpo_loss")


# ---------------------------------------------------------------------------------------------------- §3


@pytest.mark.exercise("a5.group_advantages")
def test_group_advantages_hand_example():
    got = adapters.run_group_advantages(torch.tensor([1.0, 3.0, 5.0, 5.0]), 2)
    expect_close(got, torch.tensor([-1.0, 1.0, 0.0, 0.0]), "advantages of groups [1, 3] and [5, 5]",
                 "a5.group_advantages", atol=1e-3,
                 hint="normalise within each group of G consecutive rows; a tied group gets exactly 0")
    tied = adapters.run_group_advantages(torch.tensor([0.9, 0.9, 0.9, 0.2, 0.5, 0.9]), 3)
    expect(bool(torch.all(tied[:3] == 0)), f"a tied group [0.9, 0.9, 0.9] must get exactly 0, got {tied[:3].tolist()}: "
           "its mean is not exactly 0.9 in float32, so detect ties explicitly", "a5.group_advantages")


@pytest.mark.exercise("a5.group_advantages")
def test_group_advantages_keep_to_the_rewards_device():
    expect_on_inputs_device(lambda: adapters.run_group_advantages(on_meta(torch.zeros(6)), 3), "advantages",
                            "a5.group_advantages")


@pytest.mark.exercise("a5.group_advantages")
def test_group_advantages_stored_values():
    inputs, expected = case("a5", "group_advantages")
    got = adapters.run_group_advantages(**inputs)
    expect(bool(torch.all(got[-4:] == 0)), "a group whose rewards are all equal must get advantages exactly 0 "
           f"(got {got[-4:].tolist()})", "a5.group_advantages")
    expect_close(got, expected, "group advantages (G = 4)", "a5.group_advantages", atol=1e-5,
                 hint="(r - group mean) / (group std + eps) with the POPULATION std (correction=0)")


@pytest.mark.exercise("a5.kl_k3")
def test_kl_k3_values_and_sign():
    got = adapters.run_kl_k3(torch.tensor([0.0, 0.0]), torch.tensor([0.0, math.log(2)]))
    expect_close(got, torch.tensor([0.0, 2 - math.log(2) - 1]), "k3 for d = 0 and d = ln 2", "a5.kl_k3",
                 hint="d = log π_ref - log π; k3 = exp(d) - d - 1")
    inputs, expected = case("a5", "kl_k3")
    got = adapters.run_kl_k3(**inputs)
    expect(bool(torch.all(got >= 0)), "k3 must be >= 0 on every token", "a5.kl_k3")
    expect_close(got, expected, "k3 per token", "a5.kl_k3", dims="b, t")


# ---------------------------------------------------------------------------------------------------- §1


@pytest.mark.exercise("a5.sequence_logprobs")
def test_sequence_logprobs_sum_over_response_tokens_only():
    from tests.snapshot_cases import TableModel
    inputs, expected = case("a5", "sequence_logprobs")
    got = adapters.run_sequence_logprobs(TableModel(13, 8, 13, seed=6), **inputs)
    expect_close(got, expected, "summed response log-probs (τ = 0.7)", "a5.sequence_logprobs", atol=1e-6, dims="b",
                 hint="log-probs of idx[:, t+1] from the logits at t (response_logprobs with the prompt boundary at "
                      "column 1), summed where response_mask[:, t+1] = 1: prompt and padding tokens count nothing")


# ---------------------------------------------------------------------------------------------------- §4


@pytest.mark.exercise("a5.best_of_n")
def test_pick_best_among_the_first_n():
    scores = torch.tensor([[0.0, 2.0, 5.0], [3.0, 1.0, 9.0]])
    got = adapters.run_pick_best(scores, 2)
    expect(got.tolist() == [1, 0], f"pick_best(scores, n=2) gave {got.tolist()}, expected [1, 0]: the third column "
           "is not a candidate when N = 2", "a5.best_of_n")
    expect(adapters.run_pick_best(scores, 3).tolist() == [2, 2], "with n = 3 every column is a candidate",
           "a5.best_of_n")


@pytest.mark.exercise("a5.best_of_n_kl")
def test_best_of_n_kl_bound():
    for n, want in ((1, 0.0), (2, math.log(2) - 0.5), (4, math.log(4) - 0.75), (16, math.log(16) - 15 / 16)):
        got = adapters.run_best_of_n_kl(n)
        expect(abs(got - want) < 1e-12, f"KL bound of best-of-{n}: got {got:.6g}, expected {want:.6g} "
               "(log N - (N - 1) / N)", "a5.best_of_n_kl")
