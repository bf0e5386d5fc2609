"""Device correctness: every sampling generator and every batch follows the model's device, and the RL
stages' precision policy holds under bf16 autocast.

On a CPU-only machine a generator made without a device and a model on the CPU agree by accident; on a
GPU, torch.multinomial then fails ("Expected a 'cuda' device type for generator but found 'cpu'"), which
is how PPO, GRPO and best-of-N once crashed on CUDA. The CPU tests below catch that class of bug without
a GPU: torch.Generator is replaced by a subclass that remembers which device it was *asked* for, and
torch.multinomial by a spy that checks every generator reaching it was asked for the probabilities'
device; the RL math's tensor functions run on the "meta" device, where a tensor they made on the CPU
fails as on CUDA. The precision tests run the bf16 path that CUDA takes by default on the CPU (dtype="bfloat16"
autocasts there too): π_old, π_ref and DPO's reference are computed in the update's precision. The `gpu`
tests run the real thing on CUDA (skipped without one):

    python -m pytest tests/test_device.py -q              # CPU checks
    python -m pytest -m gpu -q                             # on a machine with a CUDA GPU
"""

import json
import math
import os
import platform
import shutil
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch

from minigpt import checkpoint as ckpt_io
from minigpt.distributed import DistInfo, all_reduce_max, all_reduce_mean, setup_distributed
from minigpt.generate import generate
from minigpt.model import save_pretrained
from minigpt import trainer
from minigpt.trainer import (LoopConfig, autocast_context, compute_dtype, configure_optimizer, load_training_state,
                             optimizer_step, save_training_state)
from rlhf import best_of_n, data as D, dpo, grpo, losses as L, pipeline, ppo
from rlhf.chat import ChatSession
from rlhf.comparisons import sample_responses
from rlhf.gold import GoldEvaluator
from rlhf.reward import RewardModel, last_token_values
from rlhf.rollout import (generate_responses, response_logits, rm_reward, sampling_generator, shift_to_response,
                          token_logprobs, trim_padding, truncate_after_stop)
from rlhf.world import make_rankings
from tests.grading import is_device_error
from tests.tiny_rl import convs_of, prompts_of, run_pipeline, tiny_gpt, tiny_rm  # and the `tok` fixture of conftest.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_GENERATOR, REAL_MULTINOMIAL = torch.Generator, torch.multinomial
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
cuda_bf16 = pytest.mark.skipif(not (torch.cuda.is_available() and trainer.has_bf16_hardware("cuda")),
                               reason="needs a CUDA GPU with bf16 hardware (compute capability 8.0 or later)")


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


# ----------------------------------------------------------------------------- collectives (torchrun)

@pytest.mark.parametrize("reduce", [all_reduce_mean, all_reduce_max])
def test_collectives_hand_the_backend_a_tensor_on_its_own_device(monkeypatch, reduce):
    """nccl reduces only CUDA tensors: the loss / stop flags and the logged stats, once made with torch.tensor()
    on the CPU, crashed every torchrun stage on GPUs at its first reduction. The helpers build the tensor on
    DistInfo.device ("meta" stands in for the GPU here; the fake all_reduce stops before any copy back)."""
    seen = []

    class Reduced(Exception):
        pass

    def fake_all_reduce(t, op=None):
        seen.append((t.device.type, t.dtype))
        raise Reduced

    monkeypatch.setattr(torch.distributed, "all_reduce", fake_all_reduce)
    info = DistInfo(rank=0, world_size=2, enabled=True, device="meta")
    with pytest.raises(Reduced):
        reduce([1.0, 0.0], info)
    assert seen == [("meta", torch.float64)]
    assert reduce([1.5, 2.0], DistInfo()) == [1.5, 2.0]            # a single process: the numbers themselves


