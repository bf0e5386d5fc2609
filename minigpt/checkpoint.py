"""Checkpoints: atomic writes, safe loads, and the self-describing run directory every stage uses.

A run directory holds (each file written to a temp file in the same directory, then os.replace'd, so
a crash or Ctrl-C never leaves a half-written file behind):

    run_dir/model.pt       {"model": state_dict, "config": asdict(GPTConfig), **extra}  the final weights
    run_dir/tokenizer.bpe  the tokenizer, so the directory is self-describing
    run_dir/ckpt.pt        resume state: model + optimizer + step + RNG states (see minigpt.train)
    run_dir/config.json    the stage's config
    run_dir/summary.json   final metrics; its presence marks the stage as finished (is_finished)

Everything is loaded with torch.load(weights_only=True): a checkpoint can then only contain tensors and
plain Python containers, never pickled code.

    model, tokenizer = load_model("runs/default/pretrain")
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import zipfile
from typing import Any

import torch

from minigpt.config import GPTConfig
from minigpt.files import atomic_write, atomic_write_text  # noqa: F401 (atomic_write_text: re-exported)
from minigpt.model import GPT
from minigpt.tokenizer import Tokenizer

MODEL_FILE = "model.pt"
TOKENIZER_FILE = "tokenizer.bpe"
RESUME_FILE = "ckpt.pt"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"


# ----------------------------------------------------------------------------- atomic writes

class CheckpointError(ValueError):
    """A run file that cannot be used: a checkpoint of another kind than the caller needs (e.g. a reward
    model where a GPT is expected), or a file that does not load (truncated, hand-edited, a Git LFS
    pointer). The entry points turn it into a one-line error that names the file."""


REMEDY = "delete it (or its stage's directory) and run that stage again"


@contextlib.contextmanager
def one_line_errors():
    """For a command-line main: a CheckpointError raised inside ends the command with `error: ...` and exit
    status 1, not a traceback. (The stages' mains get the same from minigpt.trainer.run_entry_point.)"""
    try:
        yield
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save(obj, path), atomically (temp file in the same directory + os.replace)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _json_default(x):
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def _finite(x):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write obj as indented JSON, atomically (NaN/inf become null, tensors become numbers/lists)."""
    obj = json.loads(json.dumps(obj, default=_json_default))  # normalise tensors/dataclasses first
    atomic_write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=False) + "\n")


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """torch.load with weights_only=True (no arbitrary code) onto the CPU by default. A file that does not
    load (cut short, overwritten, not a checkpoint at all) is a CheckpointError naming it. mmap=True maps the
    tensors instead of reading them (for a look at a checkpoint's other entries)."""
    try:
        return torch.load(os.fspath(path), map_location=map_location, weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{os.fspath(path)}: not a readable checkpoint ({type(e).__name__}: cut short, "
                              f"overwritten, or a Git LFS pointer?); {REMEDY}") from None


# ----------------------------------------------------------------------------- models

def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def clean_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict of the unwrapped model, on the CPU (no 'module.' / '_orig_mod.' prefixes)."""
    return {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}


def save_tokenizer(run_dir: str | os.PathLike, tokenizer) -> str:
    """tokenizer.save to run_dir/tokenizer.bpe (Tokenizer.save writes atomically). Returns the path."""
    path = os.path.join(os.fspath(run_dir), TOKENIZER_FILE)
    tokenizer.save(path)
    return path


def load_tokenizer(run_dir: str | os.PathLike):
    """Tokenizer.load(run_dir/tokenizer.bpe)."""
    path = os.path.join(os.fspath(run_dir), TOKENIZER_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no tokenizer in this run directory")
    return Tokenizer.load(path)


def save_model(run_dir: str | os.PathLike, model: torch.nn.Module, tokenizer=None,
               extra: dict | None = None) -> str:
    """Write run_dir/model.pt = {"model": state_dict, "config": asdict(GPTConfig), **extra} and,
    when a tokenizer is given, run_dir/tokenizer.bpe. Returns the model path."""
    run_dir = os.fspath(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    plain = unwrap_model(model)
    obj = {"model": clean_state_dict(plain), "config": dataclasses.asdict(plain.config)}
    obj.update(extra or {})
    path = os.path.join(run_dir, MODEL_FILE)
    atomic_torch_save(obj, path)
    if tokenizer is not None:
        save_tokenizer(run_dir, tokenizer)
    return path


def load_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """(GPT, Tokenizer) from run_dir/model.pt and run_dir/tokenizer.bpe; the model is in eval mode.

    Falls back to the model inside run_dir/ckpt.pt when a run was interrupted before model.pt existed.
    """
    run_dir = os.fspath(run_dir)
    path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.exists(path):
        path = os.path.join(run_dir, RESUME_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir}: no {MODEL_FILE} (or {RESUME_FILE}); train this stage first")
    obj = safe_load(path)
    keys = list(obj["model"])
    if not any(k.startswith("transformer.") for k in keys) or any(k.startswith("backbone.") for k in keys):
        kind = (obj.get("kind") or "non-GPT").replace("_", " ")      # e.g. a reward model: GPT backbone + head
        raise CheckpointError(f"{path} holds a {kind} checkpoint, not a GPT language model "
                              f"(point at the run directory of a language model)")
    config = obj.get("model_config", obj.get("config"))
    model = GPT(GPTConfig(**config))
    model.load_state_dict(obj["model"])
    model.to(device).eval()
    tokenizer = load_tokenizer(run_dir)
    if tokenizer.vocab_size != model.config.vocab_size:       # a tokenizer.bpe copied in from another run
        raise CheckpointError(f"{os.path.join(run_dir, TOKENIZER_FILE)} has {tokenizer.vocab_size} tokens but "
                              f"{path} was trained on {model.config.vocab_size}: they come from different runs")
    return model, tokenizer


# ----------------------------------------------------------------------------- resume + summary

def save_checkpoint(run_dir: str | os.PathLike, state: dict) -> str:
    """Atomically write the resume state dict to run_dir/ckpt.pt. Returns the path."""
    path = os.path.join(os.fspath(run_dir), RESUME_FILE)
    atomic_torch_save(state, path)
    return path


def load_checkpoint(run_dir: str | os.PathLike, mmap: bool = False) -> dict | None:
    """The resume state from run_dir/ckpt.pt, or None when there is none (mmap: see safe_load)."""
    path = os.path.join(os.fspath(run_dir), RESUME_FILE)
    return safe_load(path, mmap=mmap) if os.path.exists(path) else None


def write_summary(run_dir: str | os.PathLike, metrics: dict) -> str:
    """Atomically write run_dir/summary.json: the stage's final metrics and its 'finished' marker."""
    path = os.path.join(os.fspath(run_dir), SUMMARY_FILE)
    atomic_write_json(path, metrics)
    return path


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    """run_dir/summary.json as a dict, or None when the stage has not finished."""
    return read_json_file(os.path.join(os.fspath(run_dir), SUMMARY_FILE))


def is_stage_dir(path: str | os.PathLike) -> bool:
    """True when `path` is one stage's run directory (it holds a model.pt, config.json or ckpt.pt), not a
    pipeline run that holds stage directories: the pipeline's --out and the experiments' --run check it."""
    return any(os.path.exists(os.path.join(os.fspath(path), f)) for f in (MODEL_FILE, CONFIG_FILE, RESUME_FILE))


def is_finished(run_dir: str | os.PathLike) -> bool:
    """True when the stage that writes run_dir has finished (its summary.json exists)."""
    return os.path.exists(os.path.join(os.fspath(run_dir), SUMMARY_FILE))


def write_config(run_dir: str | os.PathLike, cfg) -> str:
    """Atomically write a stage config (a dataclass or dict) to run_dir/config.json."""
    path = os.path.join(os.fspath(run_dir), CONFIG_FILE)
    atomic_write_json(path, dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg)
    return path


RUN_ONLY_FIELDS = ("progress", "resume", "device", "compile")   # how a stage is run, not what it trains


def config_differences(run_dir: str | os.PathLike, cfg, ignore: tuple[str, ...] = ()) -> dict | None:
    """How the dataclass `cfg` differs from the config run_dir/config.json was trained with:
    {field: (saved value, value now)} (RUN_ONLY_FIELDS and `ignore` aside); None without a config.json.

    A field the saved config lacks (added to the class later) counts as its default, the value it was
    trained with. A path inside the run that held the stage then (the parent of its saved out_dir) equals
    the same path inside the run that holds it now, so a run directory that was moved or copied matches."""
    saved = read_json_file(os.path.join(os.fspath(run_dir), CONFIG_FILE))
    if saved is None:
        return None
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None
                for f in dataclasses.fields(cfg)}
    defaults, now = json.loads(json.dumps(defaults)), json.loads(json.dumps(dataclasses.asdict(cfg)))
    then_root = os.path.dirname(os.path.abspath(saved["out_dir"])) if saved.get("out_dir") else None
    now_root = os.path.dirname(os.path.abspath(now["out_dir"])) if now.get("out_dir") else None

    def in_run(value, root):                  # "runs/a/sft" under root "runs/a" -> ("run", "sft")
        if isinstance(value, str) and value and root:
            v = os.path.abspath(value)
            if v.startswith(root + os.sep):
                return ("run", v[len(root) + 1:])
        return value

    return {k: (saved.get(k, defaults[k]), v) for k, v in now.items()
            if k not in RUN_ONLY_FIELDS + tuple(ignore)
            and in_run(saved.get(k, defaults[k]), then_root) != in_run(v, now_root)}


def read_json_file(path: str | os.PathLike, want: type | None = dict):
    """The JSON in `path`, or None when there is no such file. One that does not parse, or that holds
    something other than `want` (a JSON object, as every file a stage writes; None: anything), is a
    CheckpointError naming path(:line)."""
    if not os.path.exists(path):
        return None
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); {REMEDY}") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text; {REMEDY}") from None
    if want is not None and not isinstance(obj, want):
        found = {dict: "a JSON object", list: "a JSON list"}
        raise CheckpointError(f"{path}: expected {found.get(want, want.__name__)}, found {type(obj).__name__}; "
                              f"{REMEDY}")
    return obj


def read_json_lines(path: str | os.PathLike) -> list:
    """The records of a JSON-lines file a stage writes (metrics.jsonl, eval rows); blank lines skipped, and
    a last line without its newline that does not parse (an append cut short by a crash). Any other line
    that does not parse is a CheckpointError naming path:line."""
    path, rows = os.fspath(path), []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    if not line.endswith("\n"):          # only the last line can lack its newline
                        break
                    raise CheckpointError(f"{path}:{n}: not valid JSON ({e.msg}); {REMEDY}") from None
    return rows
