"""rlhf.experiments.rounds: two tiny rounds of PPO -> fresh comparisons -> RM update on a stand-in run
(a random tiny SFT model and a tiny-preset reward model), the wiring between rounds, the growing
rankings file, and the re-run that reuses finished rounds.

    python -m pytest tests/test_rounds.py -q
"""

import json
import os
import runpy
import shutil
import sys
from dataclasses import replace

import pytest
import torch

from minigpt import checkpoint as ckpt_io
from minigpt.tokenizer import train_bpe
from rlhf import reward_model as R
from rlhf.experiments import rounds
from rlhf.world import corpus
from tests.tiny_rl import tiny_gpt

pytestmark = pytest.mark.xdist_group("rounds")   # one worker runs them all: the two-round fixture runs once
N_RM_TRAIN = 12                          # the stand-in run's RM comparisons (round 0's data)


def _lines(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """RUN with sft/ (a random tiny GPT) and reward_model/ (the RM stage's tiny preset on its samples)."""
    run = tmp_path_factory.mktemp("run")
    tok = train_bpe(corpus(5000, seed=0), 300)
    ckpt_io.save_model(str(run / "sft"), tiny_gpt(tok.vocab_size), tok)
    ckpt_io.write_summary(str(run / "sft"), {"stage": "sft"})     # a finished stage, as the pipeline leaves it
    rcfg = replace(R.RMConfig(), **R.PRESETS["tiny"])
    R.train_reward_model(replace(rcfg, sft_dir=str(run / "sft"), out_dir=str(run / "reward_model"),
                                 n_train_prompts=N_RM_TRAIN, n_val_prompts=6, progress=False, device="cpu"))
    return run


def _rounds(run, out, *extra):
    return rounds.main(["--preset", "tiny", f"--run={run}", f"--out={out}", "--progress=false", "--device=cpu", *extra])


@pytest.fixture(scope="module")
def two_rounds(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("rounds") / "out"
    return tiny_run, out, _rounds(tiny_run, out)


@pytest.mark.slow   # a two-round tiny run: ~40 s, over the default suite's budget
def test_metrics_plot_and_report(two_rounds):
    run, out, m = two_rounds
    assert m == json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [rec["round"] for rec in m["rounds"]] == [0, 1, 2]
    for rec in m["rounds"]:
        for d in ("greedy", "sampled"):
            assert 0.0 <= rec["val"][d]["gold"] <= 1.0
            lo, hi = rec["val"][d]["gold_diff_ci"]
            assert lo <= rec["val"][d]["gold_diff"] <= hi
        assert rec["val"]["kl"] >= 0.0                        # the exact per-token KL is never negative
        assert 0.0 <= rec["rm_accuracy_after"]["accuracy"] <= 1.0 and rec["seconds"]["total"] > 0
    r0, r1, r2 = m["rounds"]
    assert r0["rm_accuracy_before"] is None and r0["val"]["kl"] == 0.0
    # Round 0 measures RM_0 on the RM stage's own held-out comparisons (same prompts, samples, labelers),
    # so it reproduces the stage's held-out accuracy.
    assert r0["rm_accuracy_after"]["accuracy"] == pytest.approx(
        ckpt_io.read_summary(run / "reward_model")["val_accuracy"])
    for rec in (r1, r2):
        assert rec["rm_accuracy_before"]["pairs"] == rec["rm_accuracy_after"]["pairs"] > 0   # the same held-out pairs
        assert rec["rm_accuracy_after"]["accuracy"] == pytest.approx(rec["reward_model"]["val_accuracy"])
    final = m["final"]
    assert set(final["stages"]) == {"sft", "rounds"} and final["n"] == 8   # the stand-in run has no ppo/
    assert final["models"] == {"sft": str(run / "sft"), "rounds": str(out / "round_2" / "ppo")}
    for d in ("greedy", "sampled"):
        c = final["comparisons"]["rounds_vs_sft"][d]
        assert c["gold"]["wins"] + c["gold"]["ties"] + c["gold"]["losses"] == 8
        lo, hi = c["gold_diff"]["ci"]
        assert lo <= c["gold_diff"]["mean"] <= hi
        assert isinstance(final["target"][d]["met"], bool)
    assert final["stages"]["rounds"]["kl"]["mean"] >= 0.0
    assert (out / "rounds.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "![rounds](rounds.png)" in report and "| 2 |" in report and "rounds vs sft" in report


@pytest.mark.slow   # a two-round tiny run: ~40 s, over the default suite's budget
def test_round_two_starts_from_round_one_and_keeps_sft_as_reference(two_rounds):
    run, out, _ = two_rounds
    cfg1 = json.loads((out / "round_1" / "ppo" / "config.json").read_text(encoding="utf-8"))
    cfg2 = json.loads((out / "round_2" / "ppo" / "config.json").read_text(encoding="utf-8"))
    assert cfg1["init_dir"] == "" and cfg1["rm_dir"] == str(run / "reward_model")
    assert cfg2["init_dir"] == str(out / "round_1" / "ppo") and cfg2["rm_dir"] == str(out / "round_1" / "reward_model")
    assert cfg1["sft_dir"] == cfg2["sft_dir"] == str(run / "sft")           # π_ref = SFT in every round
    sft, p1, p2 = (_flat(ckpt_io.load_model(d)[0]) for d in (run / "sft", out / "round_1" / "ppo", out / "round_2" / "ppo"))
    assert not torch.equal(p1, sft)                       # round 1 moved the policy ...
    assert (p2 - p1).norm() < (p2 - sft).norm()           # ... and round 2 continued from there, not from SFT
    rm2 = json.loads((out / "round_2" / "reward_model" / "config.json").read_text(encoding="utf-8"))
    assert rm2["init_rm"] == str(out / "round_1" / "reward_model")   # rm_init=previous: fine-tunes RM_1


@pytest.mark.slow   # a two-round tiny run: ~40 s, over the default suite's budget
def test_rankings_accumulate(two_rounds):
    run, out, m = two_rounds
    n = rounds.PRESETS["tiny"]["n_train_prompts"]
    r0 = _lines(run / "reward_model" / "data" / "rm_train.jsonl")
    r1, r2 = (_lines(out / f"round_{r}" / "rankings_all.jsonl") for r in (1, 2))
    assert len(r0) == N_RM_TRAIN and len(r1) == N_RM_TRAIN + n and len(r2) == N_RM_TRAIN + 2 * n
    assert r1[:N_RM_TRAIN] == r0 and r2[:len(r1)] == r1   # nothing is dropped, new rows come last
    assert all(any(s.startswith("ppo2@") for s in row["source"]) for row in r2[len(r1):])   # π_2's samples
    assert m["rounds"][2]["comparisons"]["prompts_total"] == len(r2)
    train2 = _lines(out / "round_2" / "rm_train.jsonl")
    assert len(train2) == 2 * n and train2[:n] == r2[len(r1):]    # the new comparisons + as many replayed
    assert all(row in r1 for row in train2[n:])


@pytest.mark.slow   # a two-round tiny run: ~40 s, over the default suite's budget
def test_rerun_reuses_finished_rounds(two_rounds):
    run, out, m = two_rounds
    stamps = {p: os.stat(p).st_mtime_ns for p in (out / "round_1" / "summary.json", out / "round_2" / "ppo" / "model.pt",
                                                  out / "round_2" / "reward_model" / "model.pt", out / "eval" / "rounds.jsonl")}
    again = _rounds(run, out)
    assert again["rounds"] == m["rounds"] and again["final"] == m["final"]
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}    # nothing was trained or sampled again


@pytest.mark.slow
def test_one_more_round_continues_from_the_last(two_rounds, tmp_path):
    run, out, m = two_rounds
    more = tmp_path / "more"
    shutil.copytree(out, more)
    three = _rounds(run, more, "--rounds=3")                          # rounds 0-2 reused, round 3 from round 2
    assert three["rounds"][:3] == m["rounds"] and len(three["rounds"]) == 4
    cfg3 = json.loads((more / "round_3" / "ppo" / "config.json").read_text(encoding="utf-8"))
    assert cfg3["init_dir"] == str(more / "round_2" / "ppo")
    assert three["final"]["models"]["rounds"] == str(more / "round_3" / "ppo")   # the final evaluation moved on


@pytest.mark.filterwarnings("ignore:'rlhf.experiments.rounds' found in sys.modules:RuntimeWarning")  # runpy, harmless
def test_help_entry_point_and_bad_options(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["rounds", "--help"])
    with pytest.raises(SystemExit) as e:                 # python -m rlhf.experiments.rounds --help
        runpy.run_module("rlhf.experiments.rounds", run_name="__main__")
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--kl_targets" in text and "--rm_init" in text and "--ppo_iters" in text
    with pytest.raises(SystemExit, match="rm_init"):
        rounds.main(["--run=.", "--rm_init=scratch"])
    with pytest.raises(SystemExit, match="no such directory"):
        rounds.main(["--run=/nonexistent/run"])
    with pytest.raises(SystemExit, match="not a preset of rlhf.ppo and rlhf.reward_model"):
        rounds.main(["--run=.", "--stage_preset=defualt"])   # a typo used to run the class defaults silently


def test_kl_target_schedule_repeats_its_last_value():
    cfg = rounds.RoundsConfig(kl_targets=[0.5, 1.0])
    assert [rounds.kl_target(cfg, r) for r in (1, 2, 3, 4)] == [0.5, 1.0, 1.0, 1.0]
