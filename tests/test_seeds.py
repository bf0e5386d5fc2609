"""rlhf.experiments.seeds: which seeds change, the statistics across seeds (on synthetic rows with known
answers), the report and plot, and (slow) the whole experiment on a tiny pipeline run.

    python -m pytest tests/test_seeds.py -q             # a few seconds
    python -m pytest tests/test_seeds.py -q -m slow     # + two tiny seeds end to end (~1-2 minutes)
"""

import copy
import dataclasses
import json
import os

import pytest

from rlhf import pipeline
from rlhf.experiments import seeds


def png(path) -> bool:
    return os.path.exists(path) and open(path, "rb").read(4) == b"\x89PNG"


def test_seed_overrides_move_every_training_seed_and_keep_the_runs_own_overrides():
    recipe = {"stage_overrides": {"ppo": {"init_kl_coef": "0.05"}},
              "stages": {"pretrain": {"seed": 1337, "corpus_seed": 0}, "sft": {"seed": 1337, "demo_seed": 0},
                         "reward_model": {"seed": 7, "data_seed": 0}, "ppo": {"seed": 1337, "prompt_seed": 2}}}
    raw = seeds.seed_overrides(recipe, 2)
    assert raw == {"pretrain": {"seed": "1339"}, "sft": {"seed": "1339"}, "reward_model": {"seed": "9"},
                   "ppo": {"init_kl_coef": "0.05", "seed": "1339"}}, \
        "seed k moves each stage's training seed by k, keeps the run's overrides and leaves the data seeds alone"
    assert recipe["stage_overrides"] == {"ppo": {"init_kl_coef": "0.05"}}, "the recipe itself must not change"
    assert seeds.seed_overrides(recipe, 0)["ppo"]["seed"] == "1337"
    older = {**recipe, "stage_overrides": {"ppo": {"device": "cpu", "sft_dir": "x", "init_kl_coef": "0.05"},
                                           "pretrain": {"data": "corpus.txt"}}}
    assert seeds.seed_overrides(older, 1)["ppo"] == {"init_kl_coef": "0.05", "seed": "1338"}, \
        "overrides the pipeline sets itself (recorded, then ignored, by older versions; refused now) are dropped"
    assert seeds.seed_overrides(older, 1)["pretrain"] == {"seed": "1338"}


def test_pipeline_config_keeps_the_runs_evaluation_settings():
    recipe = {"pipeline": {"out": "runs/x", "seed": 3, "eval_prompts": 50, "eval_split": "val", "n_boot": 100,
                           "headline": True, "progress": True, "stop_after": "sft", "best_of_n": 4}}
    cfg = seeds.pipeline_config(recipe, seeds.SeedsConfig(progress=False), "out/seed1")
    assert (cfg.out, cfg.seed, cfg.eval_prompts, cfg.eval_split, cfg.best_of_n) == ("out/seed1", 3, 50, "val", 4)
    assert not cfg.headline and not cfg.stop_after and not cfg.progress


def rows(golds, decoding, prefix="p"):
    return [{"id": f"{prefix}{i}", "gold": g, "decoding": decoding} for i, g in enumerate(golds)]


def test_pooled_gain_averages_each_prompt_over_seeds():
    # two seeds, three prompts: per-prompt gains (+1, 0, -0.5) and (+0.5, 0, +0.5) -> means 0.75, 0, 0
    by_seed = [{"ppo": rows([1.0, 0.5, 0.0], "sampled"), "sft": rows([0.0, 0.5, 0.5], "sampled")},
               {"ppo": rows([1.0, 0.5, 1.0], "sampled"), "sft": rows([0.5, 0.5, 0.5], "sampled")}]
    p = seeds.pooled_gain(by_seed, "ppo", "sampled", n_boot=200)
    assert p["diff"] == pytest.approx(0.25)
    assert p["ci"][0] <= p["diff"] <= p["ci"][1]
    assert (p["wins"], p["losses"], p["seeds"]) == (3, 1, 2) and p["non_tied"] == pytest.approx(0.75)
    assert seeds.pooled_gain(by_seed, "dpo", "sampled") is None, "a method some seed lacks has no pooled gain"
    by_seed[1]["sft"] = rows([0.5, 0.5, 0.5], "sampled", prefix="q")
    with pytest.raises(ValueError, match="prompts differ"):
        seeds.pooled_gain(by_seed, "ppo", "sampled")
    by_seed[1] = {m: rows([0.5] * 3, "sampled", prefix="q") for m in ("ppo", "sft")}   # agree within, not across
    with pytest.raises(ValueError, match="prompts differ"):
        seeds.pooled_gain(by_seed, "ppo", "sampled")


