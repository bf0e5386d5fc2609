"""rlhf.chat: one-shot mode, a scripted multi-turn session through stdin, history within the context.

    python -m pytest tests/test_chat.py -q
"""

import io
import os
import subprocess
import sys

import pytest
import torch

from minigpt.checkpoint import load_model, save_model
from minigpt.config import GPTConfig
from minigpt.model import GPT
from minigpt.tokenizer import train_bpe
from rlhf import chat
from rlhf.reward import RewardModel
from rlhf.rollout import generate_responses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "the cat sat on the mat. what is two plus three? five. reverse the word dog: god. " * 20


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random GPT + a tiny BPE tokenizer saved as a pipeline run's sft/ stage."""
    run = tmp_path_factory.mktemp("run")
    tok = train_bpe(TEXT, 300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    save_model(run / "sft", model, tok)
    return run


def _run(args, stdin=""):
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "rlhf.chat", *args], input=stdin, capture_output=True, encoding="utf-8",
                       cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_one_shot_greedy_matches_batched_generation(ckpt):
    out = _run([str(ckpt / "sft"), "--prompt", "What is two plus three?", "--temperature=0",
                "--max_new_tokens=12"])
    model, tok = load_model(ckpt / "sft")
    ref = generate_responses(model, tok, [[{"role": "user", "content": "What is two plus three?"}]], 12)
    assert out == ref[0]["response"] + "\n"   # KV-cached streaming == the batched sampler, token for token


def test_scripted_multi_turn_session_through_stdin(ckpt):
    script = "hello\n/temp 0\nand again\n/reset\n/system be brief\nthird\n/bogus\n/quit\nnever answered\n"
    out = _run([str(ckpt), "--max_new_tokens=8"], stdin=script)   # a run dir: picks its sft/ stage
    assert "chatting with" in out and os.path.join(str(ckpt), "sft") in out
    assert out.count("assistant> ") == 3                 # three user turns, nothing after /quit
    assert "(temperature 0.0, greedy)" in out
    assert "(conversation cleared)" in out
    assert "(system message set)" in out
    assert "unknown command /bogus" in out


def test_history_is_kept_and_fits_the_context(ckpt):
    model, tok = load_model(ckpt / "sft")
    s = chat.ChatSession(model, tok, temperature=0.0, max_new_tokens=8)
    first = s.reply("hi")
    s.reply("what did you say?")
    assert [m["role"] for m in s.history] == ["user", "assistant", "user", "assistant"]
    assert s.history[1]["content"] == first
    for i in range(20):                                   # far more than 64 tokens of history
        s.history += [{"role": "user", "content": f"message {i} about the cat"},
                      {"role": "assistant", "content": "ok"}]
    s.history.append({"role": "user", "content": "last"})
    ids = s.prompt_ids()
    assert len(ids) <= model.config.block_size - s.max_new_tokens
    assert tok.decode(ids).endswith("last<|end|><|assistant|>")  # the newest turn survives, oldest dropped
    assert s.command("/reset") == "(conversation cleared)" and s.history == []
    assert s.command("/temp x").startswith("(usage") and s.temperature == 0.0
    assert s.command("/quit") is None


def test_streamed_pieces_join_to_the_decoded_reply(ckpt):
    model, tok = load_model(ckpt / "sft")
    from rlhf.data import render_prompt
    ids = render_prompt([{"role": "user", "content": "the cat"}], tok)
    g = torch.Generator().manual_seed(0)
    pieces = list(chat.stream_reply(model, tok, ids, 20, temperature=1.0, generator=g))
    assert len(pieces) >= 1
    out = io.StringIO()
    s = chat.ChatSession(model, tok, temperature=1.0, top_k=None, max_new_tokens=20, seed=0)
    assert s.reply("the cat", out=out) == "".join(pieces) == out.getvalue()


def test_resolve_checkpoint(ckpt, tmp_path):
    assert chat.resolve_checkpoint(str(ckpt)) == os.path.join(str(ckpt), "sft")
    assert chat.resolve_checkpoint(str(ckpt / "sft")) == str(ckpt / "sft")
    with pytest.raises(SystemExit, match="no model.pt"):
        chat.resolve_checkpoint(str(tmp_path))


def test_chat_with_a_reward_model_directory_is_a_one_line_error(tmp_path):
    """A reward model is no policy: `python -m rlhf.chat RUN/reward_model` says so, no traceback."""
    tok = train_bpe(TEXT, 300)
    RewardModel(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32)).save(
        str(tmp_path / "rm"), tok)
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "rlhf.chat", str(tmp_path / "rm"), "--prompt", "hi"],
                       capture_output=True, encoding="utf-8", cwd=ROOT, env=env, timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]                    # one line
    assert "reward model checkpoint, not a GPT language model" in p.stderr
