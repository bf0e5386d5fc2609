"""Tests for rlhf/grpo.py: group advantages and RLOO's leave-one-out ones, the k3 KL estimator, the rollout's groups, the loss on the
first minibatch, a toy reward GRPO must learn ("stop quickly"), and tiny-preset runs (resume, --baseline=rloo).

    python -m pytest tests/test_grpo.py -q
"""

import json
import os
import re
from dataclasses import replace

import pytest
import torch

from minigpt import GPT
from minigpt import checkpoint as ckpt_io
from minigpt.trainer import read_metrics
from rlhf import data as D
from rlhf import grpo
from rlhf.gold import GoldEvaluator
from tests.tiny_rl import convs_of, prompts_of, tiny_gpt, tiny_rm  # and the `tok` fixture of conftest.py

# ---------------------------------------------------------------- the formulas

def test_group_advantages_hand_example():
    adv = grpo.group_advantages(torch.tensor([1.0, 3.0, 5.0, 5.0]), group_size=2, eps=0.0)
    assert adv.tolist() == [-1.0, 1.0, 0.0, 0.0]        # group 1: mean 2, std 1; group 2 ties


def test_group_advantages_mean_zero_per_group_and_zero_on_ties():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(6 * 5, generator=g)
    r[10:15] = 0.1                                          # a tied group (0.1 is not exact in binary)
    adv = grpo.group_advantages(r, group_size=5).view(6, 5)
    assert torch.allclose(adv.mean(1), torch.zeros(6), atol=1e-6)
    assert torch.equal(adv[2], torch.zeros(5))             # exactly zero, no rounding noise
    others = adv[[0, 1, 3, 4, 5]]
    assert torch.allclose(others.std(1, correction=0), torch.ones(5), atol=1e-3)   # unit population std
    # invariant to shifting and scaling the rewards (only the ranking within a group matters)
    assert torch.allclose(grpo.group_advantages(3 * r + 7, 5).view(6, 5), adv, atol=1e-3)


def test_rloo_advantages_hand_example():
    # k = 3, two groups. Group 1 [1, 2, 6]: 1 - (2+6)/2 = -3, 2 - (1+6)/2 = -1.5, 6 - (1+2)/2 = 4.5.
    # Group 2 [0, 4, 4]: 0 - (4+4)/2 = -4, 4 - (0+4)/2 = 2, 4 - (0+4)/2 = 2.
    adv = grpo.rloo_advantages(torch.tensor([1.0, 2.0, 6.0, 0.0, 4.0, 4.0]), group_size=3)
    assert adv.tolist() == [-3.0, -1.5, 4.5, -4.0, 2.0, 2.0]
    # k = 2: each sample's baseline is the other one; a tied group gets 0
    assert grpo.rloo_advantages(torch.tensor([1.0, 3.0, 5.0, 5.0]), 2).tolist() == [-2.0, 2.0, 0.0, 0.0]


def test_rloo_advantages_are_k_over_k_minus_1_times_the_centred_reward_and_sum_to_zero():
    g = torch.Generator().manual_seed(0)
    k = 5
    r = torch.randn(6 * k, generator=g)
    r[10:15] = 0.1                                          # a tied group (0.1 is not exact in binary)
    adv = grpo.rloo_advantages(r, group_size=k).view(6, k)
    rg = r.view(6, k)
    assert torch.allclose(adv, k / (k - 1) * (rg - rg.mean(1, keepdim=True)), atol=1e-6)
    assert torch.allclose(adv.sum(1), torch.zeros(6), atol=1e-5)
    assert torch.equal(adv[2], torch.zeros(k))             # exactly zero on a tie, no rounding noise
    # no std division: scaling the rewards scales the advantages (GRPO's would not change)
    assert torch.allclose(grpo.rloo_advantages(3 * r + 7, k).view(6, k), 3 * adv, atol=1e-5)


def test_rloo_advantages_reject_a_group_of_one():
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        grpo.rloo_advantages(torch.tensor([1.0, 2.0]), group_size=1)