def synthetic_seed(k: int, ppo_gain: float, lo: float) -> dict:
    stage = {d: {"gold": 0.4 + ppo_gain, "ci": [0.3, 0.5]} for d in ("greedy", "sampled")}
    sft = {d: {"gold": 0.4, "ci": [0.3, 0.5]} for d in ("greedy", "sampled")}
    vs = {d: {"diff": ppo_gain, "ci": [lo, ppo_gain + 0.05], "non_tied": 0.6, "wtl": [6, 0, 4]}
          for d in ("greedy", "sampled")}
    return {"seed": k, "run": f"r{k}", "stages": {"base": sft, "sft": sft, "ppo": {**stage, "kl": 0.5 + k}},
            "vs_sft": {"ppo": vs}, "reward_model": {"val_accuracy": 0.6 + k / 100, "label_agreement": 0.78}}


def test_aggregate_counts_seeds_outside_the_noise():
    per_seed = [synthetic_seed(0, 0.06, 0.01), synthetic_seed(1, 0.02, -0.03), synthetic_seed(2, -0.08, -0.12)]
    by_seed = [{"ppo": rows([0.5 + s["vs_sft"]["ppo"]["sampled"]["diff"]] * 2, "sampled"),
                "sft": rows([0.5] * 2, "sampled")} for s in per_seed]
    agg = seeds.aggregate(per_seed, by_seed, n_boot=100)
    g = agg["vs_sft"]["ppo"]["sampled"]
    assert g["mean"] == pytest.approx(0.0) and (g["min"], g["max"]) == (-0.08, 0.06)
    assert g["sd"] == pytest.approx(0.0721110, abs=1e-6), "the sample standard deviation (n - 1)"
    assert (g["seeds_above_0"], g["seeds_below_0"]) == (1, 1), "CI above 0 in seed 0, below 0 in seed 2"
    assert g["pooled"]["diff"] == pytest.approx(0.0)
    assert agg["vs_sft"]["ppo"]["greedy"]["pooled"] is None, "no greedy rows, no pooled greedy gain"
    assert agg["stages"]["ppo"]["kl"]["values"] == [0.5, 1.5, 2.5]
    assert "best_of_n" not in agg["vs_sft"], "a method no seed has stays out of the table"
    assert agg["reward_model"]["val_accuracy"]["mean"] == pytest.approx(0.61)


def test_report_and_plot_from_synthetic_seeds(tmp_path):
    per_seed = [synthetic_seed(0, 0.06, 0.01), synthetic_seed(1, 0.04, 0.005), synthetic_seed(2, 0.05, 0.02)]
    by_seed = [{"ppo": rows([0.5 + s["vs_sft"]["ppo"]["greedy"]["diff"]] * 3, "greedy"), "sft": rows([0.5] * 3, "greedy")}
               for s in per_seed]
    result = {"config": {"run": "runs/default", "out": ""}, "preset": "default", "per_seed": per_seed,
              "prompts": {"n": 3, "split": "test", "seed": 0}, "seconds": 1.0,
              "aggregate": seeds.aggregate(per_seed, by_seed, n_boot=100)}
    assert png(seeds.plot(result, str(tmp_path / "seeds.png")))
    text = open(seeds.write_report(result, str(tmp_path / "report.md")), encoding="utf-8").read()
    assert "| PPO | 0.450 ± 0.010 [0.440, 0.460]" in text, "gold: mean ± sd [min, max] over the seeds"
    assert "above 0 in 3 of 3 seeds" in text and "seed 0 ranks 1 of 3" in text
    assert "](seeds.png)" in text and "## Per seed" in text