@pytest.mark.parametrize("backend, device", [
    ("gloo", "cpu"),
    pytest.param("nccl", "cuda:0", marks=[pytest.mark.gpu, cuda]),
])
def test_collectives_on_a_real_process_group(backend, device):
    """One process of a real group: the numbers come back as numbers (a mean over one process being the
    numbers). Under nccl a CPU tensor fails, as it did in every torchrun stage on GPUs before the helpers
    built it on DistInfo.device."""
    if device.startswith("cuda"):
        torch.cuda.set_device(0)
    torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        info = DistInfo(rank=0, world_size=1, enabled=True, device=device)
        assert all_reduce_mean([0.25, 3.0], info) == [0.25, 3.0]
        assert all_reduce_max([1.0, -2.0], info) == [1.0, -2.0]
    finally:
        torch.distributed.destroy_process_group()


def test_torchrun_on_mps_is_a_clear_error(monkeypatch):
    """torch.distributed has no backend for MPS tensors (gloo would fail at DDP's first broadcast)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit, match="torchrun needs --device=cuda"):
        setup_distributed("mps")


def test_torchrun_with_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    """--nproc_per_node=4 on a 2-GPU machine: processes 2 and 3 would ask for a GPU that is not there
    (CUDA's "invalid device ordinal" traceback); they stop with one line saying how many GPUs there are."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SystemExit, match=r"for GPU 3 \(LOCAL_RANK\), but this machine has 2 CUDA GPU\(s\): use "
                                         r"--nproc_per_node=2 or fewer"):
        setup_distributed("cuda")


# ----------------------------------------------------------------------------- the RL math follows its inputs
# The "meta" device (shapes without data) stands in for a GPU: a tensor the code creates on the CPU
# (torch.ones(K, K) without device=...) and combines with its inputs fails there as it fails on CUDA.

def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="meta")


B, T, V = 3, 5, 7
RL_MATH = {
    "masked_mean": lambda: L.masked_mean(meta(B, T), meta(B, T)),
    "masked_whiten": lambda: L.masked_whiten(meta(B, T), meta(B, T)),
    "pairwise_reward_loss": lambda: L.pairwise_reward_loss(meta(B), meta(B), meta(B)),
    "ranked_reward_loss": lambda: L.ranked_reward_loss(meta(B, 4)),
    "ranked_reward_loss (pair mask)": lambda: L.ranked_reward_loss(meta(B, 4), meta(B, 4, 4)),
    "token_logprobs": lambda: L.token_logprobs(meta(B, T, V), meta(B, T, dtype=torch.long)),
    "entropy_from_logits": lambda: L.entropy_from_logits(meta(B, T, V)),
    "gae": lambda: L.gae(meta(B, T), meta(B, T), meta(B, T), 1.0, 0.95),
    "ppo_policy_loss": lambda: L.ppo_policy_loss(meta(B, T), meta(B, T), meta(B, T), meta(B, T), 0.2),
    "ppo_value_loss": lambda: L.ppo_value_loss(meta(B, T), meta(B, T), meta(B, T), meta(B, T), 0.2),
    "dpo_loss": lambda: L.dpo_loss(meta(B), meta(B), meta(B), meta(B), 0.1),
    "group_advantages": lambda: L.group_advantages(meta(6), 3),
    "rloo_advantages": lambda: L.rloo_advantages(meta(6), 3),
    "kl_k3": lambda: L.kl_k3(meta(B, T), meta(B, T)),
    "shift_to_response": lambda: shift_to_response(meta(B, T, V), 2, 0.7),
    "truncate_after_stop": lambda: truncate_after_stop(meta(B, T, dtype=torch.long), 1, 0),
    "last_token_values": lambda: last_token_values(meta(B, T), meta(B, T, dtype=torch.long)),
    "GPT forward (left-padded, with targets)": lambda: tiny_gpt(64).to("meta")(
        meta(B, T, dtype=torch.long), targets=meta(B, T, dtype=torch.long),
        attention_mask=meta(B, T, dtype=torch.long)),
    "reward model forward": lambda: tiny_rm(64).to("meta")(meta(B, T, dtype=torch.long), meta(B, T, dtype=torch.long)),
}


