"""rlhf.label driven through stdin: the JSONL it appends loads with the stages' loaders; resume; Ctrl-C.

    python -m pytest tests/test_label.py -q
"""

import io
import os
import subprocess
import sys

import pytest
import torch

from minigpt.checkpoint import save_model
from minigpt.config import GPTConfig
from minigpt.model import GPT
from minigpt.tokenizer import train_bpe
from rlhf import label
from rlhf.data import load_demonstrations, load_preferences, load_rankings, ranking_pairs, write_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("sft")
    tok = train_bpe("What is two plus three? Five. Reverse the word dog: god. Sort 3, 1, 2. " * 20, 280)
    torch.manual_seed(0)
    save_model(d, GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)), tok)
    return d


def _label(args, stdin="", subprocess_run=False):
    """Run `python -m rlhf.label ARGS` with `stdin` typed in; returns what it printed."""
    if subprocess_run:
        p = subprocess.run([sys.executable, "-m", "rlhf.label", *args], input=stdin, capture_output=True,
                           encoding="utf-8", cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout
    old = sys.stdin, sys.stdout
    sys.stdin, sys.stdout = io.StringIO(stdin), io.StringIO()
    try:
        assert label.main(list(args)) == 0
        return sys.stdout.getvalue()
    finally:
        sys.stdin, sys.stdout = old


def test_parse_ranks():
    assert label.parse_ranks("1 3 2 2", 4) == [0, 2, 1, 1]
    assert label.parse_ranks("2, 9, 2", 3) == [0, 1, 0]       # dense and 0-based
    for bad in ("1 2", "1 x 2", "0 1 2"):
        with pytest.raises(ValueError):
            label.parse_ranks(bad, 3)


def test_demonstrations_through_stdin_then_resume(tmp_path):
    out = tmp_path / "demos.jsonl"
    log = _label(["demos", "--out", str(out), "--n", "3"], stdin="first answer\n\nthird\\nline two\n",
                 subprocess_run=True)
    assert "saved 2 new demonstrations" in log
    convs = load_demonstrations(out)                            # what rlhf.sft reads
    assert [c[-1]["content"] for c in convs] == ["first answer", "third\nline two"]
    assert all(c[-1]["role"] == "assistant" and c[-2]["role"] == "user" for c in convs)
    # Re-run: the two answered prompts are skipped; only the skipped one is asked again.
    log = _label(["demos", "--out", str(out), "--n", "3"], stdin="second\n")
    assert "2 of 3 prompts already answered" in log and "saved 1 new" in log
    convs2 = load_demonstrations(out)
    assert len(convs2) == 3 and convs2[2][-1]["content"] == "second"
    assert len({label.prompt_key(c[:-1]) for c in convs2}) == 3  # three different prompts, none twice


def test_demonstrations_from_a_prompts_file_and_quit(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"messages": [{"role": "user", "content": f"Say {w}."}]} for w in ("hi", "yo", "ok")])
    out = tmp_path / "d.jsonl"
    _label(["demos", "--out", str(out), "--prompts", str(prompts)], stdin="hi\n/quit\nnever\n")
    convs = load_demonstrations(out)
    assert convs == [[{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]]


def test_rankings_through_stdin_load_as_rankings_and_pairs(tmp_path, ckpt):
    out = tmp_path / "rankings.jsonl"
    # prompt 1: a bad line (re-asked), then a tie; prompt 2: skipped; prompt 3: a full order.
    log = _label(["rank", "--model", str(ckpt), "--out", str(out), "--n", "3", "--k", "3",
                  "--max_new_tokens", "8"], stdin="1 2\n1 2 2\ns\n3 1 2\n")
    assert "give 3 ranks" in log and "saved 2 new rankings" in log
    rows = load_rankings(out)                                  # what rlhf.reward_model reads
    assert [r.ranks for r in rows] == [[0, 1, 1], [2, 0, 1]]
    assert all(len(r.responses) == 3 for r in rows)
    pairs = [p for r in rows for p in ranking_pairs(r)]
    assert len(pairs) <= 2 + 3                                 # the tie gives no pair
    if pairs:
        write_jsonl(tmp_path / "pairs.jsonl", pairs)
        assert len(load_preferences(tmp_path / "pairs.jsonl")) == len(pairs)


def test_simulated_labeler_uses_the_same_path(tmp_path, ckpt):
    demos, ranks = tmp_path / "d.jsonl", tmp_path / "r.jsonl"
    _label(["demos", "--simulate", "--out", str(demos), "--n", "6"])
    _label(["rank", "--simulate", "--model", str(ckpt), "--out", str(ranks), "--n", "4", "--k", "3",
            "--max_new_tokens", "8"])
    assert len(load_demonstrations(demos)) == 6
    rows = load_rankings(ranks)
    assert len(rows) == 4 and all(r.meta["labeler"] == "simulated" and "family" in r.meta for r in rows)
    # Resume: nothing left to do.
    assert "saved 0 new" in _label(["demos", "--simulate", "--out", str(demos), "--n", "6"])


class _InterruptAfter:
    """A stdin whose readline raises KeyboardInterrupt (Ctrl-C) after the given lines."""

    def __init__(self, lines):
        self.lines = list(lines)

    def readline(self):
        if not self.lines:
            raise KeyboardInterrupt
        return self.lines.pop(0)


def test_ctrl_c_loses_nothing_already_answered(tmp_path):
    out = tmp_path / "d.jsonl"
    items = label.prompt_source(None, 4)
    stdout = io.StringIO()
    n = label.label_demonstrations(items, str(out), stdin=_InterruptAfter(["one\n", "two\n"]), stdout=stdout)
    assert n == 2 and "(interrupted)" in stdout.getvalue()
    assert [c[-1]["content"] for c in load_demonstrations(out)] == ["one", "two"]
