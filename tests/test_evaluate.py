"""Evaluation statistics on synthetic inputs with known answers (rlhf/evaluate.py).

    python -m pytest tests/test_evaluate.py -q
"""

import json
import math
import os

import numpy as np
import pytest

from rlhf import evaluate as ev
from rlhf.best_of_n import best_of_n_rows
from rlhf.gold import gold_scores, kl_to_reference
from rlhf.reward import RewardModel
from rlhf.rollout import generate_responses, response_logprobs, score_responses


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
    assert r["win_rate"] is None and r["win_rate_half"] == 0.5     # no non-tied pair: the non-tied rate is n/a
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


# --- models: generation, log-probs, KL, RM judge, best-of-N, the cache ---------------------------------

import torch  # noqa: E402

from minigpt.checkpoint import load_model, save_model  # noqa: E402
from minigpt.config import GPTConfig  # noqa: E402
from minigpt.model import GPT  # noqa: E402
from minigpt.tokenizer import train_bpe  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A fake pipeline run: three tiny random GPTs as pretrain/, sft/ and ppo/, one shared tokenizer."""
    from rlhf.world import corpus
    run = tmp_path_factory.mktemp("run")
    tok = train_bpe(corpus(20_000, seed=0), 320)
    for i, stage in enumerate(("pretrain", "sft", "ppo")):
        torch.manual_seed(i)
        save_model(run / stage, GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=1, n_head=2,
                                              n_embd=32)), tok)
    return run


CFG = ev.EvalConfig(n_prompts=12, max_new_tokens=10, batch_size=5, n_boot=200)


def test_sequence_logprobs_reproduce_the_sampler(run_dir):
    from minigpt.generate import generate
    from rlhf.data import pad_token_id, render_prompt, stop_token_id
    model, tok = load_model(run_dir / "sft")
    prompts = [render_prompt(ex.conversation, tok) for ex in ev.eval_examples(6)]
    gen = generate(model, prompts, 10, temperature=0.7, eos_token_id=stop_token_id(tok),
                   pad_token_id=pad_token_id(tok), generator=torch.Generator().manual_seed(0), return_logprobs=True)
    lp = response_logprobs(model, gen.sequences, gen.attention_mask, gen.prompt_length, temperature=0.7)
    torch.testing.assert_close(lp * gen.response_mask, gen.logprobs, atol=1e-5, rtol=0)


def test_kl_to_reference(run_dir):
    model, tok = load_model(run_dir / "sft")
    convs = [ex.conversation for ex in ev.eval_examples(16)]
    same = kl_to_reference(model, model, tok, convs, 10, batch_size=8)
    assert same["mean"] == 0.0 and same["ci"] == [0.0, 0.0] and same["per_token"] == 0.0   # exact, not noisy
    assert abs(same["sampled_estimate"]) < 1e-5
    sharp = GPT(model.config)
    sharp.load_state_dict(model.state_dict())
    with torch.no_grad():
        sharp.transformer.wte.weight.mul_(8.0)          # a much peakier distribution than the policy's
    other = kl_to_reference(model, sharp, tok, convs, 10, batch_size=8)
    assert other["mean"] > 1.0 and other["ci"][0] > 0


def test_kl_estimate_is_never_negative_for_nearby_models(run_dir):
    """Two barely different models: the sampled log-ratio sum can come out negative by chance; the exact
    per-token estimator cannot (a report once printed KL = -0.01 nats [-0.03, 0.01])."""
    model, tok = load_model(run_dir / "sft")
    near = GPT(model.config)
    near.load_state_dict(model.state_dict())
    with torch.no_grad():
        near.transformer.wte.weight.mul_(1.01)
    convs = [ex.conversation for ex in ev.eval_examples(16)]
    k = kl_to_reference(model, near, tok, convs, 10, batch_size=8)
    assert k["mean"] >= 0 and k["ci"][0] >= 0 and k["per_token"] >= 0


def test_rm_scores_do_not_depend_on_padding(run_dir):
    model, tok = load_model(run_dir / "sft")
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained_gpt(model).eval()
    torch.nn.init.normal_(rm.head.weight, std=1.0)
    exs = ev.eval_examples(5)
    convs = [e.conversation for e in exs]
    resp = ["7", "I don't know.", "a much longer answer with many words in it", "", "Sorry"]
    stopped = [True, True, False, True, True]
    batched = score_responses(rm, tok, convs, resp, stopped, batch_size=5)
    alone = [score_responses(rm, tok, [c], [r], [s])[0] for c, r, s in zip(convs, resp, stopped)]
    assert batched == pytest.approx(alone, abs=1e-5)
    assert len(set(round(x, 6) for x in batched)) > 1


def test_best_of_n_keeps_the_reward_models_favourite(run_dir):
    model, tok = load_model(run_dir / "sft")
    torch.manual_seed(1)
    rm = RewardModel.from_pretrained_gpt(model).eval()
    torch.nn.init.normal_(rm.head.weight, std=1.0)
    exs = ev.eval_examples(4)
    rows = best_of_n_rows(model, tok, rm, tok, exs, 3, CFG)
    # reference: the same samples (same seed), scored one by one
    rep = [e.conversation for e in exs for _ in range(3)]
    gens = generate_responses(model, tok, rep, CFG.max_new_tokens, temperature=CFG.temperature,
                                 batch_size=CFG.batch_size, seed=CFG.seed + 1)
    scores = score_responses(rm, tok, rep, [g["response"] for g in gens], [g["stopped"] for g in gens])
    scores = [s if g["stopped"] else -2.0 for s, g in zip(scores, gens)]   # PPO's no-stop score
    greedy = ev.by_decoding(rows, "greedy")
    for i, r in enumerate(greedy):
        best = max(range(3 * i, 3 * i + 3), key=lambda j: scores[j])
        assert r["response"] == gens[best]["response"] and r["rm"] == pytest.approx(max(scores[3 * i:3 * i + 3]))
        assert r["mean_gold_of_n"] <= r["oracle_gold"] + 1e-12 and r["gold"] <= r["oracle_gold"] + 1e-12
        # best-of-k for every k from the same samples: k = 1 is the first sample, k = 3 the pick above
        golds = gold_scores([{"prompt": rep[j], "response": gens[j]["response"], "stopped": gens[j]["stopped"]}
                                for j in range(3 * i, 3 * i + 3)])
        best2 = max(range(2), key=lambda j: scores[3 * i + j])
        assert r["gold_by_n"] == pytest.approx([golds[0], golds[best2], r["gold"]])


def test_evaluate_run_caches_rows_per_stage(run_dir, monkeypatch):
    res = ev.evaluate_run(str(run_dir), CFG, progress=False)
    assert set(res["stages"]) == {"base", "sft", "ppo"}
    assert {"base_vs_sft", "ppo_vs_sft", "ppo_vs_base"} <= set(res["comparisons"])
    assert res["stages"]["ppo"]["kl"]["mean"] > 0                       # two different random models
    for stage in ("base", "sft", "ppo"):
        rows = ev.read_rows(run_dir / "eval" / f"{stage}.jsonl")
        assert len(ev.by_decoding(rows, "greedy")) == len(ev.by_decoding(rows, "sampled")) == CFG.n_prompts
        assert all(r["rm"] is None for r in rows)                      # no reward model in this run
    greedy_ids = [r["id"] for r in ev.by_decoding(ev.read_rows(run_dir / "eval" / "sft.jsonl"), "greedy")]
    assert greedy_ids == [e.id for e in ev.eval_examples(CFG.n_prompts, CFG.seed)]
    # Second call: everything comes from the cache (generation would raise).
    monkeypatch.setattr(ev, "generate_responses", lambda *a, **k: (_ for _ in ()).throw(AssertionError("generated")))
    again = ev.evaluate_run(str(run_dir), CFG, progress=False)
    assert again["stages"]["sft"]["greedy"] == res["stages"]["sft"]["greedy"]
    # Other settings -> the cache is stale -> generation is attempted.
    with pytest.raises(AssertionError, match="generated"):
        ev.evaluate_run(str(run_dir), ev.EvalConfig(n_prompts=12, max_new_tokens=9, batch_size=5, n_boot=200),
                        progress=False)


def test_cli_prints_the_table(run_dir, capsys):
    ev.main([str(run_dir), "--n_prompts=12", "--max_new_tokens=10", "--batch_size=5", "--n_boot=200"])
    out = capsys.readouterr().out
    assert "12 held-out test prompts" in out and "ppo_vs_sft" in out and "KL to the reference" in out
    with pytest.raises(SystemExit, match="usage"):
        ev.main(["--n_prompts=3"])


def test_sampled_answers_use_common_random_numbers(run_dir, tmp_path):
    """Evaluating a bit-identical copy of a run gives identical samples: every prompt ties, gold and RM
    judge alike; and a prompt's sample does not depend on the batch size (one stream per prompt)."""
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval*"))
    cfg = ev.EvalConfig(n_prompts=12, max_new_tokens=10, batch_size=5, n_boot=200)
    res = ev.compare_runs(str(run_dir), str(copy), cfg, progress=False)
    for name, by_decoding in res["comparisons"].items():
        for decoding, c in by_decoding.items():
            assert c["gold"]["ties"] == c["n"], (name, decoding, c["gold"])
            assert c["gold"]["win_rate"] is None                 # no non-tied pair: n/a, not 0.50
    model, tok = load_model(run_dir / "sft")
    convs = [ex.conversation for ex in ev.eval_examples(7)]
    a = generate_responses(model, tok, convs, 10, temperature=1.0, batch_size=7, seed=3, per_prompt=True)
    b = generate_responses(model, tok, convs, 10, temperature=1.0, batch_size=2, seed=3, per_prompt=True)
    assert [r["response"] for r in a] == [r["response"] for r in b]


