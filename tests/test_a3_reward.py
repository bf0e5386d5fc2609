"""Graded tests of assignment 3 (the reward model): exercises/a3_reward.md.

    python tools/grade.py --assignment a3
    python -m pytest tests/test_a3_reward.py -k ranked
"""

import math
import random

import pytest
import torch

from tests import adapters
from tests.grading import case, expect, expect_close, expect_on_inputs_device, on_meta

f64 = torch.float64


# ---------------------------------------------------------------------------------------------------- §2


@pytest.mark.exercise("a3.pairwise_loss")
def test_pairwise_reward_loss_hand_values():
    r = torch.tensor([0.3, -1.0, 7.0], dtype=f64)
    expect_close(adapters.run_pairwise_reward_loss(r, r.clone()), torch.tensor(math.log(2), dtype=f64),
                 "the loss of tied rewards", "a3.pairwise_loss", hint="-log σ(0) = ln 2")
    got = adapters.run_pairwise_reward_loss(torch.tensor([2.0], dtype=f64), torch.tensor([0.0], dtype=f64))
    expect_close(got, torch.tensor(math.log(1 + math.exp(-2)), dtype=f64), "the loss for r_chosen - r_rejected = 2",
                 "a3.pairwise_loss", hint="L = -log σ(r_chosen - r_rejected); check which reward is subtracted")


@pytest.mark.exercise("a3.pairwise_loss")
@pytest.mark.parametrize("name", ["pairwise/plain", "pairwise/margin"])
def test_pairwise_reward_loss_stored_values(name):
    inputs, expected = case("a3", name)
    expect_close(adapters.run_pairwise_reward_loss(**inputs), expected, f"the loss ({name})", "a3.pairwise_loss",
                 hint="the mean over comparisons of -log σ(r_chosen - r_rejected - margin); use logsigmoid")
    if "margin" in inputs:
        as_float = adapters.run_pairwise_reward_loss(inputs["chosen"], inputs["rejected"], margin=0.5)
        as_tensor = adapters.run_pairwise_reward_loss(inputs["chosen"], inputs["rejected"],
                                                      margin=torch.full((8,), 0.5, dtype=f64))
        expect_close(as_float, as_tensor, "the loss with margin=0.5 (a float)", "a3.pairwise_loss",
                     hint="a float margin is the same margin for every comparison")


@pytest.mark.exercise("a3.pairwise_loss")
def test_pairwise_reward_loss_gradcheck():
    c, r = torch.randn(5, dtype=f64, requires_grad=True), torch.randn(5, dtype=f64, requires_grad=True)
    expect(torch.autograd.gradcheck(adapters.run_pairwise_reward_loss, (c, r)),
           "the gradient of pairwise_reward_loss is wrong", "a3.pairwise_loss")


# ---------------------------------------------------------------------------------------------------- §3


