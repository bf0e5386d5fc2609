"""Shared pieces of the RL-stage tests (PPO, GRPO, DPO): a tokenizer trained on a few world phrases, tiny
random policies and reward models, and rendered world prompts. conftest.py serves `tok` as the default
`tok` fixture of every test module (a module may define its own). Also run_pipeline: `python -m
rlhf.pipeline` in a subprocess, as a user runs it.
"""

import os
import subprocess
import sys

import torch

from minigpt import GPT
from minigpt.config import model_preset
from minigpt.tokenizer import train_bpe
from rlhf import data as D
from rlhf.reward import RewardModel
from rlhf.world import make_prompts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_pipeline(out, *args: str, preset: str = "tiny", timeout: int = 600) -> str:
    """`python -m rlhf.pipeline --preset PRESET --out OUT --progress=false ARGS...` from the repository root;
    fails the test with the end of its output unless it exits 0. Returns its stdout."""
    p = subprocess.run([sys.executable, "-m", "rlhf.pipeline", "--preset", preset, "--out", str(out),
                        "--progress=false", *args], capture_output=True, encoding="utf-8", cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT}, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


TEXT = ("Reverse the word cat. tac. What is 3 plus 4? 7. Sort these numbers: 3, 1, 2. 1, 2, 3. "
        "The capital of Quon is Dasha. I don't know. Sorry, I can't help with that. Hello there! ") * 4


def tiny_tokenizer():
    """A 302-token BPE (256 bytes + 40 merges + 6 specials) trained on TEXT."""
    return train_bpe(TEXT, vocab_size=256 + 40 + 6)


def tiny_gpt(vocab_size: int, seed: int = 0, dropout: float = 0.0, sharpen: float = 4.0) -> GPT:
    """The tiny preset with embeddings scaled by `sharpen`: sharper-than-init logits, so samples are not
    uniform noise and log-probs differ visibly between tokens."""
    torch.manual_seed(seed)
    m = GPT(model_preset("tiny", vocab_size=vocab_size, dropout=dropout))
    with torch.no_grad():
        m.transformer.wte.weight.mul_(sharpen)
    return m.eval()


def tiny_rm(vocab_size: int, seed: int = 1) -> RewardModel:
    """A tiny random reward model whose head gives visibly different scores to different responses."""
    torch.manual_seed(seed)
    rm = RewardModel(model_preset("tiny", vocab_size=vocab_size))
    with torch.no_grad():
        rm.head.weight.normal_(0.0, 0.5)
    return rm.eval()


def convs_of(n: int = 8) -> list[list[dict]]:
    """n train conversations of the instruction world (seed 3)."""
    return [ex.conversation for ex in make_prompts("train", n, seed=3)]


def prompts_of(tok, n: int = 8, max_len: int = 40) -> list[list[int]]:
    """The n conversations of convs_of rendered for generation, each at most max_len tokens."""
    return [D.render_prompt(c, tok, max_len=max_len) for c in convs_of(n)]