def test_standalone_evaluation_never_overwrites_the_pipelines_eval(run_dir):
    """`python -m rlhf.evaluate RUN` with other settings than the pipeline's writes to a directory of its
    own; with the pipeline's settings it reuses (and keeps) RUN/eval."""
    pipe = {"pipeline": {"eval_split": "test", "eval_prompts": 12, "seed": 0, "eval_temperature": 1.0,
                         "eval_max_new_tokens": 10}}
    (run_dir / "pipeline_config.json").write_text(json.dumps(pipe), encoding="utf-8")
    same = ev.EvalConfig(n_prompts=12, max_new_tokens=10, batch_size=5)
    other = ev.EvalConfig(n_prompts=6, max_new_tokens=10, batch_size=5)
    assert ev.eval_dir_for(str(run_dir), same) == os.path.join(str(run_dir), "eval")
    assert ev.eval_dir_for(str(run_dir), other) == os.path.join(str(run_dir), "eval-test-n6-seed0-t1-new10")
    (run_dir / "pipeline_config.json").unlink()
    assert ev.eval_dir_for(str(run_dir), same) != os.path.join(str(run_dir), "eval")   # not a pipeline run


def test_compare_rows_pairs_a_repeated_prompt_in_order():
    """An evaluation set may hold the same prompt twice; its two sampled answers must be paired with the
    other model's two answers in order, not both with the other model's last one."""
    from rlhf.stats import compare_rows

    a = [{"id": "p", "gold": 1.0}, {"id": "p", "gold": 0.0}, {"id": "q", "gold": 0.5}]
    b = [{"id": "p", "gold": 1.0}, {"id": "p", "gold": 0.0}, {"id": "q", "gold": 0.5}]
    c = compare_rows(a, b, n_boot=100)
    assert c["n"] == 3
    assert c["gold_diff"]["mean"] == 0.0
    assert (c["gold"]["wins"], c["gold"]["ties"], c["gold"]["losses"]) == (0, 3, 0)