@pytest.mark.exercise("a3.ranked_loss")
def test_ranked_reward_loss_hand_example():
    got = adapters.run_ranked_reward_loss(torch.tensor([[2.0, 1.0, 0.0]], dtype=f64))
    want = (2 * math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 3
    expect_close(got, torch.tensor(want, dtype=f64), "the loss of one ranking [2, 1, 0] (best first)",
                 "a3.ranked_loss", hint="three pairs i < j, each -log σ(r_i - r_j), averaged")


@pytest.mark.exercise("a3.ranked_loss")
def test_ranked_reward_loss_every_pair_of_a_full_ranking():
    inputs, expected = case("a3", "ranked/full_k5")
    expect_close(adapters.run_ranked_reward_loss(**inputs), expected, "the loss of three full rankings of K = 5",
                 "a3.ranked_loss", hint="all C(5, 2) = 10 pairs i < j of each row: response i is ranked above j")


@pytest.mark.exercise("a3.ranked_loss")
def test_ranked_reward_loss_pair_mask_and_reductions():
    inputs, expected = case("a3", "ranked/masked_prompt")
    expect_close(adapters.run_ranked_reward_loss(**inputs), expected,
                 "the loss with a pair_mask (ties, padding, a prompt with one pair), reduction='prompt'",
                 "a3.ranked_loss", hint="eq. 1: the mean of each prompt's kept pairs, then the mean over prompts, so a "
                                        "prompt with 1 kept pair weighs as much as one with 5")
    inputs, expected = case("a3", "ranked/masked_pair")
    expect_close(adapters.run_ranked_reward_loss(**inputs), expected, "the loss with reduction='pair'",
                 "a3.ranked_loss", hint="one mean over every kept pair of the batch")
    inputs, expected = case("a3", "ranked/masked_prompt")
    inputs["pair_mask"][0, 3, 0] = 1.0      # below the diagonal: must be ignored
    inputs["rewards"][1, 3] = 1e4          # a padding slot: must not matter
    expect_close(adapters.run_ranked_reward_loss(**inputs), expected,
                 "the loss after changing a padding reward and a below-diagonal mask entry", "a3.ranked_loss",
                 hint="only entries [p, i, j] with i < j and pair_mask 1 count")


@pytest.mark.exercise("a3.ranked_loss")
def test_ranked_reward_loss_keeps_to_the_rewards_device():
    expect_on_inputs_device(lambda: adapters.run_ranked_reward_loss(on_meta(torch.zeros(3, 4))), "the loss",
                            "a3.ranked_loss")


@pytest.mark.exercise("a3.ranked_loss")
def test_ranked_reward_loss_gradcheck_and_no_pairs():
    rewards = torch.randn(2, 4, dtype=f64, requires_grad=True)
    mask = torch.ones(2, 4, 4, dtype=f64)
    mask[1, 1, 2] = 0.0
    expect(torch.autograd.gradcheck(lambda r: adapters.run_ranked_reward_loss(r, mask), (rewards,)),
           "the gradient of ranked_reward_loss is wrong", "a3.ranked_loss")
    only_first = mask.clone()
    only_first[1] = 0.0                                            # prompt 1 keeps no pair: it must not count
    expect_close(adapters.run_ranked_reward_loss(rewards.detach(), only_first),
                 adapters.run_ranked_reward_loss(rewards.detach()[:1], mask[:1]),
                 "the loss when the second prompt keeps no pair", "a3.ranked_loss",
                 hint="average over the prompts that keep at least one pair")
    none = adapters.run_ranked_reward_loss(rewards.detach(), torch.zeros(2, 4, 4, dtype=f64))
    expect(torch.isfinite(none).item() and none.item() == 0.0, f"with no kept pair the loss must be 0, got {none.item()}"
           " (divide by the count clamped to at least 1)", "a3.ranked_loss")


# ---------------------------------------------------------------------------------------------------- §1


@pytest.mark.exercise("a3.last_token_values")
def test_last_token_values_keep_to_the_inputs_device():
    inputs, _ = case("a3", "last_token_values")
    expect_on_inputs_device(lambda: adapters.run_last_token_values(on_meta(inputs["values"]),
                                                                   on_meta(inputs["attention_mask"])),
                            "rewards read at the last real token", "a3.last_token_values")


@pytest.mark.exercise("a3.last_token_values")
def test_last_token_values_right_left_and_both_paddings():
    inputs, expected = case("a3", "last_token_values")
    got = adapters.run_last_token_values(**inputs)
    expect_close(got, expected, "rewards read at the last real token", "a3.last_token_values", dims="b",
                 hint="rows are right-padded, left-padded or both: take the LARGEST t with attention_mask = 1, "
                      "not column T-1 and not the number of real tokens minus 1")


# ---------------------------------------------------------------------------------------------------- §4


@pytest.mark.exercise("a3.pair_mask")
def test_pair_mask_ties_duplicates_and_padding():
    got = adapters.run_pair_mask([0, 1, 1, 2], ["a", "b", "c", "a"], K=5)
    want = torch.zeros(5, 5)
    for i, j in [(0, 1), (0, 2), (1, 3), (2, 3)]:
        want[i, j] = 1.0
    bad = (got != want).nonzero().tolist()
    expect(not bad, f"pair mask entries {bad} are wrong; for ranks [0, 1, 1, 2] and texts [a, b, c, a] the kept "
           "pairs are (0,1) (0,2) (1,3) (2,3): ties (1,2) carry no loss, identical texts (0,3) are no comparison, "
           "and column 4 is padding", "a3.pair_mask")


# ---------------------------------------------------------------------------------------------------- §5


@pytest.mark.exercise("a3.rm_loss")
def test_rm_loss_stored_loss_and_accuracy():
    from tests.snapshot_cases import TableModel
    inputs, (loss_expected, stats_expected) = case("a3", "rm_loss")
    loss, stats = adapters.run_rm_loss(TableModel(11, 8, 1, seed=5), inputs["batch"])
    expect_close(loss, loss_expected, "the RM loss of a batch of 3 prompts x 4 responses", "a3.rm_loss",
                 hint="flatten (P, K, T) to (P*K, T) for one forward pass, read each row at its last real token, "
                      "reshape the rewards to (P, K) and hand them to ranked_reward_loss with the pair mask")
    expect_close(stats["accuracy"], stats_expected["accuracy"], "stats['accuracy']", "a3.rm_loss",
                 hint="the share of kept pairs with r_i > r_j (a tie counts 1/2)")

    class Constant(torch.nn.Module):
        def forward(self, idx, attention_mask=None):
            return torch.zeros(idx.shape, dtype=f64)
    one_pair = {"idx": torch.zeros(1, 2, 3, dtype=torch.long), "attention_mask": torch.ones(1, 2, 3, dtype=torch.long),
                "pair_mask": torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])}
    _, stats = adapters.run_rm_loss(Constant(), one_pair)
    expect(abs(float(stats["accuracy"]) - 0.5) < 1e-9, f"one tied pair must give accuracy 0.5, got "
           f"{float(stats['accuracy'])} (a tie counts 1/2; divide by the number of kept pairs)", "a3.rm_loss")


