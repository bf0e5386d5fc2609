"""Device correctness: every sampling generator and every batch follows the model's device.

On a CPU-only machine a generator made without a device and a model on the CPU agree by accident; on a
GPU, torch.multinomial then fails ("Expected a 'cuda' device type for generator but found 'cpu'"), which
is how PPO, GRPO and best-of-N once crashed on CUDA. The CPU tests below catch that class of bug without
a GPU: torch.Generator is replaced by a subclass that remembers which device it was *asked* for, and
torch.multinomial by a spy that checks every generator reaching it was asked for the probabilities'
device. The `gpu` tests run the real thing on CUDA (skipped without one):

    python -m pytest tests/test_device.py -q              # CPU checks
    python -m pytest -m gpu -q                             # on a machine with a CUDA GPU
"""

import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from minigpt import checkpoint as ckpt_io
from minigpt.generate import generate
from minigpt.trainer import autocast_context
from rlhf import best_of_n, data as D, dpo, grpo, ppo
from rlhf.chat import ChatSession
from rlhf.comparisons import sample_responses
from rlhf.gold import GoldEvaluator
from rlhf.rollout import generate_responses, rm_reward, sampling_generator
from rlhf.world import make_rankings
from tests.tiny_rl import convs_of, prompts_of, tiny_gpt, tiny_rm  # and the `tok` fixture of conftest.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_GENERATOR, REAL_MULTINOMIAL = torch.Generator, torch.multinomial


class RecordingGenerator(REAL_GENERATOR):
    """A torch.Generator that remembers the device it was created for (None: none was given)."""

    def __new__(cls, device=None):
        g = REAL_GENERATOR.__new__(cls) if device is None else REAL_GENERATOR.__new__(cls, device)
        g.requested_device = device
        return g

    def __init__(self, device=None):
        pass


@pytest.fixture
def generators(monkeypatch):
    """Every torch.multinomial call made while the test runs, as (asked-for device, probabilities' device)."""
    calls = []

    def spy(probs, num_samples, *args, generator=None, **kwargs):
        asked = getattr(generator, "requested_device", "no generator") if generator is not None else "no generator"
        calls.append((asked, probs.device))
        return REAL_MULTINOMIAL(probs, num_samples, *args, generator=generator, **kwargs)

    monkeypatch.setattr(torch, "Generator", RecordingGenerator)
    monkeypatch.setattr(torch, "multinomial", spy)
    return calls


def assert_generators_follow_the_model(calls, what):
    assert calls, f"{what}: no sampling happened (the test would prove nothing)"
    for asked, device in calls:
        assert asked is not None and asked != "no generator", (
            f"{what}: a sampling generator was created without a device (torch.Generator()); on a GPU "
            f"torch.multinomial fails. Create it on the model's device (rlhf.rollout.sampling_generator).")
        assert torch.device(asked).type == device.type, f"{what}: generator on {asked}, probabilities on {device}"


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("device_runs")
    sft, rm = str(root / "sft"), str(root / "rm")
    ckpt_io.save_model(sft, tiny_gpt(tok.vocab_size), tok)
    tiny_rm(tok.vocab_size).save(rm, tok)
    return sft, rm, root


def test_ppo_rollout_samples_with_a_generator_on_the_models_device(generators, tok, run_dirs):
    sft, rm, root = run_dirs
    cfg = replace(ppo.PPOConfig(), **{**ppo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm, "progress": False})
    policy, ref, reward_model, value, _ = ppo.build_models(cfg, torch.device("cpu"))
    ppo.collect_rollout(policy, ref, value, rm_reward(reward_model, tok), convs_of(4), prompts_of(tok, 4), cfg, 0.1,
                        D.stop_token_id(tok), D.pad_token_id(tok), sampling_generator(policy, 0, "rollout", 0))
    assert_generators_follow_the_model(generators, "PPO rollout")


def test_ppo_stage_samples_with_generators_on_the_models_device(generators, tok, run_dirs):
    """The whole stage (rollouts and its in-training gold evaluation), as `python -m rlhf.ppo` runs it."""
    sft, rm, root = run_dirs
    cfg = replace(ppo.PPOConfig(), **{**ppo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm, "progress": False,
                                      "out_dir": str(root / "ppo"), "max_iters": 1, "eval_interval": 1})
    ppo.train_ppo(cfg, ppo.gold_evaluator(cfg, GoldEvaluator))
    assert_generators_follow_the_model(generators, "PPO stage")


def test_grpo_best_of_n_evaluation_chat_and_comparisons_follow_the_models_device(generators, tok, run_dirs):
    sft, rm, root = run_dirs
    policy, _ = ckpt_io.load_model(sft)
    reward_model = tiny_rm(tok.vocab_size)
    cfg = replace(grpo.GRPOConfig(), **{**grpo.PRESETS["tiny"], "progress": False})
    grpo.collect_groups(policy, policy, rm_reward(reward_model, tok), convs_of(2), prompts_of(tok, 2), cfg,
                        D.stop_token_id(tok), D.pad_token_id(tok), sampling_generator(policy, 0, "rollout", 0))
    assert_generators_follow_the_model(generators, "GRPO rollout")
    generators.clear()
    best_of_n.sample_candidates(policy, reward_model, tok, convs_of(2), 3, 6)
    assert_generators_follow_the_model(generators, "best-of-N")
    generators.clear()
    generate_responses(policy, tok, convs_of(3), 6, temperature=1.0)
    assert_generators_follow_the_model(generators, "evaluation")
    generators.clear()
    sample_responses(policy, tok, convs_of(3), 1.0, 6, seed=(0, "train"), batch_size=2, progress=False)
    assert_generators_follow_the_model(generators, "the reward model's comparison sampling")
    generators.clear()
    ChatSession(policy, tok, temperature=1.0, max_new_tokens=4).reply("What is 3 plus 4?")
    assert_generators_follow_the_model(generators, "chat")