def test_dpo_and_grpo_runs_in_the_run_directory_join_the_evaluation(run_dir, tmp_path):
    """`python -m rlhf.dpo` / `rlhf.grpo` writing into RUN/dpo, RUN/grpo: evaluate_run judges them with the
    other stages, compares them with SFT and measures their KL; plot_methods_vs_sft draws the comparison."""
    import shutil
    from rlhf.plots import plot_methods_vs_sft
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("eval*"))
    for i, stage in enumerate(("dpo", "grpo")):
        torch.manual_seed(10 + i)
        model, tok = load_model(run / "sft")
        save_model(run / stage, GPT(model.config), tok)
    res = ev.evaluate_run(str(run), CFG, kl_pairs=(("ppo", "sft"), ("dpo", "sft"), ("grpo", "sft")), progress=False)
    assert list(res["stages"]) == ["base", "sft", "ppo", "dpo", "grpo"]
    assert {"dpo_vs_sft", "grpo_vs_sft", "ppo_vs_dpo", "ppo_vs_grpo"} <= set(res["comparisons"])
    assert res["stages"]["dpo"]["kl"]["mean"] > 0 and res["stages"]["grpo"]["kl"]["mean"] > 0
    path = str(tmp_path / "methods.png")
    assert plot_methods_vs_sft(res, path) == path and open(path, "rb").read(4) == b"\x89PNG"
    assert plot_methods_vs_sft({"stages": res["stages"], "comparisons": {}}, str(tmp_path / "none.png")) is None
    # an experiment that did not ask for DPO leaves RUN/dpo out: not judged (no rows, no KL), not compared
    eval_dir = tmp_path / "eval_skip"
    res = ev.evaluate_run(str(run), CFG, kl_pairs=(("dpo", "sft"),), progress=False, eval_dir=str(eval_dir),
                          skip=("dpo",))
    assert "dpo" not in res["stages"] and not any("dpo" in k for k in res["comparisons"])
    assert not (eval_dir / "dpo.jsonl").exists()