def test_one_seed_has_no_standard_deviation(tmp_path):
    per_seed = [synthetic_seed(0, 0.06, 0.01)]
    agg = seeds.aggregate(per_seed, [{}], n_boot=100)
    assert agg["vs_sft"]["ppo"]["sampled"]["sd"] is None and agg["vs_sft"]["ppo"]["sampled"]["pooled"] is None
    result = {"config": {"run": "r", "out": "", "n_seeds": 1}, "preset": "default", "per_seed": per_seed,
              "prompts": {"n": 3, "split": "test", "seed": 0}, "seconds": 1.0, "aggregate": agg}
    text = open(seeds.write_report(result, str(tmp_path / "report.md")), encoding="utf-8").read()
    assert "| PPO | 0.460 [0.460, 0.460]" in text and "seeds --run=r --n_seeds=1`" in text


def test_recipe_differences_see_all_but_the_seed_and_the_run_directory():
    recipe = {"preset": "default", "pipeline": {"out": "runs/a"},
              "stages": {"sft": {"seed": 1337, "init_from": "runs/a/pretrain", "learning_rate": 1e-3, "progress": True},
                         "sft_large": {"seed": 1337}}}
    same = {"preset": "default", "pipeline": {"out": "runs/a/experiments/seeds/seed2"},
            "stages": {"sft": {"seed": 1339, "init_from": "runs/a/experiments/seeds/seed2/pretrain",
                               "learning_rate": 1e-3, "progress": False}, "sft_large": {"seed": 1337}}}
    assert seeds.recipe_differences(recipe, same, 2) == []
    other = copy.deepcopy(same)
    other["stages"]["sft"]["learning_rate"] = 2e-3
    assert seeds.recipe_differences(recipe, other, 2) == ["sft.learning_rate: 0.002 vs 0.001"]
    assert seeds.recipe_differences(recipe, same, 1) == ["sft.seed: 1339 vs 1338"]


