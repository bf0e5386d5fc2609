"""rlhf.experiments: the dispatcher's command line, the pure pieces (Gao et al.'s fits, the nested
comparison files), and tiny versions of overoptimisation and rm_scaling on a tiny pipeline run.

    python -m pytest tests/test_experiments.py -q              # ~1 minute on 2 cores
    python -m pytest tests/test_experiments.py -q -m slow      # + the tiny rm_scaling run
"""

import json
import math
import os
import subprocess
import sys

import pytest

from minigpt import checkpoint as ckpt_io
from rlhf import pipeline
from rlhf.best_of_n import best_of_n_kl
from rlhf.experiments import overoptimisation, rm_scaling
from rlhf.experiments import __main__ as experiments_main
from rlhf.experiments.__main__ import EXPERIMENTS
from rlhf.gold import GoldEvaluator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rlhf.experiments", *args], cwd=ROOT, env=env,
                          capture_output=True, encoding="utf-8", timeout=timeout)


def png(path) -> bool:
    return os.path.exists(path) and open(path, "rb").read(4) == b"\x89PNG"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny pipeline run up to the reward model (~10 s): data/, tokenizer/, pretrain/, sft/, reward_model/."""
    out = tmp_path_factory.mktemp("experiments") / "tiny"
    pipeline.main(["--preset", "tiny", "--out", str(out), "--stop_after=reward_model", "--progress=false"])
    return out


# ------------------------------------------------------------------------------------------ command line

def test_help_lists_every_experiment():
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    assert "usage: python -m rlhf.experiments NAME" in r.stdout
    for name in ("overoptimisation", "rm_scaling", "rounds"):
        assert name in r.stdout and name in EXPERIMENTS


def test_an_experiments_help_lists_its_options():
    r = run_cli("overoptimisation", "--help")
    assert r.returncode == 0, r.stderr
    assert "--kl_coef=0.01" in r.stdout and "--ns=1,2,4,8,16,32,64" in r.stdout and "presets: tiny, default" in r.stdout


@pytest.mark.parametrize("args, fragment", [
    (("overoptimization",), "unknown experiment 'overoptimization'; choose one of: overoptimisation, rm_scaling"),
    ((), "name an experiment first"),
    (("rm_scaling", "--run=/nonexistent/run"), "--run=/nonexistent/run: no such directory"),
    (("overoptimisation", "--kl=0.1"), "unknown option --kl"),
])
def test_mistakes_end_in_one_line(args, fragment, capsys):
    with pytest.raises(SystemExit) as e:        # in-process: the message (run_entry_point prints it, or exits with it)
        experiments_main.main(list(args))
    err = (str(e.value.code) if not isinstance(e.value.code, int) else capsys.readouterr().err).strip()
    assert e.value.code != 0
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert fragment in err, err


def test_a_mistake_on_the_command_line_has_no_traceback():
    r = run_cli("overoptimisation", "--kl=0.1")
    err = r.stderr.strip()
    assert r.returncode != 0
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error: "), err


# ------------------------------------------------------------------------------------------ pure pieces

def test_fit_gold_recovers_gao_et_al_coefficients():
    """Points exactly on Δ = d (α - β d) (best-of-N) and Δ = d (α - β ln d) (RL) give back α, β and the
    peak: d* = α / 2β = 1.5 and d* = exp(α/β - 1) = e^2 (α = 0.3, β = 0.1)."""
    ds = [0.0, 0.5, 1.0, 2.0, 3.0]
    bon = [{"sqrt_kl": d, "gold": 0.2 + d * (0.3 - 0.1 * d)} for d in ds]
    rl = [{"sqrt_kl": d, "gold": 0.2 + (d * (0.3 - 0.1 * math.log(d)) if d else 0.0)} for d in ds]
    f = overoptimisation.fit_gold(bon, "bon")
    assert (f["alpha"], f["beta"], f["d_peak"]) == pytest.approx((0.3, 0.1, 1.5))
    f = overoptimisation.fit_gold(rl, "rl")
    assert (f["alpha"], f["beta"], f["d_peak"]) == pytest.approx((0.3, 0.1, math.e ** 2))
    assert overoptimisation.fit_gold(bon[:2], "bon") is None          # one point beyond d = 0: no fit


def test_log_slope_and_sizes():
    assert rm_scaling.log_slope([1, 2, 4], [0.5, 0.6, 0.7]) == pytest.approx(0.1)
    assert rm_scaling.parse_size("2x64") == (2, 64, 2) and rm_scaling.parse_size("1x16") == (1, 16, 1)
    with pytest.raises(SystemExit, match="LAYERSxWIDTH"):
        rm_scaling.parse_size("2-64")


# ------------------------------------------------------------------------------------------ tiny runs

def test_overoptimisation_tiny(tiny_run, tmp_path):
    out = tmp_path / "overopt"
    m = overoptimisation.main(["--preset", "tiny", f"--run={tiny_run}", f"--out={out}", "--progress=false"])
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["ppo"]["points"] == json.loads(json.dumps(m["ppo"]["points"]))
    assert png(out / "overoptimisation.png")
    pts = m["ppo"]["points"]
    assert [p["iter"] for p in pts] == [0, 2, 4]                      # every eval_interval and the end
    assert pts[0]["kl"] == 0.0                                        # evaluation 0 is the SFT model itself
    for p in pts + m["best_of_n"]["points"]:
        assert 0.0 <= p["gold_ci"][0] <= p["gold"] <= p["gold_ci"][1] <= 1.0 and p["kl"] >= 0.0
        assert p["sqrt_kl"] == pytest.approx(math.sqrt(p["kl"]))
    # the tracked SFT point is what the gold evaluator says of the SFT model on the same prompts and seed
    sft, tok = ckpt_io.load_model(tiny_run / "sft")
    direct = GoldEvaluator(8, seed=0, max_new_tokens=12)(sft, tok, temperature=1.0, seed=0)
    assert pts[0]["gold"] == pytest.approx(direct["gold"])
    bon = m["best_of_n"]["points"]
    assert [p["n"] for p in bon] == [1, 2, 4] and [p["kl"] for p in bon] == [best_of_n_kl(n) for n in (1, 2, 4)]
    # the proxy's pick among more of the same samples can only score higher (the proxy's mean is monotone)
    assert all(a["rm"] <= b["rm"] + 1e-9 for a, b in zip(bon, bon[1:]))
    assert all(a["perfect_rm_gold"] <= b["perfect_rm_gold"] + 1e-9 for a, b in zip(bon, bon[1:]))
    assert m["ppo"]["peak"]["gold"] == max(p["gold"] for p in pts)
    greedy = GoldEvaluator(8, seed=0, max_new_tokens=12)(sft, tok, temperature=0.0)["gold"]
    assert pts[0]["gold_greedy"] == pytest.approx(greedy) == pytest.approx(m["ppo"]["greedy"]["start"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "](overoptimisation.png)" in report and "## Reading" in report and "**PPO" in report
    # a second run reuses the finished PPO and best-of-N (same settings) and reproduces the numbers
    mtime = os.path.getmtime(out / "ppo" / "model.pt")
    again = overoptimisation.main(["--preset", "tiny", f"--run={tiny_run}", f"--out={out}", "--progress=false"])
    assert os.path.getmtime(out / "ppo" / "model.pt") == mtime
    assert again["best_of_n"]["points"] == m["best_of_n"]["points"]


def test_comparison_files_are_nested_prefixes(tiny_run, tmp_path):
    """0.5x is the first half of the run's comparisons, 2x all of them then as many freshly simulated ones."""
    cfg = rm_scaling.RMScalingConfig(run=str(tiny_run), fractions=[0.5, 1.0, 2.0], progress=False)
    paths = {p: str(tiny_run / p) for p in ("sft", "reward_model", "pretrain")}
    base = rm_scaling.load_config(rm_scaling.reward_model.RMConfig, paths["reward_model"])
    files = rm_scaling.comparison_files(cfg, paths, base, str(tmp_path))
    lines = {f: open(p, encoding="utf-8").read().splitlines() for f, p in files.items()}
    run_lines = (tiny_run / "reward_model" / "data" / "rm_train.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[1.0] == run_lines and len(run_lines) == 32
    assert lines[0.5] == run_lines[:16] and lines[2.0][:32] == run_lines and len(lines[2.0]) == 64
    extra = [json.loads(x) for x in lines[2.0][32:]]
    assert all(len(r["responses"]) == len(r["ranks"]) == len(json.loads(run_lines[0])["responses"]) for r in extra)


@pytest.mark.slow
def test_rm_scaling_tiny(tiny_run, tmp_path):
    out = tmp_path / "rm_scaling"
    m = rm_scaling.main(["--preset", "tiny", f"--run={tiny_run}", f"--out={out}", "--progress=false"])
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["reading"] == json.loads(json.dumps(m["reading"]))
    assert png(out / "rm_scaling.png") and "## Reading" in (out / "report.md").read_text(encoding="utf-8")
    pts = m["comparisons"]
    assert [p["fraction"] for p in pts] == [0.5, 1.0, 2.0] and [p["train_prompts"] for p in pts] == [16, 32, 64]
    assert [p["steps"] for p in pts] == [2, 4, 8]                     # the run's epochs (1) over 8-prompt batches
    run_summary = ckpt_io.read_summary(tiny_run / "reward_model")
    one = pts[1]
    assert one["dir"] == str(tiny_run / "reward_model")              # the 1x point is the run's own RM
    assert one["val_accuracy"] == run_summary["val_accuracy"]
    for k in rm_scaling.PROBES:                                       # probes recomputed exactly as the stage does
        assert one["probes"][k] == pytest.approx(run_summary["probes"][k])
    assert len({p["label_agreement"] for p in pts + m["sizes"]}) == 1    # one held-out set, one ceiling
    for p in pts + m["sizes"]:
        assert 0.0 <= p["val_accuracy"] <= 1.0 and 0.0 <= p["probes"]["correct_vs_near_miss"] <= 1.0
    (size,) = m["sizes"]
    assert size["spec"] == "1x16" and size["n_layer"] == 1 and size["params"] < one["params"]
    assert [p["label"] for p in m["ppo"]] == ["0.5x", "2x"]
    assert m["ppo"][0]["sft_gold"] == m["ppo"][1]["sft_gold"]         # the same SFT start, prompts and samples
    for p in m["ppo"]:
        assert p["gold_diff_ci"][0] <= p["gold_diff"] <= p["gold_diff_ci"][1] and p["kl"] >= 0.0
    # a second run trains nothing again (every part finished with the same settings) and reads the same numbers
    parts = [out / "rm_0.5x", out / "rm_2x", out / "size_1x16" / "pretrain", out / "size_1x16" / "sft",
             out / "size_1x16" / "reward_model", out / "ppo_0.5x", out / "ppo_2x"]
    mtimes = [os.path.getmtime(p / "model.pt") for p in parts]
    again = rm_scaling.main(["--preset", "tiny", f"--run={tiny_run}", f"--out={out}", "--progress=false"])
    assert [os.path.getmtime(p / "model.pt") for p in parts] == mtimes
    assert again["comparisons"] == m["comparisons"] and again["ppo"] == m["ppo"]