# ---------------------------------------------------------------------------------------------------- §6
def _win_rates(scores, temperature, n=20_000, seed=0):
    """How often each response has the highest utility, over n independent labelers' draws."""
    rng = random.Random(seed)
    wins = [0] * len(scores)
    for _ in range(n):
        u = adapters.run_labeler(list(scores), temperature, rng)
        wins[max(range(len(u)), key=u.__getitem__)] += 1
    return [w / n for w in wins]


@pytest.mark.exercise("a3.labeler")
def test_labeler_without_noise_returns_the_scores():
    for t in (0.0, -1.0):
        got = adapters.run_labeler([0.3, 1.0, 0.0], t, random.Random(0))
        expect(list(got) == [0.3, 1.0, 0.0],
               f"temperature {t}: a noiseless labeler's utilities are the scores [0.3, 1.0, 0.0]; got {got}",
               "a3.labeler")


@pytest.mark.exercise("a3.labeler")
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_labeler_pair_choice_is_bradley_terry(temperature):
    scores = [1.0, 0.5]
    want = 1 / (1 + math.exp(-(scores[0] - scores[1]) / temperature))
    got = _win_rates(scores, temperature)[0]
    expect(abs(got - want) < 0.015,
           f"scores {scores} at temperature {temperature}: the first response should win "
           f"sigma((s_i - s_j) / T) = {want:.3f} of the time; it won {got:.3f} over 20,000 draws "
           f"(Gaussian noise gives a probit, a temperature on the wrong side changes the slope)", "a3.labeler")


@pytest.mark.exercise("a3.labeler")
def test_labeler_best_of_three_follows_softmax():
    scores, temperature = [0.0, 0.4, 1.0], 0.25
    z = [math.exp(s / temperature) for s in scores]
    want = [v / sum(z) for v in z]
    got = _win_rates(scores, temperature)
    bad = [i for i in range(3) if abs(got[i] - want[i]) >= 0.015]
    expect(not bad, f"scores {scores} at temperature {temperature}: each response should be the labeler's "
                    f"first choice with probability softmax(s / T) = {[round(w, 3) for w in want]}; measured "
                    f"{[round(g, 3) for g in got]} (each response needs its own noise draw)", "a3.labeler")


@pytest.mark.exercise("a3.labeler")
def test_labeler_noise_comes_from_the_rng_it_is_given():
    a = adapters.run_labeler([0.5, 0.5, 0.5], 1.0, random.Random(7))
    b = adapters.run_labeler([0.5, 0.5, 0.5], 1.0, random.Random(7))
    expect(list(a) == list(b), "the same rng seed must give the same utilities: draw the noise from `rng` "
                               "(rng.random()), not from the global random module or torch", "a3.labeler")
    expect(len(set(a)) == 3, f"equal scores at temperature 1 got utilities {a}: each response needs its own "
                             "noise draw", "a3.labeler")
