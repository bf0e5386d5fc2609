"""minigpt.trainer, minigpt.metrics and minigpt.train: schedule, optimizer groups, accumulation, resume, NaN guard, DDP,
metrics.jsonl and plots, entry-point smoke runs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from minigpt import checkpoint as ck
from minigpt import metrics as M
from minigpt import train as PT
from minigpt import trainer as T
from minigpt.config import GPTConfig
from minigpt.model import GPT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_gpt(vocab=50, block=16, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=2, n_embd=16))


def loop_cfg(tmp_path, **kw):
    base = dict(out_dir=str(tmp_path / "run"), max_iters=12, batch_size=4, learning_rate=1e-2, min_lr=1e-3,
                warmup_iters=3, eval_interval=4, eval_iters=2, progress=False, seed=0)
    base.update(kw)
    return T.LoopConfig(**base)


def synthetic_batches(vocab=50, block=16, batch=4, n=2000, seed=0):
    g = torch.Generator().manual_seed(123)
    ids = torch.randint(vocab, (n,), generator=g)
    ids[1::2] = (ids[0::2] + 1) % vocab  # learnable: every odd token is its predecessor + 1
    return PT.LMBatches(ids[:1600], ids[1600:], block, batch, seed=seed)


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


# ----------------------------------------------------------------------------- schedule

def test_lr_schedule_hand_worked_values():
    cfg = T.LoopConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110, max_iters=200)
    assert T.lr_at(0, cfg) == pytest.approx(1e-4)             # (0 + 1) / 10 of the peak
    assert T.lr_at(4, cfg) == pytest.approx(5e-4)
    assert T.lr_at(9, cfg) == pytest.approx(1e-3)             # warmup ends at the peak
    assert T.lr_at(10, cfg) == pytest.approx(1e-3)            # cosine starts at the peak
    assert T.lr_at(60, cfg) == pytest.approx(5.5e-4)          # half-way: (max + min) / 2
    assert T.lr_at(35, cfg) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi / 4)) * 9e-4)
    assert T.lr_at(110, cfg) == pytest.approx(1e-4)
    assert T.lr_at(150, cfg) == pytest.approx(1e-4)           # after the decay: the floor
    lrs = [T.lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))          # monotone decay
    cfg2 = dataclasses.replace(cfg, lr_decay_iters=None, max_iters=20)
    assert T.lr_at(20, cfg2) == pytest.approx(1e-4) and T.lr_at(15, cfg2) == pytest.approx(5.5e-4)


# ----------------------------------------------------------------------------- optimizer groups

def test_weight_decay_groups_gpt_and_generic():
    cfg = T.LoopConfig(weight_decay=0.1)
    model = tiny_gpt()
    names = {id(p): n for n, p in model.named_parameters()}
    for m in (model, torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3))):
        opt = T.configure_optimizer(m, cfg)
        by_wd = {g["weight_decay"]: g["params"] for g in opt.param_groups}
        assert set(by_wd) == {0.1, 0.0}
        assert all(p.dim() >= 2 for p in by_wd[0.1]) and all(p.dim() < 2 for p in by_wd[0.0])
        n_params = len({id(p) for p in m.parameters()})
        assert len(by_wd[0.1]) + len(by_wd[0.0]) == n_params   # every parameter exactly once (tied once)
    opt = T.configure_optimizer(model, cfg)
    no_decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert any(n.endswith(".bias") for n in no_decay) and any("ln" in n for n in no_decay)
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


# ----------------------------------------------------------------------------- accumulation

def test_accumulating_k_micro_batches_equals_one_big_batch():
    model = tiny_gpt()
    x = torch.randint(50, (8, 16))
    y = torch.randint(50, (8, 16))
    model.zero_grad()
    loss_big, _ = T.forward_backward(model, PT.lm_loss, [(x, y)])
    g_big = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    micro = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)]   # k = 4 micro-batches of 2
    loss_acc, _ = T.forward_backward(model, PT.lm_loss, micro)
    assert loss_acc == pytest.approx(loss_big, rel=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g_big[n], rtol=1e-4, atol=1e-6, msg=n)


def test_optimizer_step_clips_and_reports_norm():
    model = tiny_gpt()
    opt = T.configure_optimizer(model, T.LoopConfig())
    x = torch.randint(50, (2, 16))
    T.forward_backward(model, PT.lm_loss, [(x, x)])
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    norm = T.optimizer_step(model, opt, grad_clip=1e-3)
    assert norm == pytest.approx(float(expected), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------- the loop

def train_records(run_dir):
    return [r for r in T.read_metrics(os.path.join(run_dir, "metrics.jsonl"))]


def test_fit_learns_logs_and_writes_run_dir(tmp_path):
    cfg = loop_cfg(tmp_path, max_iters=40, eval_interval=10)
    out = T.fit(tiny_gpt(), PT.lm_loss, synthetic_batches(), cfg)
    recs = train_records(cfg.out_dir)
    train = [r for r in recs if r["split"] == "train"]
    val = [r for r in recs if r["split"] == "val"]
    assert [r["step"] for r in train] == list(range(40))
    assert [r["step"] for r in val] == [0, 10, 20, 30, 40]
    assert val[-1]["loss"] < val[0]["loss"] - 0.3                 # it learns the +1 rule
    assert out["val_loss"] == val[-1]["loss"] and out["step"] == 40 and out["tokens"] == 40 * 4 * 16
    assert train[0]["lr"] == pytest.approx(1e-2 / 3)
    for name in ("ckpt.pt", "config.json", "loss.png", "metrics.jsonl"):
        assert os.path.exists(os.path.join(cfg.out_dir, name)), name
    assert ck.safe_load(os.path.join(cfg.out_dir, "ckpt.pt"))["step"] == 40


@pytest.mark.slow
def test_compile_trains_the_same_model_and_saves_plain_weights(tmp_path):
    """--compile=True (torch.compile, README's advice for long GPU runs; about 15 s of compiling here): the
    same losses as eager to float tolerance, and ckpt.pt holds the plain module's weights (no `_orig_mod.`
    prefix), so the checkpoint loads into an uncompiled model."""
    eager = T.fit(tiny_gpt(), PT.lm_loss, synthetic_batches(), loop_cfg(tmp_path / "eager"))
    compiled = T.fit(tiny_gpt(), PT.lm_loss, synthetic_batches(), loop_cfg(tmp_path / "compiled", compile=True))
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-4)
    state = ck.safe_load(os.path.join(tmp_path / "compiled" / "run", "ckpt.pt"))["model"]
    assert not any(k.startswith("_orig_mod.") for k in state), list(state)[:3]
    tiny_gpt().load_state_dict(state)


class InterruptAt:
    """A batch source that raises KeyboardInterrupt (as Ctrl-C would) when asked for train batch `at`."""

    def __init__(self, inner, at):
        self.inner, self.at = inner, at

    def __call__(self, split, index):
        if split == "train" and index == self.at:
            raise KeyboardInterrupt
        return self.inner(split, index)


def test_interrupt_then_resume_reproduces_the_curve_exactly(tmp_path):
    cfg_a = loop_cfg(tmp_path / "a", grad_accum=2)
    T.fit(tiny_gpt(), PT.lm_loss, synthetic_batches(), cfg_a)
    cfg_b = loop_cfg(tmp_path / "b", grad_accum=2)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during step 7 (micro-batch 14): ckpt.pt saved at 7
        T.fit(tiny_gpt(), PT.lm_loss, InterruptAt(synthetic_batches(), 14), cfg_b)
    assert ck.safe_load(os.path.join(cfg_b.out_dir, "ckpt.pt"))["step"] == 7
    resumed = dataclasses.replace(cfg_b, resume=True)
    T.fit(tiny_gpt(seed=99), PT.lm_loss, synthetic_batches(), resumed)   # different init: weights come from ckpt
    a, b = train_records(cfg_a.out_dir), train_records(cfg_b.out_dir)
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]               # bit-for-bit on CPU
    sa = ck.safe_load(os.path.join(cfg_a.out_dir, "ckpt.pt"))["model"]
    sb = ck.safe_load(os.path.join(cfg_b.out_dir, "ckpt.pt"))["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_with_dropout_restores_rng(tmp_path):
    def model():
        torch.manual_seed(0)
        return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.2))

    cfg_a = loop_cfg(tmp_path / "a", max_iters=8)
    torch.manual_seed(5)
    T.fit(model(), PT.lm_loss, synthetic_batches(), cfg_a)
    cfg_b = loop_cfg(tmp_path / "b", max_iters=8)
    torch.manual_seed(5)
    with pytest.raises(KeyboardInterrupt):
        T.fit(model(), PT.lm_loss, InterruptAt(synthetic_batches(), 5), cfg_b)
    torch.manual_seed(1234)  # a fresh process would start from some other RNG state
    T.fit(model(), PT.lm_loss, synthetic_batches(), dataclasses.replace(cfg_b, resume=True))
    a, b = train_records(cfg_a.out_dir), train_records(cfg_b.out_dir)
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = loop_cfg(tmp_path, max_iters=20, eval_interval=4)

    def loss_fn(model, batch):
        loss, stats = PT.lm_loss(model, batch)
        if loss_fn.calls == 6:
            loss = loss * float("nan")
        loss_fn.calls += 1
        return loss, stats

    loss_fn.calls = 0
    model = tiny_gpt()
    with pytest.raises(T.NonFiniteLossError, match=r"step 6: loss is nan.*step 4\) is kept"):
        T.fit(model, loss_fn, synthetic_batches(), dataclasses.replace(cfg, eval_iters=0))
    state = ck.safe_load(os.path.join(cfg.out_dir, "ckpt.pt"))
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())      # the bad step was never applied


def test_stop_on_interrupt_finishes_the_step_and_saves(tmp_path):
    cfg = loop_cfg(tmp_path, max_iters=10)

    def batches(split, index):
        if split == "train" and index == 3:
            signal.raise_signal(signal.SIGINT)  # a Ctrl-C arriving in the middle of step 3 (any OS)
        return synthetic_batches()(split, index)

    out = T.fit(tiny_gpt(), PT.lm_loss, batches, cfg)
    assert out["interrupted"] and out["step"] == 4
    assert ck.safe_load(os.path.join(cfg.out_dir, "ckpt.pt"))["step"] == 4


def test_lm_batches_are_deterministic_shifted_windows():
    ids = torch.arange(100)
    b = PT.LMBatches(ids[:80], ids[80:], block_size=8, batch_size=3, seed=1)
    x, y = b("train", 5)
    assert x.shape == (3, 8) and torch.equal(y, x + 1)
    x2, _ = b("train", 5)
    x3, _ = b("train", 6)
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    assert int(b("val", 0)[1].max()) <= 99
    with pytest.raises(ValueError, match="block_size"):
        PT.LMBatches(ids[:80], ids[80:85], block_size=8, batch_size=3)


def test_plot_metrics_writes_png(tmp_path):
    recs = [{"step": i, "split": "train", "loss": 3 - i / 10, "lr": 1e-3} for i in range(20)]
    recs += [{"step": 10, "split": "val", "loss": 2.1}]
    path = T.plot_metrics(recs, str(tmp_path / "x" / "loss.png"), title="t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_metrics_module_is_re_exported_by_the_trainer():
    for name in ("MetricsLogger", "read_metrics", "plot_metrics", "plot_panels"):
        assert getattr(T, name) is getattr(M, name) and name in T.__all__, name
    code = "import sys, minigpt.metrics; assert 'minigpt.trainer' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, encoding="utf-8",
                       timeout=60)
    assert r.returncode == 0, r.stderr                       # metrics.py does not import the loop


def test_metrics_logger_truncates_on_resume_and_writes_nan_as_null(tmp_path):
    log = T.MetricsLogger(str(tmp_path / "metrics.jsonl"))
    log.reset()
    for step in range(5):
        log.log({"step": step, "split": "train", "loss": torch.tensor(float(step)), "bad": float("nan")})
    log.truncate(3)
    recs = T.read_metrics(log.path)
    assert [r["step"] for r in recs] == [0, 1, 2] and recs[2]["loss"] == 2.0 and recs[0]["bad"] is None
    T.MetricsLogger(log.path, enabled=False).log({"step": 9})   # a non-zero rank writes nothing
    assert len(T.read_metrics(log.path)) == 3 and T.read_metrics(str(tmp_path / "none.jsonl")) == []
    panels = T.plot_panels(log.path, str(tmp_path / "p.png"), [("loss", "loss"), (("loss", "bad"), "both")])
    with open(panels, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_device_and_autocast_selection():
    assert T.pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert T.pick_device("auto").type in ("cpu", "mps")
    ctx = T.autocast_context("cpu")
    with ctx:
        assert torch.ones(2, 2) @ torch.ones(2, 2) is not None
    assert not isinstance(ctx, torch.autocast)


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    import random

    import numpy as np

    state = T.get_rng_state()
    ck.atomic_torch_save(state, tmp_path / "rng.pt")
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    T.set_rng_state(ck.safe_load(tmp_path / "rng.pt"))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


def test_cuda_rng_states_restore_on_a_machine_with_fewer_gpus(monkeypatch):
    """A checkpoint keeps one CUDA RNG state per GPU its process saw (e.g. 2 under torchrun); resumed where
    fewer are visible (CUDA_VISIBLE_DEVICES=0), each GPU there gets its own state back, and no more
    (torch.cuda.set_rng_state_all indexes a GPU that is not there: IndexError)."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((state, device)))
    state = {**T.get_rng_state(), "cuda": ["state of GPU 0", "state of GPU 1"]}
    T.set_rng_state(state)
    assert restored == [("state of GPU 0", 0)]