def test_k3_is_nonnegative_and_its_expectation_is_the_exact_kl():
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(4, 7, generator=g), -1)       # π, 4 distributions over 7 tokens
    logq = torch.log_softmax(torch.randn(4, 7, generator=g), -1)       # π_ref
    k3 = grpo.kl_k3(logp, logq)                                        # one value per token
    assert (k3 >= 0).all()
    expectation = (logp.exp() * k3).sum(-1)                            # E_{y ~ π}[k3(y)]
    exact = (logp.exp() * (logp - logq)).sum(-1)                       # KL(π || π_ref)
    assert torch.allclose(expectation, exact, atol=1e-5)
    assert grpo.kl_k3(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0.0


# ---------------------------------------------------------------- rollout and loss

class LengthScorer:
    """A toy reward function: minus the number of real tokens, so within a group (same prompt) shorter
    responses score higher: "stop quickly". Called as reward_fn(conversations, samples)."""

    def __call__(self, conversations, samples):
        return -samples.attention_mask.sum(1).float()


def stop_prone_gpt(vocab_size, stop_id, p_stop=0.2, seed=0):
    """A tiny GPT that says <|end|> with probability p_stop at every step, every other token uniformly:
    every hidden state is u = e_0 (LayerNorm gain 0, bias u), and with the tied head logit_v = wte[v] . u,
    only wte[stop, 0] = log(p/(1-p) (V-1)) is non-zero. Training brings the context back (the gain gets
    gradients)."""
    m = tiny_gpt(vocab_size, seed)
    with torch.no_grad():
        u = torch.zeros(m.config.n_embd)
        u[0] = 1.0
        m.transformer.ln_f.weight.zero_()
        m.transformer.ln_f.bias.copy_(u)
        m.transformer.wte.weight.zero_()
        m.transformer.wte.weight[stop_id, 0] = torch.log(torch.tensor(p_stop / (1 - p_stop) * (vocab_size - 1)))
    return m.eval()


def cfg_for(**kw):
    base = dict(grpo.PRESETS["tiny"], progress=False, no_stop_reward=None, max_new_tokens=8, group_size=4,
                micro_batch_size=8)
    base.update(kw)
    return replace(grpo.GRPOConfig(), **base)


def test_rollout_groups_share_a_prompt_and_advantages_center_each_group(tok):
    stop = D.stop_token_id(tok)
    policy = stop_prone_gpt(tok.vocab_size, stop)
    cfg = cfg_for()
    prompts = prompts_of(tok, 3)
    ro = grpo.collect_groups(policy, policy, LengthScorer(), convs_of(3), prompts, cfg, stop, D.pad_token_id(tok),
                             torch.Generator().manual_seed(0))
    G, P = cfg.group_size, ro.prompt_length
    assert ro.sequences.shape[0] == 3 * G
    for b, p in enumerate(prompts):
        for i in range(b * G, (b + 1) * G):
            real = ro.sequences[i, :P][ro.attention_mask[i, :P].bool()].tolist()
            assert real == p
    assert torch.allclose(ro.advantages.view(3, G).sum(1), torch.zeros(3), atol=1e-5)
    # shorter within a group -> higher advantage
    lengths = ro.response_mask.sum(1).view(3, G)
    adv = ro.advantages.view(3, G)
    for b in range(3):
        i, j = lengths[b].argmin(), lengths[b].argmax()
        if lengths[b, i] < lengths[b, j]:
            assert adv[b, i] > adv[b, j]
    assert ro.stopped.any() and not ro.stopped.all()
    # reference == policy: every log-ratio and the k3 KL are 0
    assert torch.allclose(ro.logprobs, ro.ref_logprobs)
    assert grpo.rollout_stats(ro, G)["kl"] == pytest.approx(0.0, abs=1e-6)


def test_rollout_advantages_follow_the_baseline(tok):
    """The same rollout (same seed) gives GRPO's advantages by default and RLOO's with baseline="rloo"."""
    stop, pad = D.stop_token_id(tok), D.pad_token_id(tok)
    policy = stop_prone_gpt(tok.vocab_size, stop)
    rows = {}
    for baseline in ("group", "rloo"):
        rows[baseline] = grpo.collect_groups(policy, policy, LengthScorer(), convs_of(3), prompts_of(tok, 3),
                                             cfg_for(baseline=baseline), stop, pad, torch.Generator().manual_seed(0))
    group, rloo = rows["group"], rows["rloo"]
    assert torch.equal(group.rewards, rloo.rewards)                              # same samples
    assert torch.equal(group.advantages, grpo.group_advantages(group.rewards, 4, cfg_for().adv_eps))
    assert torch.equal(rloo.advantages, grpo.rloo_advantages(rloo.rewards, 4))
    assert not torch.allclose(group.advantages, rloo.advantages)
    with pytest.raises(ValueError, match="baseline must be one of group, rloo"):
        grpo.compute_advantages(group.rewards, cfg_for(baseline="ppo"))


def test_first_minibatch_ratio_is_one_and_loss_is_minus_mean_advantage(tok):
    stop = D.stop_token_id(tok)
    policy = stop_prone_gpt(tok.vocab_size, stop)
    cfg = cfg_for(beta=0.5)
    ro = grpo.collect_groups(policy, policy, LengthScorer(), convs_of(2), prompts_of(tok, 2), cfg, stop,
                             D.pad_token_id(tok), torch.Generator().manual_seed(1))
    batch = ro.select(torch.arange(ro.sequences.shape[0]))
    loss, stats = grpo.grpo_loss(policy, batch, cfg)
    mask = ro.response_mask
    token_adv = (ro.advantages[:, None] * mask).sum() / mask.sum()
    assert stats["ratio_mean"].item() == pytest.approx(1.0, abs=1e-5)
    assert stats["clipfrac"].item() == 0.0 and stats["kl_token"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(-token_adv.item(), abs=1e-5)


def test_grpo_learns_to_stop_quickly(tok):
    """A toy reward (minus the response length): a few GRPO iterations shorten the responses."""
    stop, pad = D.stop_token_id(tok), D.pad_token_id(tok)
    policy = stop_prone_gpt(tok.vocab_size, stop, p_stop=0.15)
    ref = stop_prone_gpt(tok.vocab_size, stop, p_stop=0.15)
    cfg = cfg_for(learning_rate=3e-2, beta=0.0, n_minibatches=1, group_size=8, max_new_tokens=10,
                  micro_batch_size=32)
    prompts = prompts_of(tok, 4)
    scorer = LengthScorer()

    def mean_length(seed):
        ro = grpo.collect_groups(policy, ref, scorer, convs_of(4) * 4, prompts * 4, replace(cfg, group_size=4),
                                 stop, pad, torch.Generator().manual_seed(seed))
        return ro.response_mask.sum(1).mean().item()

    before = mean_length(123)
    policy.train()
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    for it in range(6):
        ro = grpo.collect_groups(policy, ref, scorer, convs_of(4), prompts, cfg, stop, pad,
                                 torch.Generator().manual_seed(it))
        grpo.grpo_update(policy, opt, ro, cfg, torch.Generator().manual_seed(it))
    after = mean_length(123)
    print(f"mean response length {before:.2f} -> {after:.2f}")
    assert after < before - 1.0, (before, after)


# ---------------------------------------------------------------- the stage

@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("grpo_runs")
    sft, rm = str(root / "sft"), str(root / "rm")
    ckpt_io.save_model(sft, tiny_gpt(tok.vocab_size), tok)
    tiny_rm(tok.vocab_size).save(rm, tok)
    return sft, rm, root


def test_tiny_preset_smoke_run_and_resume(run_dirs, capsys):
    sft, rm, root = run_dirs
    cfg = replace(grpo.GRPOConfig(), **{**grpo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm,
                                        "out_dir": str(root / "grpo"), "progress": False, "max_iters": 2,
                                        "n_eval_prompts": 4, "n_final_eval": 4})
    s = grpo.train_grpo(cfg, *grpo.gold_evaluators(cfg, GoldEvaluator))   # as `python -m rlhf.grpo` does
    closing = [line for line in capsys.readouterr().out.splitlines() if line.startswith("grpo: 2 iterations")]
    assert closing and re.search(r"RM score \(train samples\) -?\d+\.\d{3} -> -?\d+\.\d{3}; ", closing[0]), closing
    for f in ("model.pt", "summary.json", "metrics.jsonl", "grpo.png", "ckpt.pt", "config.json"):
        assert os.path.exists(os.path.join(cfg.out_dir, f)), f
    with open(os.path.join(cfg.out_dir, "summary.json"), encoding="utf-8") as f:
        saved = json.load(f)
    for k in ("gold_score", "sft_gold_score", "win_rate_vs_sft", "kl", "rm_score_train_last", "tied_groups"):
        assert k in saved, k
    assert s["iters"] == 2
    s2 = grpo.train_grpo(replace(cfg, max_iters=3, resume=True))
    assert s2["iters"] == 3
    iters = [r["iter"] for r in read_metrics(os.path.join(cfg.out_dir, "metrics.jsonl")) if "rm_score" in r]
    assert iters == [0, 1, 2]                                     # one continuous run
    assert isinstance(ckpt_io.load_model(cfg.out_dir)[0], GPT)


def test_tiny_run_with_the_rloo_baseline(run_dirs):
    sft, rm, root = run_dirs
    cfg = replace(grpo.GRPOConfig(), **{**grpo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm, "baseline": "rloo",
                                        "out_dir": str(root / "grpo_rloo"), "progress": False, "max_iters": 2,
                                        "n_eval_prompts": 4, "n_final_eval": 4})
    s = grpo.train_grpo(cfg, *grpo.gold_evaluators(cfg, GoldEvaluator))
    assert s["iters"] == 2 and s["baseline"] == "rloo"
    for k in ("gold_score", "sft_gold_score", "kl"):
        assert s[k] is not None and s[k] == s[k], k                 # present, not NaN
    with open(os.path.join(cfg.out_dir, "summary.json"), encoding="utf-8") as f:
        assert json.load(f)["baseline"] == "rloo"


def test_a_bad_baseline_is_rejected_before_anything_runs(run_dirs, tmp_path):
    sft, rm, _ = run_dirs
    out = str(tmp_path / "grpo_bad")
    with pytest.raises(SystemExit) as e:
        grpo.main(["--preset", "tiny", f"--sft_dir={sft}", f"--rm_dir={rm}", f"--out_dir={out}", "--baseline=RLOO",
                   "--progress=false"])
    assert str(e.value) == "error: --baseline must be one of group, rloo, got 'RLOO'"
    assert not os.path.exists(out)


def test_help_lists_the_fields(capsys):
    with pytest.raises(SystemExit) as e:
        grpo.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--group_size=" in out and "--beta=" in out and "--baseline=" in out
