"""Tests for rlhf/dpo.py: the loss at initialisation, response-only sequence log-probs, one step moves the
margin the right way, comparisons -> pairs, and a tiny-preset run of the stage.

    python -m pytest tests/test_dpo.py -q
"""

import json
import math
import os
from dataclasses import replace

import pytest
import torch

from minigpt import GPT
from minigpt import checkpoint as ckpt_io
from rlhf import data as D
from rlhf import dpo
from rlhf.gold import GoldEvaluator
from rlhf.rollout import sequence_logprobs
from tests.tiny_rl import tiny_gpt  # and the `tok` fixture of conftest.py

PROMPT = [{"role": "user", "content": "What is 3 plus 4?"}]


def toy_pairs(tok, n=4):
    """n comparisons of the same kind: a short correct reply beats a rambling wrong one."""
    records = [D.Preference([{"role": "user", "content": f"What is {i} plus 4?"}], f"{i + 4}.",
                            f"Hello there! Sorry, {i}", {}) for i in range(n)]
    return dpo.encode_pairs(records, tok, max_len=64)


# ---------------------------------------------------------------- sequence log-probs

def test_encoded_response_mask_marks_exactly_the_response(tok):
    end = D.stop_token_id(tok)
    ids, mask = D.encode_response_with_mask(PROMPT, "7.", tok, max_len=64, stopped=True)
    prompt = D.render_prompt(PROMPT, tok)
    assert ids[:len(prompt)] == prompt and sum(mask[:len(prompt)]) == 0
    assert [t for t, m in zip(ids, mask) if m] == tok.encode("7.") + [end]
    ids2, mask2 = D.encode_response_with_mask(PROMPT, "7.", tok, max_len=64, stopped=False)   # never said <|end|>
    assert [t for t, m in zip(ids2, mask2) if m] == tok.encode("7.")
    # too long for the context: the response keeps its head, the prompt is cut, the mask still fits
    ids3, mask3 = D.encode_response_with_mask(PROMPT, "Hello there! " * 20, tok, max_len=32)
    assert len(ids3) <= 32 and len(ids3) == len(mask3) and mask3[0] == 0 and mask3[-1] == 1


def test_sequence_logprobs_ignore_prompt_and_padding(tok):
    model = tiny_gpt(tok.vocab_size)
    a, ma = D.encode_response_with_mask(PROMPT, "7.", tok, 64)
    b, mb = D.encode_response_with_mask([{"role": "user", "content": "Sort these numbers: 3, 1, 2."}], "1, 2, 3.", tok, 64)
    assert len(b) > len(a)
    # reference: one row alone, no padding, by hand: sum over response positions t of log p(ids[t] | ids[<t])
    with torch.no_grad():
        logits, _ = model(torch.tensor([a]))
        logp = torch.log_softmax(logits[0].double(), -1)                            # (T, V)
        by_hand = sum(logp[t - 1, a[t]].item() for t in range(1, len(a)) if ma[t])
        with_prompt = sum(logp[t - 1, a[t]].item() for t in range(1, len(a)))
        ids, attn = D.pad_right([a, b], D.pad_token_id(tok))
        resp, _ = D.pad_right([ma, mb], 0)
        lp = sequence_logprobs(model, ids, attn, resp.float())
        assert lp.shape == (2,)
        assert lp[0].item() == pytest.approx(by_hand, abs=1e-4)
        assert abs(with_prompt - by_hand) > 1.0                 # the prompt's tokens would have counted
        # other ids under the padding change nothing (padded keys are masked out, padded targets dropped)
        ids2 = ids.clone()
        ids2[attn == 0] = 7
        assert torch.allclose(sequence_logprobs(model, ids2, attn, resp.float()), lp, atol=1e-5)


# ---------------------------------------------------------------- the loss