def test_resume_keeps_this_devices_optimizer_kernels(tmp_path):
    """A CUDA run's optimizer state says fused=True; loaded into an optimizer built for this device, the
    fused / foreach choice stays this device's (fused AdamW is not on every device and torch version)."""
    model = tiny_gpt()
    opt = T.configure_optimizer(model, loop_cfg(tmp_path), "cpu")
    kernels = [(g.get("fused"), g.get("foreach")) for g in opt.param_groups]
    saved = opt.state_dict()
    for g in saved["param_groups"]:
        g["fused"], g["foreach"] = True, False                   # as configure_optimizer(..., "cuda") leaves them
    ck.atomic_torch_save({"model": model.state_dict(), "optimizer": saved, "model_config": {}}, tmp_path / "ckpt.pt")
    T.load_training_state(str(tmp_path), model, opt, restore_rng=False)
    assert [(g.get("fused"), g.get("foreach")) for g in opt.param_groups] == kernels
    assert opt.param_groups[0]["lr"] == saved["param_groups"][0]["lr"]   # the rest is the checkpoint's


def test_resume_refuses_another_stages_checkpoint(tmp_path):
    """A checkpoint records which stage's config saved it: resuming it with another stage's config (pretraining
    pointed at an SFT run's directory, whose model and optimizer groups have the same shapes) is a ResumeError,
    not pretraining written over the SFT model; the same stage resumes, and so does a stage whose config
    extends the saved one (rlhf.pretrain resuming minigpt.train's run). A checkpoint of an older version
    records no class: its config's fields tell. Another stage's optimizer is a ResumeError too."""
    @dataclasses.dataclass
    class SFTLike(T.LoopConfig):
        """Another stage's config."""
        n_demos: int = 8        # a field of its own

    model = tiny_gpt()
    cfg = loop_cfg(tmp_path)
    opt = T.configure_optimizer(model, cfg, "cpu")
    T.save_training_state(str(tmp_path), model, opt, 3, SFTLike(out_dir=str(tmp_path)))
    with pytest.raises(T.ResumeError, match=r"saved by another stage \(SFTLike; this one is LoopConfig\)"):
        T.load_training_state(str(tmp_path), model, opt, cfg=cfg)
    assert T.load_training_state(str(tmp_path), model, opt, cfg=SFTLike(out_dir=str(tmp_path)))["step"] == 3

    state = ck.load_checkpoint(str(tmp_path))
    del state["config_class"]                                            # as an older version saved it
    ck.atomic_torch_save(state, tmp_path / "ckpt.pt")
    with pytest.raises(T.ResumeError, match=r"saved by another stage \(settings n_demos; this one is LoopConfig"):
        T.load_training_state(str(tmp_path), model, opt, cfg=cfg)

    T.save_training_state(str(tmp_path), model, opt, 4, cfg)             # LoopConfig's run, resumed by a stage
    assert T.load_training_state(str(tmp_path), model, opt, cfg=SFTLike(out_dir=str(tmp_path)))["step"] == 4

    state = ck.load_checkpoint(str(tmp_path))
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1]   # one group, not two
    ck.atomic_torch_save(state, tmp_path / "ckpt.pt")
    with pytest.raises(T.ResumeError, match="holds another stage's optimizer"):
        T.load_training_state(str(tmp_path), model, opt, cfg=cfg)