def tensors_in(out):
    items = out if isinstance(out, (tuple, list)) else (out,)
    for x in items:
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, dict):
            yield from (v for v in x.values() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("name", sorted(RL_MATH))
def test_the_rl_math_keeps_to_its_inputs_device(name):
    """Every tensor function of the RL math (rlhf.losses, the response helpers, the reward model's last-token
    gather) and the models' forward passes (positions and masks from the attention mask), fed tensors on
    another device than the CPU, compute there. (kl_shaped_rewards indexes by the
    data, which "meta" cannot run; the PPO stage's generator test above runs it on the CPU.)"""
    try:
        out = RL_MATH[name]()
    except RuntimeError as e:
        if not is_device_error(e):
            raise                                    # not a device error: show it as it is
        pytest.fail(f"{name} made a tensor on the CPU while its inputs are on another device (on a GPU: a crash). "
                    f"Create it on the inputs' device (device=x.device, torch.zeros_like, ...). {e}")
    got = list(tensors_in(out))
    assert got and all(x.device.type == "meta" for x in got), [x.device for x in got]


# ----------------------------------------------------------------------------- the precision policy, CPU and GPU
# autocast_context(device, "bfloat16") is bf16 autocast on the CPU too, so the precision policy that CUDA runs
# under dtype="auto" (docs/DESIGN.md, "Precision") is checked on the CPU with the same code paths, and again on
# CUDA by the `gpu` copies of these tests.

BF16 = "bfloat16"
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, cuda, cuda_bf16])]
# How close "the same numbers" must be. CPU: from the measurements quoted in the tests, with margin on both
# sides. CUDA: not measured yet (cuBLAS and SDPA choose kernels by shape, so batches padded differently may
# round differently); the looser bounds the first GPU checks used, and the bug must still stand out.
TOL = {"cpu": dict(mean_gap=1e-4, ratio=2e-5, approx_kl=1e-7, ln2=1e-7),
       "cuda": dict(mean_gap=1e-3, ratio=1e-3, approx_kl=1e-4, ln2=1e-3)}


def test_bf16_where_it_is_not_set_up_is_a_clear_error():
    with pytest.raises(SystemExit, match="only set up for cuda and cpu"):
        autocast_context("mps", BF16)                       # the device need not exist to be refused
    assert isinstance(autocast_context("mps", "auto"), nullcontext)     # float32 on MPS by default


@pytest.fixture
def fake_gpu(monkeypatch):
    """Stand in for a CUDA GPU of a given compute capability: fake_gpu("Tesla T4", (7, 5))."""
    def install(name, capability):
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(trainer, "_NOTED", set())
    return install