def test_ptx_windows_are_built_on_the_models_device(tok):
    """PPO-ptx's corpus windows live where the model does (they were once built on the CPU: 'index is on cpu')."""
    cfg = replace(ppo.PPOConfig(), **ppo.PRESETS["tiny"])
    tokens = ppo.ptx_tokens(tok, cfg, torch.device("meta"))
    x, y = ppo.ptx_batch(tokens, cfg, torch.Generator().manual_seed(0))
    assert tokens.device.type == x.device.type == y.device.type == "meta"


def test_a_generator_on_another_device_is_a_clear_error(tok):
    policy = tiny_gpt(tok.vocab_size).to("meta")          # a stand-in for a GPU: any device but the CPU
    with pytest.raises(ValueError, match="create it with torch.Generator"):
        generate(policy, [[1, 2, 3]], 2, generator=torch.Generator())


# ----------------------------------------------------------------------------- on a real GPU

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
def test_gpu_tiny_pipeline_runs_end_to_end(tmp_path):
    out = tmp_path / "tiny"
    r = subprocess.run([sys.executable, "-m", "rlhf.pipeline", "--preset", "tiny", f"--out={out}", "--progress=false",
                        "--device=cuda"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (out / "metrics.json").exists() and (out / "report.md").exists()


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("stage", ["rlhf.dpo", "rlhf.grpo", "rlhf.best_of_n"])
def test_gpu_stage_smoke(tmp_path, tok, stage):
    sft, rm = str(tmp_path / "sft"), str(tmp_path / "rm")
    ckpt_io.save_model(sft, tiny_gpt(tok.vocab_size), tok)
    tiny_rm(tok.vocab_size).save(rm, tok)
    r = subprocess.run([sys.executable, "-m", stage, "--preset", "tiny", f"--sft_dir={sft}", f"--rm_dir={rm}",
                        f"--out_dir={tmp_path / 'out'}", "--device=cuda"] +
                       (["--progress=false"] if stage != "rlhf.best_of_n" else []),
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.gpu
@cuda
def test_gpu_chat_answers(tok):
    policy = tiny_gpt(tok.vocab_size).cuda()
    text = ChatSession(policy, tok, temperature=1.0, max_new_tokens=4).reply("What is 3 plus 4?")
    assert isinstance(text, str)


@pytest.mark.gpu
@cuda
def test_gpu_first_minibatch_ratio_is_exactly_one_under_autocast(tok, run_dirs):
    """π_old is computed in the update's precision (bf16 autocast on CUDA), so the first minibatch's ratio
    is 1 — it was off by up to 0.035 in log space when π_old was computed in fp32 and the update in bf16."""
    sft, rm, _ = run_dirs
    cfg = replace(ppo.PPOConfig(), **{**ppo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm, "ptx_coef": 0.0})
    device = torch.device("cuda")
    policy, ref, reward_model, value, _ = ppo.build_models(cfg, device)
    ctx = autocast_context(device, "auto")
    ro = ppo.collect_rollout(policy, ref, value, rm_reward(reward_model, tok), convs_of(8), prompts_of(tok, 8), cfg,
                             0.1, D.stop_token_id(tok), D.pad_token_id(tok), sampling_generator(policy, 0, "r"), ctx)
    ac = ppo.ActorCritic(policy, value, cfg.temperature)
    opt = torch.optim.AdamW(ac.parameters(), lr=1e-3)
    stats = ppo.ppo_update(ac, opt, ro, cfg, torch.Generator().manual_seed(0), ctx=ctx)
    assert abs(stats["first_ratio_mean"] - 1.0) < 1e-3 and abs(stats["first_approx_kl"]) < 1e-4, stats


@pytest.mark.gpu
@cuda
def test_gpu_dpo_starts_at_ln2(tok, tmp_path):
    sft, rm = str(tmp_path / "sft"), str(tmp_path / "rm")
    ckpt_io.save_model(sft, tiny_gpt(tok.vocab_size), tok)
    D.write_jsonl(os.path.join(rm, "data", "rm_train.jsonl"), make_rankings(24, k=3, seed=0))
    D.write_jsonl(os.path.join(rm, "data", "rm_val.jsonl"), make_rankings(8, k=3, seed=1, split="val"))
    cfg = replace(dpo.DPOConfig(), **{**dpo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm, "device": "cuda",
                                      "out_dir": str(tmp_path / "dpo"), "progress": False})
    s = dpo.train_dpo(cfg)
    assert s["val_loss_init"] == pytest.approx(math.log(2), abs=1e-3)
