"""Evaluation statistics on synthetic inputs with known answers (rlhf/evaluate.py).

    python -m pytest tests/test_evaluate.py -q
"""

import math

import numpy as np
import pytest

from rlhf import evaluate as ev


# --- bootstrap CIs ----------------------------------------------------------------------------------

def test_bootstrap_ci_degenerate_cases():
    assert ev.bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    assert ev.bootstrap_ci([0.25]) == (0.25, 0.25, 0.25)
    assert all(math.isnan(v) for v in ev.bootstrap_ci([]))


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    x = np.random.default_rng(1).random(50)
    a = ev.bootstrap_ci(x, seed=3)
    assert a == ev.bootstrap_ci(x, seed=3)
    assert a[1] < a[0] < a[2]
    assert a[0] == pytest.approx(x.mean())


def test_bootstrap_ci_width_matches_normal_theory():
    # For n iid values the 95% interval of the mean is about mean ± 1.96 σ/√n.
    x = np.random.default_rng(2).normal(0.0, 1.0, size=400)
    _, lo, hi = ev.bootstrap_ci(x, n_boot=4000)
    expected = 2 * 1.96 * x.std() / math.sqrt(x.size)
    assert (hi - lo) == pytest.approx(expected, rel=0.1)


@pytest.mark.parametrize("dist", ["bernoulli", "uniform"])
def test_bootstrap_ci_covers_the_truth_about_95_percent_of_the_time(dist):
    rng = np.random.default_rng(0)
    truth = 0.3 if dist == "bernoulli" else 0.5
    reps, n, covered = 400, 80, 0
    for i in range(reps):
        x = (rng.random(n) < 0.3).astype(float) if dist == "bernoulli" else rng.random(n)
        _, lo, hi = ev.bootstrap_ci(x, n_boot=500, seed=i)
        covered += lo <= truth <= hi
    # Binomial(400, 0.95) has sd ≈ 4.4 draws (1.1%); the percentile bootstrap runs slightly narrow.
    assert 0.90 <= covered / reps <= 0.99


def test_paired_ci_is_narrower_than_the_unpaired_difference():
    rng = np.random.default_rng(4)
    prompt_difficulty = rng.random(200)                 # shared by both models
    a = prompt_difficulty + 0.05 + 0.02 * rng.standard_normal(200)
    b = prompt_difficulty + 0.02 * rng.standard_normal(200)
    diff, lo, hi = ev.paired_bootstrap_ci(a, b)
    assert diff == pytest.approx(np.mean(a - b))
    assert lo > 0                                        # the +0.05 shift is detected
    _, alo, ahi = ev.bootstrap_ci(a)
    assert hi - lo < 0.25 * (ahi - alo)


def test_paired_ci_rejects_unequal_lengths():
    with pytest.raises(ValueError):
        ev.paired_bootstrap_ci([1, 2], [1])


# --- win rates ---------------------------------------------------------------------------------------

def test_win_rates_hand_worked_example():
    # prompt:   1     2     3     4     5     6
    a = [1.0, 0.5, 0.0, 1.0, 0.2, 0.7]
    b = [0.0, 0.5, 1.0, 0.5, 0.2, 0.7]
    #         win   tie  loss   win   tie   tie
    r = ev.win_rates(a, b)
    assert (r["n"], r["wins"], r["ties"], r["losses"]) == (6, 2, 3, 1)
    assert r["win_rate"] == pytest.approx(2 / 3)           # ties left out
    assert r["win_rate_half"] == pytest.approx((2 + 1.5) / 6)  # ties count half
    assert r["tie_rate"] == pytest.approx(0.5)
    lo, hi = r["win_rate_half_ci"]
    assert lo <= r["win_rate_half"] <= hi


def test_win_rates_all_ties_and_symmetry():
    r = ev.win_rates([0.3] * 5, [0.3] * 5)
    assert (r["wins"], r["ties"], r["losses"]) == (0, 5, 0)
    assert r["win_rate"] == 0.5 and r["win_rate_half"] == 0.5
    a = np.random.default_rng(5).random(30).round(1)
    b = np.random.default_rng(6).random(30).round(1)
    ab, ba = ev.win_rates(a, b), ev.win_rates(b, a)
    assert (ab["wins"], ab["ties"], ab["losses"]) == (ba["losses"], ba["ties"], ba["wins"])
    assert ab["win_rate_half"] + ba["win_rate_half"] == pytest.approx(1.0)


def test_win_rates_tolerance_treats_float_noise_as_a_tie():
    r = ev.win_rates([0.1 + 0.2], [0.3])                   # 0.30000000000000004 vs 0.3
    assert r["ties"] == 1


# --- aggregation -------------------------------------------------------------------------------------

def test_group_means_and_response_stats():
    g = ev.group_means([1.0, 0.0, 0.5, 0.25], ["x", "y", "x", "y"])
    assert list(g) == ["x", "y"]
    assert g["x"]["mean"] == pytest.approx(0.75) and g["x"]["n"] == 2
    assert g["y"]["mean"] == pytest.approx(0.125)
    s = ev.response_stats([4, 6, 8, 10], [True, False, True, True])
    assert s == {"mean_tokens": 7.0, "stop_rate": 0.75}


def _rows(golds, fam, h, rm=None):
    return [{"id": f"p{i}", "gold": g, "family": fam[i], "h": h[i], "n_tokens": 5 + i, "stopped": i % 2 == 0,
             "rm": None if rm is None else rm[i]} for i, g in enumerate(golds)]


def test_summarize_and_compare_rows():
    fam = ["add", "add", "rev", "rev"]
    h = ["helpful", "helpful", "honest", "honest"]
    a = _rows([1.0, 0.0, 1.0, 0.5], fam, h, rm=[2.0, -1.0, 1.0, 0.0])
    b = _rows([0.0, 0.0, 1.0, 1.0], fam, h, rm=[1.0, -1.0, 0.5, 0.5])
    s = ev.summarize(a)
    assert s["gold_score"] == pytest.approx(0.625) and s["n"] == 4
    assert s["per_family"] == {"add": 0.5, "rev": 0.75}
    assert s["per_h"] == {"helpful": 0.5, "honest": 0.75}
    assert s["stop_rate"] == 0.5 and s["mean_tokens"] == 6.5
    assert s["rm_score"] == pytest.approx(0.5)
    c = ev.compare_rows(a, list(reversed(b)))              # matched by id, not by position
    assert (c["gold"]["wins"], c["gold"]["ties"], c["gold"]["losses"]) == (1, 2, 1)
    assert (c["rm"]["wins"], c["rm"]["ties"], c["rm"]["losses"]) == (2, 1, 1)
    assert c["gold_diff"]["mean"] == pytest.approx(0.125)
