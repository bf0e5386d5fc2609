"""Tests for rlhf/best_of_n.py: the analytic KL against an exact computation, the pick, a tiny smoke run.

    python -m pytest tests/test_best_of_n.py -q
"""

import json
import math
import os
from dataclasses import replace

import pytest
import torch

from minigpt import GPT
from minigpt import checkpoint as ckpt_io
from minigpt.config import model_preset
from rlhf import best_of_n as bon
from rlhf.reward import RewardModel


def test_analytic_kl_values():
    assert bon.best_of_n_kl(1) == 0.0
    assert math.isclose(bon.best_of_n_kl(2), math.log(2) - 0.5)
    assert math.isclose(bon.best_of_n_kl(4), 0.6363, abs_tol=1e-4)
    for kl in (0.3, 1.0, 4.0):
        assert math.isclose(bon.best_of_n_kl(bon.n_for_kl(kl)), kl, abs_tol=1e-9)   # n_for_kl inverts it
    with pytest.raises(ValueError):
        bon.best_of_n_kl(0)


@pytest.mark.parametrize("n", [2, 4, 16])
def test_analytic_kl_matches_the_exact_kl_of_picking_the_best(n):
    """K equally likely outcomes with distinct rewards: the best of n draws is outcome i (ranked by reward)
    with probability (i/K)^n - ((i-1)/K)^n; its exact KL to the uniform policy tends to log n - (n-1)/n."""
    K = 100_000
    i = torch.arange(1, K + 1, dtype=torch.float64)
    p = (i / K) ** n - ((i - 1) / K) ** n                                  # best-of-n distribution
    q = 1.0 / K
    exact = float((p * torch.log(p / q)).sum())
    assert math.isclose(exact, bon.best_of_n_kl(n), abs_tol=2e-3)


def test_gold_at_kl_interpolates_between_ns_and_never_extrapolates():
    curve = [{"kl": bon.best_of_n_kl(n), "gold": g} for n, g in ((1, 0.2), (2, 0.3), (4, 0.4))]
    assert bon.gold_at_kl(curve, 0.0) == 0.2
    assert math.isclose(bon.gold_at_kl(curve, bon.best_of_n_kl(4)), 0.4)
    mid = (bon.best_of_n_kl(2) + bon.best_of_n_kl(4)) / 2
    assert math.isclose(bon.gold_at_kl(curve, mid), 0.35)              # halfway in KL, halfway in gold
    assert bon.gold_at_kl(curve, 0.7) is None                           # beyond best-of-4's KL (0.636)


def test_pick_best_hand_example():
    s = torch.tensor([[0.0, 2.0, 5.0], [3.0, 1.0, 9.0]])
    assert bon.pick_best(s, 2).tolist() == [1, 0]
    assert bon.pick_best(s, 3).tolist() == [2, 2]
    assert bon.pick_best(s, 1).tolist() == [0, 0]


def test_tiny_preset_run(tmp_path):
    from minigpt.tokenizer import train_bpe
    tok = train_bpe("What is 3 plus 4? 7. Reverse the word cat. tac. " * 8, vocab_size=256 + 20 + 6)
    torch.manual_seed(0)
    gpt = GPT(model_preset("tiny", vocab_size=tok.vocab_size))
    with torch.no_grad():
        gpt.transformer.wte.weight.mul_(4.0)
    rm = RewardModel(model_preset("tiny", vocab_size=tok.vocab_size))
    with torch.no_grad():
        rm.head.weight.normal_(0.0, 0.5)
    ckpt_io.save_model(tmp_path / "sft", gpt, tok)
    rm.save(str(tmp_path / "rm"), tok)
    cfg = replace(bon.BestOfNConfig(), **{**bon.PRESETS["tiny"], "sft_dir": str(tmp_path / "sft"),
                  "rm_dir": str(tmp_path / "rm"), "out_dir": str(tmp_path / "bon"), "no_stop_reward": None,
                  "ppo_dir": str(tmp_path / "sft")})   # "PPO" = the SFT policy itself: KL 0
    result = bon.run_best_of_n(cfg)
    rows = result["rows"]
    assert [r["n"] for r in rows] == [1, 2, 4]
    rms = [r["rm"] for r in rows]
    assert rms[0] <= rms[1] <= rms[2] and rms[2] > rms[0]          # the max over nested candidate sets grows
    assert all(0.0 <= r["gold"] <= r["oracle_gold"] + 1e-9 <= 1.0 + 1e-9 for r in rows)
    saved = json.load(open(tmp_path / "bon" / "best_of_n.json", encoding="utf-8"))
    assert saved["rows"][1]["kl"] == pytest.approx(math.log(2) - 0.5)
    assert os.path.exists(tmp_path / "bon" / "best_of_n.png")
    assert abs(result["ppo"]["kl"]) < 1e-4 and result["ppo"]["matched_n"] == pytest.approx(1.0, abs=1e-3)
    assert 0.0 <= result["ppo"]["gold"] <= 1.0
