"""Tests for rlhf/reward_model.py: the reward is read at the last real token, the batched K-choose-2
loss equals the explicit pairs, normalisation centres the demonstrations, bad comparison rows are
rejected with their line number, and the tiny preset runs end to end (simulated labelers and a pairs file)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from minigpt import checkpoint as ckpt_io
from minigpt.config import GPTConfig
from minigpt.model import GPT
from rlhf import data as D
from rlhf import reward_model as R
from tests import adapters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_rm(vocab_size=50, seed=0):
    torch.manual_seed(seed)
    model = R.RewardModel(GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():  # a head large enough that rewards differ clearly between sequences
        model.head.weight.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    """A stand-in SFT run directory: a BPE tokenizer with the chat specials and a random tiny GPT."""
    from minigpt.tokenizer import train_bpe
    from rlhf.world import corpus

    run_dir = str(tmp_path_factory.mktemp("sft"))
    tok = train_bpe(corpus(5000, seed=0), 300)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    ckpt_io.save_model(run_dir, gpt, tok, extra={"stage": "sft"})
    return run_dir


# -----------------------------------------------------------------------------
# the model


def test_last_token_values_hand_example():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 9.5, 9.7, 9.9]])
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert R.last_token_values(values, mask).tolist() == [3.0, 8.0, 9.0]


def test_reward_read_at_last_real_token_padding_changes_nothing():
    model = _tiny_rm()
    seqs = [[3, 7, 11, 2], [5, 9], [4, 4, 8]]
    alone = torch.stack([model.score(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in seqs])
    ids, mask = D.pad_right(seqs, pad_id=0)
    torch.testing.assert_close(model.score(ids, mask), alone, rtol=0, atol=1e-5)
    # whatever sits in the padding after the last real token changes nothing
    ids2 = ids.clone()
    ids2[mask == 0] = 42
    torch.testing.assert_close(model.score(ids2, mask), alone, rtol=0, atol=1e-5)
    # left padding (generation's layout): positions come from the mask, so the same rewards
    ids_l, mask_l = D.pad_left(seqs, pad_id=0)
    torch.testing.assert_close(model.score(ids_l, mask_l), alone, rtol=0, atol=1e-5)
    # the reward is the per-token value at that position, and it depends on the last token
    values = model(ids, mask)
    assert values.shape == ids.shape
    assert values[0, 3].item() == pytest.approx(alone[0].item(), abs=1e-5)
    changed = model.score(torch.tensor([[3, 7, 11, 9]]), torch.ones(1, 4, dtype=torch.long))
    assert abs(changed.item() - alone[0].item()) > 1e-4


def test_reward_model_save_load_roundtrip_and_from_pretrained(tmp_path, sft_dir):
    model, tok = R.RewardModel.from_sft(sft_dir)
    gpt, _ = ckpt_io.load_model(sft_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(model.backbone.hidden_states(ids), gpt.hidden_states(ids))
    assert model.config.dropout == 0.0
    with torch.no_grad():
        model.head.weight.normal_()
    model.normalize_(0.25)
    model.save(str(tmp_path), tok)
    loaded = R.RewardModel.load(str(tmp_path))
    mask = torch.ones_like(ids)
    torch.testing.assert_close(loaded.score(ids, mask), model.eval().score(ids, mask))
    assert os.path.exists(tmp_path / "tokenizer.bpe")


def test_normalize_makes_demo_rewards_mean_zero(sft_dir):
    model, tok = R.RewardModel.from_sft(sft_dir)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 1.0)
        model.head.bias.fill_(0.7)
    conv = [{"role": "user", "content": "Reverse the word planet."}]
    demos = ["tenalp", "Sure! The answer is tenalp.", "tenlap", "I don't know."]
    items = [R.RankedItem([R.encode_response(conv, d, tok, 64)], [0], [d], {}) for d in demos]
    before = [r[0] for r in R.score_items(model, items, D.pad_token_id(tok))]
    assert abs(sum(before) / 4) > 1e-3
    model.normalize_(sum(before) / 4)
    after = [r[0] for r in R.score_items(model, items, D.pad_token_id(tok))]
    assert sum(after) / 4 == pytest.approx(0.0, abs=1e-5)
    # differences, hence every comparison, are unchanged
    assert after[0] - after[1] == pytest.approx(before[0] - before[1], abs=1e-5)


# -----------------------------------------------------------------------------
# data and loss


def test_encode_response_matches_chat_template(sft_dir):
    tok = ckpt_io.load_tokenizer(sft_dir)
    conv = [{"role": "user", "content": "Spell river backwards."}]
    ids = R.encode_response(conv, "revir", tok, 64)
    full, _ = D.render(conv + [{"role": "assistant", "content": "revir"}], tok)
    assert ids == full  # render_prompt + response + <|end|> is exactly the rendered conversation
    no_stop = R.encode_response(conv, "revir", tok, 64, stopped=False)
    assert no_stop == full[:-1]
    long = R.encode_response([{"role": "user", "content": "word " * 200}], "answer " * 100, tok, 64)
    assert len(long) == 64 and D.special_id(tok, "<|assistant|>") in long[:33]  # the response keeps >= 32 tokens


def test_pair_mask_skips_ties_and_identical_texts():
    item = R.RankedItem([[1], [2], [3], [4]], [0, 1, 1, 2], ["a", "b", "c", "a"], {})
    mask = R.pair_mask_of(item, 5)
    kept = {(i, j) for i, j in mask.nonzero().tolist()}
    # (1, 2) tie, (0, 3) identical text, index 4 is padding
    assert kept == {(0, 1), (0, 2), (1, 3), (2, 3)}


def test_ranked_loss_in_batch_equals_explicit_pairs():
    model = _tiny_rm()
    items = [R.RankedItem([[3, 4, 5], [3, 4, 9, 9], [3, 6], [3, 7, 7]], [0, 1, 1, 2], ["a", "b", "c", "d"], {}),
             R.RankedItem([[8, 1], [8, 2, 2, 2, 2]], [0, 3], ["x", "y"], {})]   # K = 2: padded to K = 4
    batch = R.collate_items(items, pad_id=0)
    assert batch["idx"].shape == (2, 4, 5)
    loss, stats = R.rm_loss(model, batch)
    chosen, rejected, per_prompt = [], [], []
    for it in items:
        r = [model.score(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in it.ids]
        c = [r[i] for i in range(len(it.ids)) for j in range(i + 1, len(it.ids)) if it.ranks[i] < it.ranks[j]]
        w = [r[j] for i in range(len(it.ids)) for j in range(i + 1, len(it.ids)) if it.ranks[i] < it.ranks[j]]
        per_prompt.append(adapters.run_pairwise_reward_loss(torch.stack(c), torch.stack(w)))
        chosen += c
        rejected += w
    assert len(chosen) == 6  # 5 of prompt 0 (one tie dropped) + 1 of prompt 1
    ref = torch.stack(per_prompt).mean()                # InstructGPT eq. 1: per prompt, then over prompts
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    pooled = adapters.run_pairwise_reward_loss(torch.stack(chosen), torch.stack(rejected))
    torch.testing.assert_close(R.rm_loss(model, batch, reduction="pair")[0], pooled, rtol=1e-5, atol=1e-6)
    assert stats["pairs"].item() == 6
    acc = sum(float(c > r) for c, r in zip(chosen, rejected)) / 6
    assert stats["accuracy"].item() == pytest.approx(acc)
    # the pairwise path on K = 2 rows gives the same number as the ranked path
    pair_batch = R.collate_items([items[1]], pad_id=0)
    torch.testing.assert_close(R.rm_loss(model, pair_batch, pairwise=True)[0], R.rm_loss(model, pair_batch)[0])


def test_ranking_batches_are_pure_and_cover_an_epoch():
    items = [R.RankedItem([[i + 1], [i + 2]], [0, 1], ["a", "b"], {}) for i in range(10)]
    batches = R.RankingBatches(items, items[:3], batch_size=5, pad_id=0, seed=3)
    first = torch.cat([batches("train", 0)["idx"][:, 0, 0], batches("train", 1)["idx"][:, 0, 0]])
    assert sorted(first.tolist()) == list(range(1, 11))  # one epoch = every prompt once
    assert torch.equal(batches("train", 1)["idx"], batches("train", 1)["idx"])
    assert batches("val", 0)["idx"].shape[0] == 5


def test_evaluate_rankings_hand_example():
    # one prompt, 3 responses best first; RM orders (0, 1) right, (0, 2) right, (1, 2) wrong
    item = R.RankedItem([[1], [2], [3]], [0, 1, 2], ["a", "b", "c"],
                        {"family": "reverse", "h": "helpful", "gold": [1.0, 0.5, 0.2], "ranks_2": [0, 2, 1]})
    m = R.evaluate_rankings([item], [[2.0, 0.0, 1.0]], n_bins=2)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["label_agreement"] == pytest.approx(2 / 3)  # the second labeler swaps (1, 2)
    assert m["by_family"]["reverse"]["pairs"] == 3
    assert m["gold_accuracy"] == pytest.approx(2 / 3) and m["labeler_gold_accuracy"] == 1.0
    # centred: r = [1, -1, 0], g = [13/30, -2/30, -11/30] → cov 0.5 / (sqrt(2) · sqrt(294) / 30) = 0.61859
    assert m["rm_gold_pearson"] == pytest.approx(0.5 / (math.sqrt(2) * math.sqrt(294) / 30), abs=1e-9)
    assert sum(b["n"] for b in m["calibration"]["bins"]) == 3


def test_bad_comparison_rows_rejected_with_line_number(tmp_path, sft_dir):
    good = {"prompt": "What is 3 plus 4?", "chosen": "7", "rejected": "8"}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "hi", "chosen": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(D.DataError, match=r"pairs\.jsonl:2:"):
        D.load_preferences(str(path))
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n"
                    + json.dumps({"prompt": "hi", "chosen": "same", "rejected": "same"}) + "\n", encoding="utf-8")
    with pytest.raises(D.DataError, match=r"pairs\.jsonl:3:.*identical"):
        D.load_preferences(str(path))
    # the stage reports the same line and stops with a one-line message
    with pytest.raises(SystemExit, match=r"pairs\.jsonl:3:"):
        R.main([f"--data={path}", f"--sft_dir={sft_dir}", f"--out_dir={tmp_path / 'rm'}", "--progress=false"])
    rank_path = tmp_path / "rankings.jsonl"
    rank_path.write_text(json.dumps({"prompt": "hi", "responses": ["a", "b"], "ranks": [0, 1]}) + "\n"
                         + json.dumps({"prompt": "hi", "responses": ["a", "b"], "ranks": [0]}) + "\n", encoding="utf-8")
    with pytest.raises(D.DataError, match=r"rankings\.jsonl:2:"):
        D.load_rankings(str(rank_path))


# -----------------------------------------------------------------------------
# the stage, end to end


def _tiny_args(sft_dir, out_dir, *extra):
    return ["--preset", "tiny", f"--sft_dir={sft_dir}", f"--out_dir={out_dir}", "--progress=false",
            "--n_train_prompts=16", "--n_val_prompts=8", "--eval_interval=0", "--device=cpu", *extra]


def test_tiny_preset_smoke_run(tmp_path, sft_dir):
    out = tmp_path / "rm"
    summary = R.main(_tiny_args(sft_dir, out, "--n_perturbed=1"))
    for key in ("val_accuracy", "label_agreement", "by_family", "by_h", "by_pair_sources", "rm_gold_pearson",
                "calibration", "informative_share_train", "seconds"):
        assert key in summary
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and 0.0 <= summary["label_agreement"] <= 1.0
    assert summary["demo_reward_mean"] == pytest.approx(0.0, abs=1e-4)  # normalised on the demonstrations
    assert ckpt_io.is_finished(str(out)) and os.path.exists(out / "calibration.png")
    train = D.load_rankings(str(out / "data" / "rm_train.jsonl"))
    # demo + perturbed + 2 samples, each with its chatter-toggled twin
    assert len(train) == 16 and all(len(r.responses) == 8 for r in train)
    base = ["demo", "perturbed", "sft@1", "sft@1.6"]
    assert train[0].meta["source"] == base + [s + "+twin" for s in base]
    val = D.load_rankings(str(out / "data" / "rm_val.jsonl"))
    assert all("ranks_2" in r.meta for r in val)
    model = R.RewardModel.load(str(out))
    assert not model.training


def test_init_dir_starts_the_rm_from_another_model_with_the_same_tokenizer(tmp_path, sft_dir):
    from minigpt.tokenizer import train_bpe
    tok = ckpt_io.load_tokenizer(sft_dir)
    torch.manual_seed(1)
    wider = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=48))
    ckpt_io.save_model(str(tmp_path / "wide"), wider, tok, extra={"stage": "sft"})
    R.main(_tiny_args(sft_dir, tmp_path / "rm", f"--init_dir={tmp_path / 'wide'}", "--max_iters=1"))
    rm = R.RewardModel.load(str(tmp_path / "rm"))
    assert rm.backbone.config.n_embd == 48        # the wider model's backbone, scored on the SFT policy's samples
    from rlhf.world import corpus
    other = train_bpe(corpus(5000, seed=0).upper(), tok.vocab_size)    # same size, other merges
    ckpt_io.save_model(str(tmp_path / "other"), wider, other, extra={"stage": "sft"})
    with pytest.raises(SystemExit, match="another tokenizer"):
        R.main(_tiny_args(sft_dir, tmp_path / "rm2", f"--init_dir={tmp_path / 'other'}", "--max_iters=1"))
    short = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=48))
    ckpt_io.save_model(str(tmp_path / "short"), short, tok, extra={"stage": "sft"})
    with pytest.raises(SystemExit, match="reads 32 tokens"):
        R.main(_tiny_args(sft_dir, tmp_path / "rm3", f"--init_dir={tmp_path / 'short'}", "--max_iters=1"))


def test_init_rm_fine_tunes_an_earlier_reward_model(tmp_path, sft_dir):
    # RM_1: two steps at a large learning rate move every weight ~1e-2 away from the seeded initialisation
    R.main(_tiny_args(sft_dir, tmp_path / "rm1", "--max_iters=2", "--learning_rate=1e-2", "--warmup_iters=0"))
    R.main(_tiny_args(sft_dir, tmp_path / "rm2", f"--init_rm={tmp_path / 'rm1'}", "--max_iters=1",
                      "--learning_rate=1e-12", "--min_lr=1e-13", "--warmup_iters=0"))
    rm1, rm2 = (R.RewardModel.load(str(tmp_path / d)) for d in ("rm1", "rm2"))
    # a step of 1e-12 leaves RM_2 where it started: on RM_1's weights, head included (a fresh head from the
    # same seed would sit ~1e-2 away); the bias differs by the re-normalisation on the demonstrations only
    assert torch.allclose(rm2.head.weight, rm1.head.weight, atol=1e-6)
    for a, b in zip(rm2.backbone.parameters(), rm1.backbone.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(SystemExit, match="no model.pt"):
        R.main(_tiny_args(sft_dir, tmp_path / "rm3", f"--init_rm={tmp_path / 'missing'}"))


def test_pairs_file_uses_pairwise_loss(tmp_path, sft_dir):
    from rlhf.world import make_rankings

    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            for r in make_rankings(12, k=3, seed=1)
            for p in D.ranking_pairs(D.Ranking(r["prompt"], r["responses"], r["ranks"]))]
    path = tmp_path / "pairs.jsonl"
    D.write_jsonl(str(path), rows)
    summary = R.main(_tiny_args(sft_dir, tmp_path / "rm", f"--data={path}", "--margin=0.1"))
    assert summary["loss"] == "pairwise"
    assert summary["label_agreement"] is None  # no second labeler for a file
    assert summary["pairs"] == max(1, int(len(rows) * 0.1))


def test_help_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "rlhf.reward_model", "--help"], cwd=ROOT, capture_output=True,
                         encoding="utf-8", timeout=60)
    assert out.returncode == 0
    assert "--temperatures" in out.stdout and "--sft_dir" in out.stdout


class _LengthRM(torch.nn.Module):
    """A stand-in reward model: +1 or -1 per token (sign), so it loves or hates chatter, blind to content."""
    def __init__(self, sign: float):
        super().__init__()
        self.sign = sign
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"block_size": 256})()

    def score(self, ids, mask):
        return self.sign * mask.sum(1).float()


def test_rm_probes_separate_chatter_from_content(tok):
    from rlhf.rm_probes import PROBES, probe_reward_model
    short = probe_reward_model(_LengthRM(-1.0), tok, n_prompts=60)
    long = probe_reward_model(_LengthRM(+1.0), tok, n_prompts=60)
    assert short["prompts"] > 20 and set(PROBES) <= set(short)
    for k in ("concise_vs_chatty", "concise_vs_chatty_wrong", "correct_vs_chatty_wrong"):
        assert short[k] == 1.0 and long[k] == 0.0, k     # chatter always adds tokens
    # content-blind: the near-miss probe is about length only, and the two RMs mirror each other
    assert short["correct_vs_near_miss"] + long["correct_vs_near_miss"] == pytest.approx(1.0)


def test_rm_probes_cli_rejects_a_missing_run(tmp_path, capsys):
    from rlhf.rm_probes import main
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nothing")])
    assert e.value.code == 2 and "no model.pt" in capsys.readouterr().err


def test_third_party_hh_file_trains_with_skip_bad_and_no_world_diagnostics(sft_dir, tmp_path):
    """An HH-RLHF-format file (here written from world rankings) with a few records whose transcripts differ
    before the final reply: --skip_bad=N trains on the rest with one summary line, and the world-only
    diagnostics (one-factor probes, "vs gold", per-family tables) are left out, not printed as n/a."""
    from rlhf.formats import hh_transcript
    from rlhf.world import make_rankings
    rows = []
    for r in make_rankings(60, k=2, seed=4):
        best, worst = (r["responses"][i] for i in sorted(range(2), key=lambda i: r["ranks"][i]))
        if best == worst:
            continue
        rows.append({"chosen": hh_transcript(r["prompt"] + [{"role": "assistant", "content": best}]),
                     "rejected": hh_transcript(r["prompt"] + [{"role": "assistant", "content": worst}])})
    for i in (5, 17):                                   # the prompt differs before the final reply
        rows[i]["rejected"] = rows[i]["rejected"].replace("\n\nHuman: ", "\n\nHuman: Please: ", 1)
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "rm"
    args = [sys.executable, "-m", "rlhf.reward_model", "--preset=tiny", f"--sft_dir={sft_dir}", f"--data={path}",
            f"--out_dir={out}", "--progress=false", "--max_iters=4"]
    r = subprocess.run(args, cwd=ROOT, capture_output=True, encoding="utf-8", timeout=300)
    assert r.returncode != 0 and f"{path}:6: HH chosen and rejected transcripts differ" in r.stderr  # strict
    r = subprocess.run(args + ["--skip_bad=2"], cwd=ROOT, capture_output=True, encoding="utf-8", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"skipped 2 bad records of {len(rows)}; first: {path}:6:" in r.stderr
    assert "probes" not in r.stdout and "vs gold" not in r.stdout and "family" not in r.stdout
    assert "held-out accuracy" in r.stdout
