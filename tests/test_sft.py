"""rlhf.sft: the masked SFT loss, batches, the gold evaluation, and smoke runs of the entry point."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from minigpt import checkpoint as ck
from minigpt.config import GPTConfig
from minigpt.model import GPT
from minigpt.tokenizer import train_bpe
from rlhf import gold
from rlhf import sft as S
from rlhf.gold import GoldEvaluator
from rlhf.data import SFTDataset, collate_sft, pad_token_id

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONVS = [
    [{"role": "user", "content": "Reverse the word cat."}, {"role": "assistant", "content": "tac"}],
    [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "5"}],
    [{"role": "user", "content": "Say hello to Ana."}, {"role": "assistant", "content": "Hello, Ana!"}],
    [{"role": "user", "content": "Sort 3, 1, 2."}, {"role": "assistant", "content": "1, 2, 3"}],
]


@pytest.fixture(scope="module")
def tok():
    text = " ".join(m["content"] for c in CONVS for m in c) * 20
    return train_bpe(text, vocab_size=256 + 20 + 6)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


# ----------------------------------------------------------------------------- the loss

def test_sft_loss_ignores_prompt_targets_and_counts_response_targets(tok, model):
    ds = SFTDataset(CONVS, tok)
    batch = collate_sft(ds.examples, pad_token_id(tok))
    loss, stats = S.sft_loss_fn(model, batch)
    prompt_pos = (batch["loss_mask"] == 0) & (batch["attention_mask"] == 1)
    assert prompt_pos.any()
    changed = {**batch, "targets": torch.where(prompt_pos, (batch["targets"] + 7) % tok.vocab_size, batch["targets"])}
    assert S.sft_loss_fn(model, changed)[0].item() == loss.item()        # prompt targets carry no loss
    resp = batch["loss_mask"].bool()
    changed = {**batch, "targets": torch.where(resp, (batch["targets"] + 7) % tok.vocab_size, batch["targets"])}
    assert S.sft_loss_fn(model, changed)[0].item() != pytest.approx(loss.item())  # response targets do
    assert stats["response_tokens"] == resp.sum().item()


def test_sft_loss_matches_a_hand_computed_masked_cross_entropy(tok, model):
    ds = SFTDataset(CONVS, tok)
    batch = collate_sft(ds.examples, pad_token_id(tok))
    loss, _ = S.sft_loss_fn(model, batch)
    total, count = 0.0, 0
    for e in ds.examples:  # one unpadded example at a time
        logits, _ = model(e.idx[None])
        logp = torch.log_softmax(logits[0].double(), -1)
        for t in range(len(e.idx)):
            if e.loss_mask[t] > 0:
                total -= logp[t, e.targets[t]].item()
                count += 1
    assert loss.item() == pytest.approx(total / count, rel=1e-5)     # padding changes nothing


def test_the_end_token_is_supervised_and_padding_is_not(tok):
    ds = SFTDataset(CONVS, tok)
    batch = collate_sft(ds.examples, pad_token_id(tok))
    end = tok.special_tokens["<|end|>"]
    for b, e in enumerate(ds.examples):
        n = len(e.idx)
        last = int(batch["loss_mask"][b, :n].nonzero().max())
        assert batch["targets"][b, last] == end                         # the model learns to stop
        assert batch["loss_mask"][b, n:].sum() == 0 and batch["attention_mask"][b, n:].sum() == 0


# ----------------------------------------------------------------------------- batches

def test_sft_batches_cover_each_epoch_and_are_deterministic(tok):
    convs = [[{"role": "user", "content": f"Add {i} and {i}."}, {"role": "assistant", "content": str(2 * i)}]
             for i in range(12)]
    ds = SFTDataset(convs, tok)                                           # 12 distinct examples, batches of 4
    pad = pad_token_id(tok)
    b = S.SFTBatches(ds.examples, ds.examples[:2], batch_size=4, pad_id=pad, seed=3)

    def rows(batch):
        return [tuple(r[m.bool()].tolist()) for r, m in zip(batch["idx"], batch["attention_mask"])]

    epoch0 = [r for i in range(3) for r in rows(b("train", i))]
    assert sorted(epoch0) == sorted(tuple(e.idx.tolist()) for e in ds.examples)   # each example once
    epoch1 = [r for i in range(3, 6) for r in rows(b("train", i))]
    assert sorted(epoch1) == sorted(epoch0) and epoch1 != epoch0                   # reshuffled
    assert torch.equal(b("train", 5)["idx"], S.SFTBatches(ds.examples, [], 4, pad, seed=3)("train", 5)["idx"])
    other = S.SFTBatches(ds.examples, [], 4, pad, seed=4)
    assert [r for i in range(3) for r in rows(other("train", i))] != epoch0
    assert b("val", 0)["idx"].shape[0] == 4                               # val rows wrap around


# ----------------------------------------------------------------------------- gold evaluation (rlhf.gold)

def test_gold_evaluator_scores_perfect_replies_as_one(monkeypatch, tok, model):
    evaluator = GoldEvaluator(20, seed=1)
    monkeypatch.setattr(gold, "generate_responses", lambda m, t, convs, *a, **k: [
        {"response": ex.gold, "stopped": True, "n_tokens": 1} for ex in evaluator.examples])
    out = evaluator(model, tok)
    assert out["gold"] == pytest.approx(1.0) and out["stop_rate"] == 1.0 and out["n"] == 20
    assert set(out["per_family"]) == {ex.family for ex in evaluator.examples}
    assert all(v == pytest.approx(1.0) for v in out["per_family"].values())


def test_gold_evaluator_runs_a_real_model(tok, model):
    evaluator = GoldEvaluator(6, seed=0, max_new_tokens=8, batch_size=4)
    out = evaluator(model, tok)
    assert 0.0 <= out["gold"] <= 1.0 and len(out["rows"]) == 6
    assert all(0.0 <= r["score"] <= 1.0 for r in out["rows"])
    again = evaluator(model, tok)
    assert [r["response"] for r in again["rows"]] == [r["response"] for r in out["rows"]]  # greedy: deterministic


def test_sft_stage_gets_its_evaluator_from_the_caller():
    """The stage builds no judge itself: gold_evaluator(cfg, class) wires its settings into the class the
    caller hands in (None when n_eval is 0)."""
    cfg = S.SFTConfig(n_eval=7, eval_seed=3, max_new_tokens=9, eval_batch_size=5)
    ev = S.gold_evaluator(cfg, GoldEvaluator)
    assert len(ev.examples) == 7 and (ev.seed, ev.max_new_tokens, ev.batch_size) == (3, 9, 5)
    assert S.gold_evaluator(S.SFTConfig(n_eval=0), GoldEvaluator) is None


# ----------------------------------------------------------------------------- data sources

def test_load_sft_data_from_messages_and_alpaca_files(tmp_path):
    path = tmp_path / "demos.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVS * 5), encoding="utf-8")
    train, val = S.load_sft_data(S.SFTConfig(data=str(path), val_fraction=0.2))
    assert len(train) == 16 and len(val) == 4
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text(json.dumps({"instruction": "Add 1 and 2.", "input": "", "output": "3"}) + "\n", encoding="utf-8")
    train, val = S.load_sft_data(S.SFTConfig(data=str(alpaca)))
    assert train[0][-1] == {"role": "assistant", "content": "3"} and val == []
    with pytest.raises(SystemExit, match="no such file"):
        S.load_sft_data(S.SFTConfig(data=str(tmp_path / "missing.jsonl")))


def test_world_demonstrations_are_train_split_and_val_is_held_out():
    from rlhf.world import split_of

    train, val = S.load_sft_data(S.SFTConfig(n_demos=30, n_val_demos=10))
    assert len(train) == 30 and len(val) == 10
    assert all(split_of(c[:-1]) == "train" for c in train) and all(split_of(c[:-1]) == "val" for c in val)


# ----------------------------------------------------------------------------- entry point

def test_help_and_missing_init_from(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rlhf.sft", "--help"], cwd=ROOT, env=env(), capture_output=True,
                       encoding="utf-8", timeout=60)
    assert r.returncode == 0 and "--init_from=" in r.stdout and "--n_demos=" in r.stdout
    r = subprocess.run([sys.executable, "-m", "rlhf.sft", "--preset=tiny", f"--init_from={tmp_path / 'nope'}",
                        f"--out_dir={tmp_path / 'sft'}"], cwd=ROOT, env=env(), capture_output=True, encoding="utf-8",
                       timeout=60)
    assert r.returncode != 0 and "no model.pt" in r.stderr


@pytest.mark.slow   # pretrain -> SFT through the CLI; the tiny pipeline test and notebook 04 cover the path by default
def test_pretrain_then_sft_tiny_smoke(tmp_path):
    pre, sft = tmp_path / "pretrain", tmp_path / "sft"
    r = subprocess.run([sys.executable, "-m", "rlhf.pretrain", "--preset=tiny", f"--out_dir={pre}",
                        "--progress=false"], cwd=ROOT, env=env(), capture_output=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "rlhf.sft", "--preset=tiny", f"--init_from={pre}",
                        f"--out_dir={sft}", "--progress=false"], cwd=ROOT, env=env(), capture_output=True,
                       encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "base model gold score" in r.stdout and "overall" in r.stdout
    summary = ck.read_summary(sft)
    assert math.isfinite(summary["val_loss"]) and summary["steps"] == 10
    for key in ("base", "sft"):
        assert 0.0 <= summary[key]["gold"] <= 1.0 and summary[key]["per_family"]
    assert summary["gold_score"] == summary["sft"]["gold"]
    model, tok = ck.load_model(sft)
    pre_model, _ = ck.load_model(pre)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), pre_model.state_dict().values()))
    assert (sft / "eval_samples.jsonl").exists() and (sft / "loss.png").exists()