def fake_stage(path, cfg, finished=True):
    """A directory that looks like a stage trained with cfg (config.json, summary.json, model.pt)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(dataclasses.asdict(cfg), f)
    if finished:
        for name in ("summary.json", "model.pt"):
            with open(os.path.join(path, name), "w", encoding="utf-8") as f:
                f.write("{}")


def test_method_run_reuses_only_a_part_with_the_same_settings(tmp_path, monkeypatch):
    run, out = str(tmp_path / "run"), str(tmp_path / "out")
    trained = []

    def fake_train(cfg, *evaluators):
        trained.append(cfg)
        assert not os.path.exists(os.path.join(cfg.out_dir, "summary.json")), "a stale summary.json survived"
        fake_stage(cfg.out_dir, cfg)
        return {}

    monkeypatch.setattr(seeds.grpo, "train_grpo", fake_train)
    cfg = seeds.SeedsConfig(run=run, method_preset="tiny", progress=False)
    # seed 0: a finished `python -m rlhf.grpo` run in the run directory with the same settings is used
    fake_stage(os.path.join(run, "grpo"), seeds.method_config("grpo", cfg, run, 0, os.path.join(run, "grpo")))
    assert seeds.method_run("grpo", cfg, run, 0, out) == os.path.join(run, "grpo") and not trained
    # ... but not one trained with other settings: seed 0's GRPO is then trained beside the run
    other = dataclasses.replace(cfg, method_preset="default")
    assert seeds.method_run("grpo", other, run, 0, out) == os.path.join(out, "seed0", "grpo")
    assert len(trained) == 1 and trained[0].seed == seeds.grpo.GRPOConfig().seed
    # seed 1 trains with the preset's seed + 1 into its own run directory, then is reused
    seed1 = os.path.join(out, "seed1")
    assert seeds.method_run("grpo", cfg, seed1, 1, out) == os.path.join(seed1, "grpo")
    assert trained[-1].seed == seeds.grpo.GRPOConfig().seed + 1 and trained[-1].sft_dir == os.path.join(seed1, "sft")
    seeds.method_run("grpo", cfg, seed1, 1, out)
    assert len(trained) == 2, "a finished part with the same settings is reused"
    # another preset for the same seed: trained again, its old summary.json and model.pt removed first
    seeds.method_run("grpo", other, seed1, 1, out)
    assert len(trained) == 3 and not trained[-1].resume
    # an interrupted run of the same settings (config.json and ckpt.pt, no summary) resumes
    os.remove(os.path.join(seed1, "grpo", "summary.json"))
    open(os.path.join(seed1, "grpo", "ckpt.pt"), "w", encoding="utf-8").close()
    seeds.method_run("grpo", other, seed1, 1, out)
    assert trained[-1].resume


def test_a_run_that_is_not_a_pipeline_run_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no such directory"):
        seeds.run(seeds.SeedsConfig(run=str(tmp_path / "nothing")))
    with pytest.raises(SystemExit, match="n_seeds"):
        seeds.run(seeds.SeedsConfig(run=str(tmp_path), n_seeds=0))


@pytest.mark.slow
def test_seeds_tiny_end_to_end(tmp_path):
    run = tmp_path / "tiny"
    pipeline.main(["--preset", "tiny", "--out", str(run), "--progress=false"])
    out = tmp_path / "seeds"
    m = seeds.main(["--preset", "tiny", f"--run={run}", f"--out={out}", "--progress=false"])
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["aggregate"] == json.loads(json.dumps(m["aggregate"]))
    assert png(out / "seeds.png") and "## Reading" in (out / "report.md").read_text(encoding="utf-8")
    assert [p["seed"] for p in m["per_seed"]] == [0, 1]
    assert m["per_seed"][0]["run"] == str(run) and os.path.exists(out / "seed1" / "metrics.json")
    cfg1 = json.loads((out / "seed1" / "pipeline_config.json").read_text(encoding="utf-8"))["stages"]
    cfg0 = json.loads((run / "pipeline_config.json").read_text(encoding="utf-8"))["stages"]
    assert cfg1["ppo"]["seed"] == cfg0["ppo"]["seed"] + 1 and cfg1["sft"]["demo_seed"] == cfg0["sft"]["demo_seed"]
    assert set(m["aggregate"]["vs_sft"]) == {"best_of_n", "ppo", "grpo", "dpo"}
    for p in m["per_seed"]:                       # seed 0's GRPO and DPO were trained beside the run, not in it
        assert set(p["stages"]) >= {"base", "sft", "ppo", "grpo", "dpo"} and "kl" in p["stages"]["dpo"]
    assert m["per_seed"][0]["dirs"]["dpo"] == str(out / "seed0" / "dpo")
    assert m["per_seed"][1]["dirs"]["dpo"] == str(out / "seed1" / "dpo")
    # another seed trains other weights: the seed-1 PPO answers differ from seed 0's somewhere
    rows0 = (run / "eval" / "sft.jsonl").read_text(encoding="utf-8")
    rows1 = (out / "seed1" / "eval" / "sft.jsonl").read_text(encoding="utf-8")
    assert rows0 != rows1, "seed 1's SFT model answered exactly as seed 0's: the training seed did not reach it"
    # a second invocation reuses every finished part
    mtime = os.path.getmtime(out / "seed1" / "dpo" / "model.pt")
    again = seeds.main(["--preset", "tiny", f"--run={run}", f"--out={out}", "--progress=false"])
    assert os.path.getmtime(out / "seed1" / "dpo" / "model.pt") == mtime
    assert again["aggregate"] == m["aggregate"]
