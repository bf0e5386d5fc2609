"""minigpt.checkpoint: atomic writes, weights_only loads, the run-directory helpers."""

from __future__ import annotations

import json
import os

import pytest
import torch
from matplotlib.figure import Figure

from minigpt import checkpoint as ck
from minigpt.files import FILE_MODE, atomic_write
from minigpt.metrics import save_figure
from minigpt.model import save_pretrained
from rlhf.formats import write_jsonl
from tests.tiny_rl import tiny_gpt, tiny_tokenizer


class _NotATensor:
    pass


def test_run_outputs_get_a_plain_files_permissions(tmp_path):
    """Every atomic write (checkpoints, JSON, text, JSONL, the tokenizer) leaves a file with the permissions
    open() would give, not tempfile's 0600, which kept a run's outputs from anyone else on a shared machine."""
    ck.atomic_torch_save({"v": 1}, tmp_path / "ckpt.pt")
    ck.atomic_write_json(tmp_path / "summary.json", {"a": 1})
    ck.atomic_write_text(tmp_path / "report.md", "# r\n")
    write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
    ck.save_tokenizer(tmp_path, tiny_tokenizer())
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    save_figure(fig, str(tmp_path / "loss.png"))
    modes = {name: os.stat(tmp_path / name).st_mode & 0o777 for name in sorted(os.listdir(tmp_path))}
    assert modes == {name: FILE_MODE for name in modes} and len(modes) == 6, (oct(FILE_MODE), modes)
    save_pretrained(tiny_gpt(64), tmp_path / "hf")                  # the Hugging Face layout too
    hf = {name: os.stat(tmp_path / "hf" / name).st_mode & 0o777 for name in sorted(os.listdir(tmp_path / "hf"))}
    assert hf == {"config.json": FILE_MODE, "pytorch_model.bin": FILE_MODE}, (oct(FILE_MODE), hf)


def test_atomic_save_round_trip_and_no_temp_files(tmp_path):
    obj = {"w": torch.arange(6.0).view(2, 3), "step": 3, "rng": torch.get_rng_state(), "t": (1, "a", None)}
    path = tmp_path / "sub" / "ckpt.pt"
    ck.atomic_torch_save(obj, path)
    back = ck.safe_load(path)
    assert torch.equal(back["w"], obj["w"]) and back["step"] == 3 and back["t"] == (1, "a", None)
    assert torch.equal(back["rng"], obj["rng"])
    assert os.listdir(tmp_path / "sub") == ["ckpt.pt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    ck.atomic_torch_save({"v": 1}, path)

    def boom(f):
        f.write(b"partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, boom)
    assert ck.safe_load(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_safe_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": _NotATensor()}, path)
    with pytest.raises(Exception):
        ck.safe_load(path)


def test_summary_marks_finished_and_json_is_clean(tmp_path):
    assert not ck.is_finished(tmp_path) and ck.read_summary(tmp_path) is None
    ck.write_summary(tmp_path, {"val_loss": torch.tensor(1.5), "bad": float("nan"), "xs": [1, 2]})
    assert ck.is_finished(tmp_path)
    assert ck.read_summary(tmp_path) == {"val_loss": 1.5, "bad": None, "xs": [1, 2]}
    with open(tmp_path / "summary.json", encoding="utf-8") as f:
        json.load(f)  # strict JSON: no NaN literal


def test_resume_state_round_trip(tmp_path):
    assert ck.load_checkpoint(tmp_path) is None
    ck.save_checkpoint(tmp_path, {"step": 7, "model": {"a": torch.ones(2)}})
    assert ck.load_checkpoint(tmp_path)["step"] == 7


def test_unwrap_and_clean_state_dict():
    inner = torch.nn.Linear(2, 2)

    class Wrapper(torch.nn.Module):  # stands in for DistributedDataParallel
        def __init__(self, m):
            super().__init__()
            self.module = m

    sd = ck.clean_state_dict(Wrapper(inner))
    assert set(sd) == {"weight", "bias"}
    assert ck.unwrap_model(Wrapper(inner)) is inner


def test_save_and_load_model_round_trip(tmp_path):
    pytest.importorskip("minigpt.model")
    pytest.importorskip("minigpt.tokenizer")
    from minigpt.config import GPTConfig
    from minigpt.model import GPT
    from minigpt.tokenizer import train_bpe

    tok = train_bpe("hello world, hello there. " * 20, vocab_size=256 + 10 + 6)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    ck.save_model(tmp_path, model, tok, extra={"step": 5})
    assert ck.safe_load(tmp_path / "model.pt")["step"] == 5
    model2, tok2 = ck.load_model(tmp_path)
    assert not model2.training
    x = torch.tensor([tok.encode("hello world")])
    model.eval()
    torch.testing.assert_close(model(x)[0], model2(x)[0])
    assert tok2.encode("hello there") == tok.encode("hello there")


def test_run_files_that_do_not_load_are_checkpoint_errors_naming_them(tmp_path):
    """Every JSON, JSON-lines and torch file a stage wrote is read through one door that turns a damaged file
    into a CheckpointError naming path(:line), which the entry points print as one line."""
    js = tmp_path / "summary.json"
    js.write_text('{"a": 1,\n "b": oops}', encoding="utf-8")
    with pytest.raises(ck.CheckpointError, match=r"summary\.json:2: not valid JSON"):
        ck.read_json_file(js)
    js.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ck.CheckpointError, match="expected a JSON object, found list"):
        ck.read_json_file(js)
    assert ck.read_json_file(tmp_path / "missing.json") is None

    lines = tmp_path / "metrics.jsonl"
    lines.write_text('{"step": 1}\n{oops\n{"step": 3}\n', encoding="utf-8")
    with pytest.raises(ck.CheckpointError, match=r"metrics\.jsonl:2: not valid JSON"):
        ck.read_json_lines(lines)
    lines.write_text('{"step": 1}\n\n{"step": 2, "lo', encoding="utf-8")      # an append cut short by a crash
    assert ck.read_json_lines(lines) == [{"step": 1}]

    model = tmp_path / "model.pt"
    ck.atomic_torch_save({"w": torch.ones(64)}, model)
    model.write_bytes(model.read_bytes()[:100])                                  # cut short
    with pytest.raises(ck.CheckpointError, match=r"model\.pt: not a readable checkpoint"):
        ck.safe_load(model)
    model.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", encoding="utf-8")
    with pytest.raises(ck.CheckpointError, match="Git LFS pointer"):
        ck.safe_load(model)