def test_a_fresh_start_beside_an_unfinished_checkpoint_says_so(tmp_path, capsys):
    """Run again without --resume, a stage whose last run stopped early starts afresh (and will overwrite
    its ckpt.pt): a note says so, and that --resume would continue it (found by probing: it was silent).
    A finished stage's directory gets no note."""
    cfg = loop_cfg(tmp_path)
    os.makedirs(cfg.out_dir)
    (tmp_path / "run" / "ckpt.pt").write_bytes(b"")
    T.check_resume(cfg)
    assert "holds an unfinished run's ckpt.pt; this one starts afresh (the stage's own command with --resume" \
        in capsys.readouterr().out
    ck.write_summary(cfg.out_dir, {})
    T.check_resume(dataclasses.replace(cfg, out_dir=str(tmp_path / "run" / ".")))    # (another text: not deduped)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- entry points (subprocess)

def test_help_lists_options():
    r = subprocess.run([sys.executable, "-m", "minigpt.train", "--help"], cwd=ROOT, env=env(),
                       capture_output=True, encoding="utf-8", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--max_iters=" in r.stdout and "optimizer steps" in r.stdout and "tiny" in r.stdout


def test_unknown_option_is_a_clear_error():
    r = subprocess.run([sys.executable, "-m", "minigpt.train", "--max_iter=3"], cwd=ROOT, env=env(),
                       capture_output=True, encoding="utf-8", timeout=60)
    assert r.returncode != 0 and "did you mean --max_iters" in r.stderr


def _text_file(tmp_path):
    pytest.importorskip("minigpt.tokenizer")
    lines = [f"the {a} cat sat on the {b} mat number {i}." for i, (a, b) in
             enumerate(zip(["red", "big", "old", "shy"] * 200, ["blue", "flat", "new"] * 300))]
    path = tmp_path / "text.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def test_pretrain_tiny_smoke_on_a_text_file(tmp_path):
    out = tmp_path / "pre"
    cmd = [sys.executable, "-m", "minigpt.train", "--preset=tiny", f"--out_dir={out}",
           f"--data={_text_file(tmp_path)}", "--progress=false"]
    r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "val loss" in r.stdout and "samples:" in r.stdout
    summary = ck.read_summary(out)
    assert summary["val_loss"] < math.log(summary["vocab_size"]) and summary["val_ppl"] > 1
    model, tok = ck.load_model(out)
    assert model.config.vocab_size == tok.vocab_size
    for name in ("model.pt", "tokenizer.bpe", "ckpt.pt", "loss.png", "metrics.jsonl", "summary.json"):
        assert (out / name).exists(), name


def test_pretrain_tiny_smoke_on_the_world_corpus(tmp_path):
    """python -m rlhf.pretrain: minigpt.train's pretraining on the world's corpus (minigpt knows no world)."""
    out = tmp_path / "pre"
    r = subprocess.run([sys.executable, "-m", "rlhf.pretrain", "--preset", "tiny", f"--out_dir={out}",
                        "--progress=false"], cwd=ROOT, env=env(), capture_output=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ck.is_finished(out)


def test_minigpt_train_without_data_is_a_one_line_error(tmp_path):
    """minigpt.train has no default corpus (it knows nothing of rlhf): no --data is a clear error."""
    out = tmp_path / "pre"
    r = subprocess.run([sys.executable, "-m", "minigpt.train", "--preset", "tiny", f"--out_dir={out}",
                        "--progress=false"], cwd=ROOT, env=env(), capture_output=True, encoding="utf-8", timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().startswith("error: no training text") and "Traceback" not in r.stderr, r.stderr
    assert "rlhf.pretrain" in r.stderr


def test_ddp_two_processes_equal_one_process(tmp_path):
    """torchrun --nproc_per_node=2 (gloo, CPU) on the tiny preset == one process with the same global batch."""
    data = _text_file(tmp_path)
    common = ["--preset=tiny", f"--data={data}", "--progress=false", "--max_iters=12", "--eval_interval=6"]
    one, two = tmp_path / "one", tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "minigpt.train", *common, f"--out_dir={one}"], cwd=ROOT, env=env(),
                       capture_output=True, encoding="utf-8", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    os.makedirs(two)
    shutil.copy(one / "tokenizer.bpe", two / "tokenizer.bpe")  # same tokenizer (also retrained identically)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "minigpt.train", *common, f"--out_dir={two}"]
    r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, encoding="utf-8", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    a = [x for x in train_records(str(one)) if x["split"] == "train"]
    b = [x for x in train_records(str(two)) if x["split"] == "train"]
    assert len(a) == len(b) == 12
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-5)
    sa, sb = ck.safe_load(one / "model.pt")["model"], ck.safe_load(two / "model.pt")["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5, msg=k)
    assert json.loads((two / "summary.json").read_text(encoding="utf-8"))["world_size"] == 2


@pytest.mark.skipif(sys.platform == "win32", reason="Windows delivers Ctrl-C to a process group, not by send_signal")
def test_ctrl_c_on_the_command_line_saves_a_checkpoint_and_resume_continues(tmp_path):
    data, out = _text_file(tmp_path), tmp_path / "run"
    cmd = [sys.executable, "-m", "minigpt.train", "--preset=tiny", f"--data={data}", f"--out_dir={out}",
           "--progress=false", "--max_iters=100000", "--eval_interval=100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(T.read_metrics(str(out / "metrics.jsonl"))) < 4:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted: saved" in stdout + stderr
    step = ck.safe_load(out / "ckpt.pt")["step"]
    assert step >= 3 and not ck.is_finished(out)
    r = subprocess.run(cmd[:-2] + [f"--max_iters={step + 3}", "--resume"], cwd=ROOT, env=env(),
                       capture_output=True, encoding="utf-8", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resumed {out}/ckpt.pt at step {step}" in r.stdout
    train = [x for x in train_records(str(out)) if x["split"] == "train"]
    assert [x["step"] for x in train] == list(range(step + 3))