def test_loss_is_ln2_when_policy_equals_reference(tok):
    model = tiny_gpt(tok.vocab_size)
    pairs = toy_pairs(tok)
    dpo.reference_logprobs(model, pairs, D.pad_token_id(tok))
    batch = dpo.collate_pairs(pairs, D.pad_token_id(tok))
    loss, stats = dpo.dpo_loss_fn(model, batch, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert stats["margin"] == pytest.approx(0.0, abs=1e-6) and stats["accuracy"] == 0.0


def test_one_step_increases_the_chosen_rejected_margin(tok):
    model = tiny_gpt(tok.vocab_size).train()
    pairs = toy_pairs(tok)
    dpo.reference_logprobs(model, pairs, D.pad_token_id(tok))
    batch = dpo.collate_pairs(pairs, D.pad_token_id(tok))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss0, s0 = dpo.dpo_loss_fn(model, batch, beta=0.1)
    loss0.backward()
    opt.step()
    loss1, s1 = dpo.dpo_loss_fn(model, batch, beta=0.1)
    assert s1["margin"] > s0["margin"] + 1e-3          # β(log π/π_ref)(chosen) - (...)(rejected) went up
    assert loss1.item() < loss0.item()
    assert s1["accuracy"] == 1.0


# ---------------------------------------------------------------- comparisons -> pairs

def test_rankings_become_non_tied_pairs_with_their_stop_flags():
    r = D.Ranking(PROMPT, ["a", "b", "c", "d"], [1, 0, 1, 2], {"stopped": [True, True, False, True]})
    pairs = dpo.preference_pairs([r])
    got = sorted((p.chosen, p.rejected, cs, rs) for p, cs, rs in pairs)
    # a~c tie: no pair; b beats a, c, d; a and c beat d
    assert got == [("a", "d", True, True), ("b", "a", True, True), ("b", "c", True, False),
                   ("b", "d", True, True), ("c", "d", False, True)]


def test_batches_are_a_pure_function_of_the_index(tok):
    pairs = toy_pairs(tok, 5)
    batches = dpo.PairBatches(pairs, pairs[:2], 2, D.pad_token_id(tok), seed=3)
    a, b = batches("train", 4), batches("train", 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["chosen_idx"].shape == a["rejected_idx"].shape              # padded to one width
    # one epoch visits every pair once
    seen = [tuple(batches("train", i)["chosen_idx"][j].tolist()) for i in range(5) for j in range(2)][:5]
    assert len(set(seen)) == 5


# ---------------------------------------------------------------- the stage

@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, tok):
    """An SFT run of a tiny random model, and an RM run directory holding only the RM's comparisons."""
    from rlhf.world import make_rankings
    root = tmp_path_factory.mktemp("dpo_runs")
    sft, rm = str(root / "sft"), str(root / "rm")
    ckpt_io.save_model(sft, tiny_gpt(tok.vocab_size), tok)
    D.write_jsonl(os.path.join(rm, "data", "rm_train.jsonl"), make_rankings(24, k=3, seed=0))
    D.write_jsonl(os.path.join(rm, "data", "rm_val.jsonl"), make_rankings(8, k=3, seed=1, split="val"))
    return sft, rm, root


def test_tiny_preset_smoke_run(run_dirs):
    sft, rm, root = run_dirs
    cfg = replace(dpo.DPOConfig(), **{**dpo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm,
                                      "out_dir": str(root / "dpo"), "progress": False, "n_eval": 6})
    s = dpo.train_dpo(cfg, dpo.gold_evaluator(cfg, GoldEvaluator))   # as `python -m rlhf.dpo` does
    out = cfg.out_dir
    for f in ("model.pt", "tokenizer.bpe", "summary.json", "metrics.jsonl", "loss.png", "dpo.png", "ckpt.pt"):
        assert os.path.exists(os.path.join(out, f)), f
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["stage"] == "dpo" and saved["steps"] == cfg.max_iters
    assert saved["val_loss_init"] == pytest.approx(math.log(2), abs=1e-5)   # π = π_ref at step 0
    assert saved["comparisons"] == os.path.join(rm, "data")                  # the RM stage's comparisons
    for k in ("gold_score", "sft_gold_score", "win_rate_vs_sft", "kl", "val_accuracy", "val_margin"):
        assert k in saved, k
    assert s["train_pairs"] > 0
    model, _ = ckpt_io.load_model(out)
    assert isinstance(model, GPT)


def test_validation_on_fewer_pairs_changes_neither_the_weights_nor_the_final_numbers(run_dirs):
    """During training DPO validates on eval_iters micro-batches (its default: 32, not every held-out pair,
    which used to take most of its time); the trained weights do not depend on that, and the summary's
    final numbers are always computed on every held-out pair."""
    sft, rm, root = run_dirs
    runs = {}
    for eval_iters in (1, 0):                                     # 0 = every held-out pair at every evaluation
        cfg = replace(dpo.DPOConfig(), **{**dpo.PRESETS["tiny"], "sft_dir": sft, "rm_dir": rm, "progress": False,
                                          "out_dir": str(root / f"dpo_eval{eval_iters}"), "n_eval": 0,
                                          "eval_iters": eval_iters})
        runs[eval_iters] = dpo.train_dpo(cfg), ckpt_io.load_model(cfg.out_dir)[0].state_dict()
    (few, w_few), (every, w_every) = runs[1], runs[0]
    assert few["val_pairs_during_training"] < few["val_pairs"] == every["val_pairs_during_training"]
    assert all(torch.equal(w_few[k], w_every[k]) for k in w_few), "the validation cadence changed the weights"
    for key in ("val_loss", "val_accuracy", "val_margin"):
        assert few[key] == pytest.approx(every[key], abs=1e-6), key


def test_help_lists_the_fields(capsys):
    with pytest.raises(SystemExit) as e:
        dpo.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--beta=" in out and "--rm_dir=" in out and "tiny" in out