CU128 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]          # torch 2.11's CUDA 12.8 build
CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]   # 13.0: PTX as well
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.mark.parametrize("archs, capability, runs", [
    (CU128, (7, 5), True),      # Colab's T4
    (CU128, (8, 9), True),      # L4, RTX 40xx: sm_86 kernels run on 8.9
    (CU130, (13, 0), True),     # a GPU newer than the build: compute_120 PTX is compiled for it
    (CU128, (7, 0), False),     # V100
    (CU128, (6, 0), False),     # Kaggle's P100
    (CU126, (6, 1), True),      # GTX 1080 on the CUDA 12.6 build: sm_60 kernels
    (CU126, (7, 0), True),
    (CU126, (10, 0), False),    # no Blackwell kernels and no PTX in that list
    (["gfx90a"], (9, 0), True),  # a list it cannot read: left to torch
])
def test_a_gpu_this_torch_has_no_kernels_for_is_named_not_crashed_on(fake_gpu, monkeypatch, capsys, archs,
                                                                     capability, runs):
    """torch 2.11's default CUDA build has no kernels for a V100 or P100: they would fail at the first kernel
    ("no kernel image is available"). --device=cuda says so in one line (with the build that has them);
    --device=auto runs on the CPU with one note. GPUs the build does cover are used as before."""
    fake_gpu("Tesla V100-SXM2-32GB", capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: archs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(trainer, "_mps_available", lambda: False)
    if runs:
        assert trainer.pick_device("auto").type == trainer.pick_device("cuda").type == "cuda"
        assert capsys.readouterr().out == ""
        return
    with pytest.raises(SystemExit, match=r"error: --device=cuda: this torch \(.*\) has no kernels for Tesla V100-SXM2-"
                                         r"32GB \(compute capability .*; it is built for sm_") as e:
        trainer.pick_device("cuda")
    older = capability < (7, 5) and platform.machine().lower() in ("x86_64", "amd64")
    assert ("whl/cu126" in str(e.value)) == older, str(e.value)               # older GPUs: the 12.6 build
    assert trainer.pick_device("auto").type == "cpu" and trainer.pick_device("auto").type == "cpu"
    out = capsys.readouterr().out
    assert out.count("note:") == 1 and out.strip().endswith("running on the CPU instead"), out


@pytest.mark.skipif(not hasattr(torch.cuda, "_code_compatible_with_device"), reason="torch has no table of its own")
def test_torchs_own_compatibility_table_counts_too(fake_gpu, monkeypatch):
    """Jetson Thor was renumbered 10.1 -> 11.0 (CUDA 13): sm_101 kernels run on it though the majors differ;
    torch's own table knows, so the GPU is not refused."""
    fake_gpu("NVIDIA Jetson Thor", (11, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_87", "sm_101"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert trainer.missing_gpu_kernels(torch.device("cuda", 0)) == ""


def test_a_gpu_without_bf16_hardware_computes_in_float32(fake_gpu, capsys, monkeypatch):
    """Colab's T4 (7.5), V100 (7.0) and Kaggle's P100 (6.0) only emulate bf16 (slowly; older torch refuses bf16
    autocast there with a RuntimeError), so --dtype=auto computes in float32 on them, with one note, and
    --dtype=bfloat16 is a one-line error; from Ampere (8.0) on, auto is bf16 autocast."""
    fake_gpu("Tesla T4", (7, 5))
    assert compute_dtype("cuda", "auto") == torch.float32, "a T4 has no bf16 hardware: auto should be float32 there"
    assert isinstance(autocast_context("cuda:0", "auto"), nullcontext), "no autocast on a GPU without bf16 hardware"
    out = capsys.readouterr().out
    assert out.count("note:") == 1 and "Tesla T4" in out and "float32" in out, f"want one note naming the GPU: {out!r}"
    with pytest.raises(SystemExit, match=r"Tesla T4, compute capability 7\.5\) has no bf16 hardware"):
        compute_dtype("cuda", "bfloat16")
    assert compute_dtype("cuda", "float32") == torch.float32
    fake_gpu("NVIDIA A100-SXM4-40GB", (8, 0))
    assert compute_dtype("cuda", "auto") == compute_dtype("cuda:0", "bfloat16") == torch.bfloat16
    assert compute_dtype("cuda", "float32") == torch.float32 and capsys.readouterr().out == ""
    fake_gpu("Tesla V100-SXM2-32GB", (7, 0))
    monkeypatch.setenv("RANK", "1")                             # under torchrun only rank 0 says it
    assert compute_dtype("cuda:1", "auto") == torch.float32 and capsys.readouterr().out == ""


def test_out_of_gpu_memory_in_a_stage_command_is_one_line_naming_the_setting_that_needs_less(monkeypatch):
    """A stage's own command that runs out of GPU memory: one line (torch's account up to the free memory,
    then the flags), exit status 1. PPO and GRPO split their update into micro-batches; the other stages
    halve the micro-batch and double the accumulation, keeping the rows per optimizer step. No flag is
    offered where none would help or the halved batch would not split into whole rows per process."""
    said = ("CUDA out of memory. Tried to allocate 512.00 MiB. GPU 0 has a total capacity of 15.77 GiB of which "
            "100.00 MiB is free. Process 7 has 15.66 GiB memory in use.\nOf the allocated memory ...")

    def out_of_memory(cfg):
        raise torch.cuda.OutOfMemoryError(said)
    again = "run again with "
    for world, cfg, want in [
            (1, LoopConfig(batch_size=32, grad_accum=2), again + "--batch_size=16 --grad_accum=4 (now 32 and 2: "),
            (1, dpo.DPOConfig(batch_size=16), again + "--batch_size=8 --grad_accum=2 (now 16 and 1: "),
            (1, ppo.PPOConfig(micro_batch_size=16), again + "--micro_batch_size=8 (now 16: the same update"),
            (1, grpo.GRPOConfig(micro_batch_size=1), "; use a GPU with more memory or a smaller model"),
            (1, ppo.PPOConfig(micro_batch_size=1), "; use a GPU with more memory or a smaller model"),
            (1, best_of_n.BestOfNConfig(), "; use a GPU with more memory or a smaller model"),    # no grad_accum
            (1, LoopConfig(batch_size=3), "; use a GPU with more memory or a smaller model"),      # 1 x 2 != 3
            (8, LoopConfig(batch_size=8), "; use a GPU with more memory or a smaller model"),      # 4 rows, 8 GPUs
            (4, LoopConfig(batch_size=16), again + "--batch_size=8 --grad_accum=2 (now 16 and 1: ")]:
        monkeypatch.setenv("WORLD_SIZE", str(world))
        with pytest.raises(SystemExit) as e:
            trainer.run_entry_point(out_of_memory, cfg)
        msg = str(e.value)
        assert msg.startswith("error: out of GPU memory (CUDA out of memory. Tried to allocate 512.00 MiB. GPU 0 "
                              "has a total capacity of 15.77 GiB of which 100.00 MiB is free.); "), msg
        assert want in msg and "\n" not in msg, (type(cfg).__name__, world, msg)


def test_a_blank_exercise_in_a_stage_command_is_still_one_line():
    """run_entry_point's handlers in order: a blank exercise (NotImplementedError, an Exception too) stays the
    course's one-line message, not caught by the torch.compile check that follows it."""
    def blank(cfg):
        raise NotImplementedError("exercise a2.sft_loss — see exercises/a2_sft.md §3")
    for cfg in (LoopConfig(), LoopConfig(compile=True)):
        with pytest.raises(SystemExit) as e:
            trainer.run_entry_point(blank, cfg)
        assert str(e.value).startswith("error: exercise a2.sft_loss — see exercises/a2_sft.md §3: not written yet")


def log_ratio_gaps(forward, ro, rows_split, device) -> tuple[float, float]:
    """(largest, mean) |log π - log π_old| over the rollout's response tokens, π from `forward` run under bf16
    autocast on the micro-batches rows_split, trimmed of padding as the update feeds them."""
    worst, total, count = 0.0, 0.0, 0.0
    with torch.no_grad(), autocast_context(device, BF16):
        for rows in rows_split:
            b = trim_padding({**ro.select(rows), "prompt_length": ro.prompt_length})
            logp = token_logprobs(forward(b), b["sequences"][:, b["prompt_length"]:])         # (b, n)
            gap = (logp - b["logprobs"]).abs() * b["response_mask"]                           # (b, n)
            worst = max(worst, gap.max().item())
            total, count = total + gap.sum().item(), count + b["response_mask"].sum().item()
    return worst, total / count


def check_old_log_probs(forward, rollout, n_rows, micro_batch_size, device, what):
    """π_old (scored during the rollout, under the update's autocast) against the update's own forward:
    the same numbers on the rollout's own micro-batches (bit for bit on the CPU), and a mean |log ratio| far
    below what float32 π_old against a bf16 update gives (the bug seen on CUDA), on shuffled micro-batches
    as the update draws them (whose other shapes round a few bf16 values differently)."""
    own_rows = torch.arange(n_rows).split(micro_batch_size)
    shuffled = torch.randperm(n_rows, generator=torch.Generator().manual_seed(1)).split(3)
    ro, ro_fp32 = rollout(autocast_context(device, BF16)), rollout(None)
    worst_own, _ = log_ratio_gaps(forward, ro, own_rows, device)
    _, mean_shuffled = log_ratio_gaps(forward, ro, shuffled, device)
    _, mean_bug = log_ratio_gaps(forward, ro_fp32, shuffled, device)
    if device == "cpu":
        assert worst_own == 0.0, (f"{what}: π_old and the update's π differ by up to {worst_own:.2e} in log space "
                                  f"on the same micro-batch under bf16: are the rollout's forward passes run under "
                                  f"the update's autocast (ctx)?")
    tol = TOL[device]["mean_gap"]
    assert mean_shuffled < tol, f"{what}: mean |log π - log π_old| {mean_shuffled:.2e} under bf16 (want < {tol})"
    assert mean_bug > 5 * mean_shuffled, (f"{what}: float32 π_old against a bf16 update should stand out "
                                          f"({mean_bug:.2e} vs {mean_shuffled:.2e})")


def ppo_setup(tok, run_dirs, device, n=16, micro_batch_size=4):
    sft, rm, _ = run_dirs
    cfg = replace(ppo.PPOConfig(), **{**ppo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm, "ptx_coef": 0.0,
                                      "micro_batch_size": micro_batch_size})
    policy, ref, reward_model, value, _ = ppo.build_models(cfg, torch.device(device))

    def rollout(ctx):
        return ppo.collect_rollout(policy, ref, value, rm_reward(reward_model, tok), convs_of(n), prompts_of(tok, n),
                                   cfg, 0.1, D.stop_token_id(tok), D.pad_token_id(tok),
                                   torch.Generator(device).manual_seed(0), ctx)

    return cfg, ppo.ActorCritic(policy, value, cfg.temperature), rollout


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_ppo_old_log_probs_are_the_updates_own_numbers(tok, run_dirs, device):
    """Measured on the CPU (tiny random models): mean |log ratio| 1e-6 on shuffled micro-batches, against
    1.2e-3 with float32 π_old (largest 8e-3; 0.035 in the CUDA run that found the bug)."""
    cfg, ac, rollout = ppo_setup(tok, run_dirs, device)
    check_old_log_probs(lambda b: ac(b["sequences"], b["attention_mask"], b["prompt_length"])[0], rollout, 16,
                        cfg.micro_batch_size, device, "PPO")


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_ppo_first_minibatch_ratio_is_one(tok, run_dirs, device):
    """The real update under bf16: the first minibatch's ratio is 1 and nothing is clipped. Measured on the
    CPU: |mean ratio - 1| 5e-7 and approx-KL 0 (float32 π_old: 2.4e-4 and 1.3e-6)."""
    cfg, ac, rollout = ppo_setup(tok, run_dirs, device, n=8, micro_batch_size=3)
    ro = rollout(autocast_context(device, BF16))
    opt = torch.optim.AdamW(ac.parameters(), lr=1e-3)
    stats = ppo.ppo_update(ac, opt, ro, replace(cfg, ppo_epochs=1, n_minibatches=2), torch.Generator().manual_seed(0),
                           ctx=autocast_context(device, BF16))
    assert abs(stats["first_ratio_mean"] - 1.0) < TOL[device]["ratio"], stats
    assert abs(stats["first_approx_kl"]) < TOL[device]["approx_kl"], stats
    assert stats["first_clipfrac"] == 0.0, stats


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_grpo_old_log_probs_are_the_updates_own_numbers(tok, run_dirs, device):
    sft, rm, _ = run_dirs
    cfg = replace(grpo.GRPOConfig(), **{**grpo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm, "micro_batch_size": 4})
    policy, _ = ckpt_io.load_model(sft, device)
    ref, _ = ckpt_io.load_model(sft, device)
    reward_model = RewardModel.load(rm, device)
    for model in (policy, ref):
        model.eval()                                        # dropout off, as the stage has it

    def rollout(ctx):
        return grpo.collect_groups(policy, ref, rm_reward(reward_model, tok), convs_of(4), prompts_of(tok, 4), cfg,
                                   D.stop_token_id(tok), D.pad_token_id(tok), torch.Generator(device).manual_seed(0),
                                   ctx)

    check_old_log_probs(lambda b: response_logits(policy, b["sequences"], b["attention_mask"], b["prompt_length"],
                                                  cfg.temperature),
                        rollout, 4 * cfg.group_size, cfg.micro_batch_size, device, "GRPO")


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_dpo_starts_at_ln2(tok, tmp_path, device):
    """DPO under bf16 autocast: the reference log-probs are computed in fit()'s precision, so π = π_ref gives
    ln 2 at step 0. Measured on the CPU: 2e-9 off; with float32 references against the bf16 policy, 6.5e-6."""
    sft, rm = str(tmp_path / "sft"), str(tmp_path / "rm")
    ckpt_io.save_model(sft, tiny_gpt(tok.vocab_size), tok)
    D.write_jsonl(os.path.join(rm, "data", "rm_train.jsonl"), make_rankings(24, k=3, seed=0))
    D.write_jsonl(os.path.join(rm, "data", "rm_val.jsonl"), make_rankings(8, k=3, seed=1, split="val"))
    cfg = replace(dpo.DPOConfig(), **{**dpo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm, "device": device,
                                      "dtype": BF16, "out_dir": str(tmp_path / "dpo"), "progress": False,
                                      "max_iters": 2})
    s = dpo.train_dpo(cfg)
    assert s["val_loss_init"] == pytest.approx(math.log(2), abs=TOL[device]["ln2"]), (
        "DPO's first validation loss is not ln 2 under bf16: are the reference log-probs computed under the "
        "autocast fit() uses?")


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """The tiny pipeline run with --dtype=bfloat16 on the CPU (about 11 s)."""
    out = tmp_path_factory.mktemp("bf16") / "tiny"
    run_pipeline(out, "--device=cpu", f"--dtype={BF16}")
    return out


def test_tiny_pipeline_runs_under_bf16_autocast_on_cpu(bf16_run):
    """Every training stage of the pipeline (pretraining, SFT, reward model, PPO, the headline's larger model)
    through the bf16 autocast paths that CUDA takes by default, on the CPU: a bf16 tensor meeting a float32
    one where an op wants one dtype fails here as it would on a GPU. (Sampling, best-of-N and evaluation run
    in float32 on every device; they complete the run on the bf16-trained models.)"""
    for stage in ("pretrain", "sft", "reward_model", "ppo", "pretrain_large", "sft_large"):
        with open(bf16_run / stage / "config.json", encoding="utf-8") as f:
            assert json.load(f)["dtype"] == BF16, f"{stage} did not run under --dtype={BF16}"
    with open(bf16_run / "metrics.json", encoding="utf-8") as f:
        m = json.load(f)
    for stage in ("sft", "ppo", "sft_large", "best_of_n"):
        assert math.isfinite(m[stage]["gold_score"]) and math.isfinite(m[stage]["rm_score"]), (stage, m[stage])


def test_gpu_name_and_peak_memory_per_stage_reach_the_report(bf16_run, tmp_path, monkeypatch):
    """On CUDA the pipeline records each stage's peak memory on its own GPU, its precision and the GPU's name
    in timings.json (torch.cuda's counters are stood in for here); a later re-run on a machine without CUDA
    (the report regenerated on a laptop) reads them from there and names the GPU in the report."""
    asked = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: asked.append(device))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: asked.append(device) or 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: asked.append(device) or "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: asked.append(device) or (9, 0))
    monkeypatch.setattr(torch.version, "hip", None)
    run = tmp_path / "run"
    shutil.copytree(bf16_run, run)
    timings = pipeline.Timings(str(run), torch.device("cuda", 1))
    timings.start("ppo")
    timings.stop("ppo", "auto")
    timings.start("tokenizer")
    timings.stop("tokenizer")                                                     # no GPU work: no precision
    assert asked and all(d == torch.device("cuda", 1) for d in asked), asked      # the run's GPU, not GPU 0
    monkeypatch.undo()
    run_pipeline(run, "--device=cpu")
    with open(run / "metrics.json", encoding="utf-8") as f:
        assert json.load(f)["gpu"] == {"name": "NVIDIA H200", "peak_memory_gb": {"ppo": 3.0, "tokenizer": 3.0},
                                       "precision": {"ppo": "bf16 autocast"}}
    text = (run / "report.md").read_text(encoding="utf-8")
    assert "(NVIDIA H200)" in text and "| peak GPU GiB | precision |" in text
    assert any(line.startswith("| ppo |") and line.endswith(" 3.00 | bf16 autocast |")
               for line in text.splitlines()), text


# ----------------------------------------------------------------------------- on a real GPU

@pytest.mark.gpu
@cuda
def test_gpu_tiny_pipeline_runs_end_to_end(tmp_path):
    out = tmp_path / "tiny"
    run_pipeline(out, "--device=cuda", timeout=900)
    assert (out / "report.md").exists()
    with open(out / "metrics.json", encoding="utf-8") as f:
        m = json.load(f)
    assert m["device"].startswith("cuda") and m["gpu"]["name"] and m["gpu"]["peak_memory_gb"]["ppo"] > 0, m.get("gpu")
    want = "bf16 autocast" if trainer.has_bf16_hardware("cuda") else "float32"     # float32 on a T4, V100, P100
    assert m["gpu"]["precision"]["ppo"] == want, m["gpu"]


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
                       cwd=ROOT, capture_output=True, encoding="utf-8", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("saved_on, resumed_on", [("cpu", "cuda"), ("cuda", "cpu")])
def test_gpu_a_checkpoint_resumes_on_the_other_device(tmp_path, tok, saved_on, resumed_on):
    """ckpt.pt from one device, resumed on the other: the optimizer takes this device's kernels (fused AdamW
    on CUDA keeps its step counters on the GPU) and the next steps run and stay finite."""
    cfg = LoopConfig(learning_rate=1e-3)
    x = torch.randint(0, tok.vocab_size, (2, 16))

    def steps(model, optimizer, device, n=2):
        for _ in range(n):
            loss = model(x.to(device), targets=x.to(device))[1]
            loss.backward()
            optimizer_step(model, optimizer)

    model = tiny_gpt(tok.vocab_size).to(saved_on)
    opt = configure_optimizer(model, cfg, saved_on)
    steps(model, opt, saved_on)
    save_training_state(str(tmp_path), model, opt, step=2)
    model = tiny_gpt(tok.vocab_size, seed=1).to(resumed_on)
    opt = configure_optimizer(model, cfg, resumed_on)
    load_training_state(str(tmp_path), model, opt)
    steps(model, opt, resumed_on)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.gpu
@cuda
def test_gpu_hugging_face_export_is_on_the_cpu(tok, tmp_path):
    """A CUDA model's GPT-2 export holds CPU tensors, so its pytorch_model.bin loads anywhere (no map_location)."""
    save_pretrained(tiny_gpt(tok.vocab_size).cuda(), tmp_path)
    sd = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert sd and {t.device.type for t in sd.values()} == {"cpu"}


@pytest.mark.gpu
@cuda
def test_gpu_chat_answers(tok):
    policy = tiny_gpt(tok.vocab_size).cuda()
    text = ChatSession(policy, tok, temperature=1.0, max_new_tokens=4).reply("What is 3 plus 4?")
    assert isinstance(text, str)
