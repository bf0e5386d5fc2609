"""The training-loop skeleton every stage reuses: devices, seeds, optimizer, schedule, the loop, resume.

The pieces are public so that pretraining (minigpt/train.py), SFT, the reward model, PPO, GRPO and DPO
reuse them instead of copying. The run's records (metrics.jsonl and its plots) live in minigpt/metrics.py
and are re-exported here, so `from minigpt.trainer import read_metrics` works as before:

    LoopConfig                      the loop's fields (every stage's config inherits them)
    pick_device, autocast_context   cuda -> mps -> cpu; bf16 autocast on a CUDA GPU with bf16 hardware (and
                                    on the CPU with --dtype=bfloat16), float32 elsewhere (compute_dtype)
    seed_everything, get_rng_state, set_rng_state, make_generator (on any device)
    setup_distributed, teardown_distributed, shard (minigpt.distributed)
    configure_optimizer, lr_at      AdamW with weight-decay groups; linear warmup + cosine decay
    forward_backward, optimizer_step   gradient accumulation, clipping, NaN guard
    evaluate                        mean loss over fixed validation batches
    MetricsLogger, read_metrics, plot_metrics, plot_panels   metrics.jsonl and its PNG plots (minigpt.metrics)
    save_training_state, load_training_state    ckpt.pt (model, optimizer, step, RNG) for --resume
    StopOnInterrupt                 Ctrl-C: finish the step, save, stop
    fit(model, loss_fn, get_batch, cfg, ...)    the whole supervised loop
    start_stage, run_entry_point    a stage's start (device, process group, run dir) and its CLI errors
    out_of_memory_error, oom_account, smaller_step   a GPU out-of-memory error as one line, with the setting
                                    that makes a step need less
    compile_failed, compile_error   a torch.compile failure as one line (run without --compile)

Batch sources are pure functions `get_batch(split, index) -> batch` of a split name and a micro-batch
counter (train: step * grad_accum + micro_step; val: 0..eval_iters-1), drawing from a generator seeded
by (seed, split, index). So the data a step sees depends only on its number: a resumed run replays the
uninterrupted one exactly (on CPU), and under DDP every process draws the same *global* micro-batch
and keeps its own slice (`shard`), which makes N processes equal one process with the same batch.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import random
import re
import signal
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from minigpt import checkpoint as ckpt_io
from minigpt.distributed import (DistInfo, all_reduce_mean, barrier, mean_over_processes, setup_distributed,
                                 shard, teardown_distributed)
from minigpt.files import make_dir
# re-exported: stages import the loop's pieces from minigpt.trainer
from minigpt.metrics import MetricsLogger, plot_metrics, plot_panels, read_metrics

__all__ = [
    "LoopConfig", "pick_device", "missing_gpu_kernels", "note_once", "autocast_context", "check_dtype_name",
    "compute_dtype",
    "has_bf16_hardware", "seed_everything", "get_rng_state", "set_rng_state",
    "make_generator", "setup_distributed", "teardown_distributed", "shard", "DistInfo", "configure_optimizer",
    "lr_at", "set_lr", "forward_backward", "optimizer_step", "evaluate", "NonFiniteLossError", "check_finite",
    "MetricsLogger", "read_metrics", "plot_metrics", "plot_panels", "save_training_state", "load_training_state",
    "ResumeError", "check_resume", "check_same_stage", "no_checkpoint_error",
    "StopOnInterrupt", "fit", "start_stage", "run_entry_point", "out_of_memory_error", "oom_account", "smaller_step",
    "compile_failed", "compile_error",
]

# ----------------------------------------------------------------------------- configs

@dataclass
class LoopConfig:
    """Fields of the shared training loop; every stage's config inherits them."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"max_iters": ">= 0", "batch_size": ">= 1", "grad_accum": ">= 1", "learning_rate": ">= 0",
              "min_lr": ">= 0", "weight_decay": ">= 0", "beta1": "in [0, 1)", "beta2": "in [0, 1)"}
    out_dir: str = "runs/default/pretrain"  # run directory: ckpt.pt, model.pt, tokenizer.bpe, metrics.jsonl, loss.png
    seed: int = 1337                 # seeds init, batch sampling and dropout: same seed, same CPU -> same numbers
    device: str = "auto"             # auto = cuda, else mps, else cpu; or name one ("cpu", "cuda:1")
    dtype: str = "auto"              # auto = bf16 autocast on a GPU with bf16 hardware, else float32; float32; bfloat16
    compile: bool = False            # torch.compile the model (faster on GPU; slow to start, needs a compiler)
    resume: bool = False             # continue from out_dir/ckpt.pt (same config -> the same loss curve)
    max_iters: int = 600             # optimizer steps
    batch_size: int = 32             # rows per micro-batch, in total over all processes (split between them)
    grad_accum: int = 1              # micro-batches per optimizer step (effective batch = batch_size * this)
    learning_rate: float = 2e-3      # peak learning rate, reached after warmup
    min_lr: float = 2e-4             # floor of the cosine decay (~ learning_rate / 10, as in Chinchilla)
    warmup_iters: int = 50           # linear warmup steps from ~0 to learning_rate
    lr_decay_iters: int | None = None  # step at which the cosine reaches min_lr (None = max_iters)
    weight_decay: float = 0.1        # AdamW decoupled weight decay on >= 2-D weights only (not biases/LayerNorm)
    beta1: float = 0.9               # AdamW first-moment decay
    beta2: float = 0.95              # AdamW second-moment decay (0.95: steadier for small batches than 0.999)
    grad_clip: float = 1.0           # clip the global gradient norm to this (0 = no clipping)
    eval_interval: int = 100         # evaluate (and save ckpt.pt) every this many steps, and at the end
    eval_iters: int = 10             # validation micro-batches per evaluation (the same ones every time)
    progress: bool = True            # show a tqdm progress bar (rank 0 only)



# ----------------------------------------------------------------------------- device, precision, seeds

_NOTED: set = set()                          # notes already printed (each once per process)


def note_once(text: str) -> None:
    """Print `note: text` the first time it comes up in this process (under torchrun: on rank 0 only)."""
    if text not in _NOTED and os.environ.get("RANK", "0") == "0":
        _NOTED.add(text)
        print(f"note: {text}", flush=True)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available (and this torch has kernels for the GPU), else mps, else cpu; otherwise
    torch.device(name), which must exist here. A name torch does not know, or a GPU this torch cannot see
    or has no kernels for, is a one-line error (SystemExit)."""
    if name == "auto":
        if torch.cuda.is_available():
            missing = missing_gpu_kernels(torch.device("cuda"))
            if not missing:
                return torch.device("cuda")
            note_once(f"{missing}; running on the CPU instead")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise SystemExit(f"error: --device={name}: not a device this project runs on; use auto, cpu, cuda, "
                         f"cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise SystemExit(f"error: --device={name}: this torch ({torch.__version__}, {build}) sees no CUDA GPU; "
                         f"README's 'On a GPU' has the CUDA install line, or use --device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SystemExit(f"error: --device={name}: there are {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0")
    missing = missing_gpu_kernels(device) if device.type == "cuda" else ""
    if missing:
        raise SystemExit(f"error: --device={name}: {missing}")
    if device.type == "mps" and not _mps_available():
        raise SystemExit(f"error: --device={name}: MPS (Apple GPU) is not available here; use --device=cpu")
    return device


def missing_gpu_kernels(device: torch.device) -> str:
    """An empty string when this torch build carries kernels the CUDA GPU can run, else a sentence saying
    it does not. A GPU runs kernels built for its own major architecture at an equal or lower minor (sm_80
    on an 8.6 GPU), or PTX for an equal or lower one, compiled when loaded; newer torch also has a table of
    its own (e.g. Jetson Thor, renumbered 10.1 -> 11.0), which counts too. Recent CUDA builds of PyTorch
    leave out the GPUs before Turing (Pascal 6.x: P100, GTX 10xx; from torch 2.11 also Volta 7.0: V100),
    which then fail at their first kernel ("no kernel image is available"); its CUDA 12.6 builds for x86-64
    still carry them. A list this cannot read refuses nothing."""
    if torch.version.hip:
        return ""
    if device.index is None:                             # "cuda": under torchrun this process's own GPU
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local if local < torch.cuda.device_count() else 0)
    archs = torch.cuda.get_arch_list()                   # e.g. ["sm_75", "sm_80", ..., "sm_120"]
    matches = [re.fullmatch(r"(sm|compute)_(\d+)[a-z]?", a) for a in archs]
    if not archs or not all(matches):
        return ""                                        # nothing to go by: let torch try
    built = [(m.group(1), int(m.group(2))) for m in matches]   # ("sm", 86), ("compute", 120)
    major, minor = torch.cuda.get_device_capability(device)
    torch_table = getattr(torch.cuda, "_code_compatible_with_device", None)   # (device_cc, code_cc) -> bool
    for kind, code in built:
        arch = divmod(code, 10)                          # 86 -> (8, 6), 120 -> (12, 0)
        if (kind == "sm" and arch[0] == major and arch[1] <= minor) or (kind == "compute" and arch <= (major, minor)):
            return ""
        if torch_table is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    if torch_table(10 * major + minor, code):
                        return ""
                except Exception:                        # a private helper: its absence or change refuses nothing
                    pass
    older = (major, minor) < min(divmod(code, 10) for _, code in built)
    if older and major >= 5 and platform.machine().lower() in ("x86_64", "amd64"):
        fix = ("torch's CUDA 12.6 build has them: pip uninstall -y torch && pip install torch --index-url "
               "https://download.pytorch.org/whl/cu126")
    else:
        fix = "install a torch build that supports it (pytorch.org lists which CUDA builds cover which GPUs)"
    return (f"this torch ({torch.__version__}) has no kernels for {torch.cuda.get_device_name(device)} (compute "
            f"capability {major}.{minor}; it is built for {', '.join(archs)}); {fix}")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


DTYPES = ("auto", "float32", "bfloat16")   # the values of every stage's --dtype


def check_dtype_name(dtype: str, flag: str = "--dtype") -> None:
    """An unknown --dtype is a one-line error (SystemExit); flag: as the user typed it ("--ppo.dtype")."""
    if dtype not in DTYPES:
        raise SystemExit(f"error: {flag}={dtype}: choose one of {', '.join(DTYPES)}")


def has_bf16_hardware(device: torch.device | str) -> bool:
    """Whether a CUDA GPU computes in bf16 natively: Ampere (compute capability 8.0) and later (A100, RTX 30xx,
    L4, H100). Older GPUs (Colab's T4 7.5, V100 7.0, Kaggle's P100 6.0) only emulate bf16, slowly, and torch
    versions before the emulation refuse bf16 autocast there outright. ROCm GPUs count as having it."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(torch.device(device))[0] >= 8


def compute_dtype(device: torch.device | str, dtype: str = "auto") -> torch.dtype:
    """The precision every stage computes in (see docs/DESIGN.md, "Precision"): torch.bfloat16 means bf16
    autocast, torch.float32 none. "auto" is bf16 on a CUDA GPU with bf16 hardware and float32 everywhere
    else (an older GPU, MPS, the CPU); "bfloat16" is bf16 on such a GPU or the CPU (which is how the CPU tests
    check the GPU's precision path; CPUs without bf16 instructions emulate it, slowly). There is no float16:
    it would need loss scaling in every stage. An unknown dtype, or bfloat16 where it is not set up (MPS, a
    GPU without bf16 hardware), is a one-line error (SystemExit)."""
    check_dtype_name(dtype)
    device = torch.device(device)
    if dtype == "float32" or (dtype == "auto" and device.type != "cuda"):
        return torch.float32
    if device.type not in ("cuda", "cpu"):                          # bfloat16 asked for on MPS
        raise SystemExit(f"error: --dtype=bfloat16 on {device.type}: bf16 autocast is only set up for cuda and "
                         f"cpu here; use --dtype=auto (float32 there)")
    if device.type == "cpu" or has_bf16_hardware(device):         # bfloat16 on the CPU; auto or bfloat16 on CUDA
        return torch.bfloat16
    name, (major, minor) = torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)
    if dtype == "bfloat16":
        raise SystemExit(f"error: --dtype=bfloat16: this GPU ({name}, compute capability {major}.{minor}) has no "
                         f"bf16 hardware (8.0 and later do); use --dtype=auto, which trains in float32 here")
    note_once(f"{name} (compute capability {major}.{minor}) has no bf16 hardware, so the stages compute in "
              f"float32 here (bf16 autocast needs 8.0 or later)")
    return torch.float32


def autocast_context(device: torch.device | str, dtype: str = "auto"):
    """The context every stage's forward passes run under: bf16 autocast where compute_dtype(device, dtype)
    says bf16, otherwise a no-op context (float32). Errors as compute_dtype."""
    if compute_dtype(device, dtype) == torch.bfloat16:
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """Every global RNG state, as plain values/tensors that torch.load(weights_only=True) accepts."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of get_rng_state."""
    random.setstate(_to_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU the saving process saw; a machine (or CUDA_VISIBLE_DEVICES) with fewer GPUs
        # restores those it has (set_rng_state_all would fail with an IndexError)
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def make_generator(seed: int, *keys, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded by a stable hash of (seed, *keys) (not Python's salted hash()).

    make_generator(1337, "train", 42) gives the same stream in every process and every run. Sampling
    (torch.multinomial) needs the generator on the device of its probabilities: pass the model's device.
    """
    digest = hashlib.sha256(repr((seed,) + keys).encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def to_device(batch, device):
    """Move a tensor or (nested) tuple/list/dict of tensors to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def count_tokens(batch) -> int:
    """Tokens in a batch: the real tokens of its "attention_mask" when it is a dict that has one,
    else the number of elements of its first tensor (an (B, T) input)."""
    if isinstance(batch, torch.Tensor):
        return batch.numel()
    if isinstance(batch, dict) and isinstance(batch.get("attention_mask"), torch.Tensor):
        return int(batch["attention_mask"].sum())
    values = batch.values() if isinstance(batch, dict) else batch
    for v in values:
        n = count_tokens(v)
        if n:
            return n
    return 0


# ----------------------------------------------------------------------------- optimizer and schedule

def configure_optimizer(model: torch.nn.Module, cfg, device_type: str = "cpu") -> torch.optim.AdamW:
    """AdamW with two parameter groups: weight decay on >= 2-D tensors (matmul weights, embeddings),
    none on 1-D tensors (biases, LayerNorm gains). Uses model.configure_optimizers when the model has
    one (minigpt.GPT does, with the same rule); otherwise applies the rule here (e.g. a RewardModel)."""
    model = ckpt_io.unwrap_model(model)
    betas = (cfg.beta1, cfg.beta2)
    if hasattr(model, "configure_optimizers"):
        return model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, betas, device_type)
    params, seen = [], set()
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:  # a tied weight once
            seen.add(id(p))
            params.append(p)
    # BEGIN SOLUTION a2.optimizer_groups
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # END SOLUTION
    extra = {"fused": True} if device_type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=betas, **extra)


def lr_at(step: int, cfg) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warmup, then cosine decay to min_lr.

        step < W:          lr = lr_max * (step + 1) / W
        W <= step <= D:    lr = min_lr + 0.5 * (1 + cos(pi * (step - W) / (D - W))) * (lr_max - min_lr)
        step > D:          lr = min_lr
    with W = warmup_iters and D = lr_decay_iters (or max_iters). Example: lr_max 1e-3, min_lr 1e-4,
    W 10, D 110: step 0 -> 1e-4, step 9 -> 1e-3, step 60 -> 5.5e-4 (half-way down), step 110 -> 1e-4.
    """
    lr_max, min_lr, warmup = cfg.learning_rate, cfg.min_lr, cfg.warmup_iters
    decay = cfg.lr_decay_iters if cfg.lr_decay_iters is not None else cfg.max_iters
    # BEGIN SOLUTION a2.lr_schedule
    if step < warmup:
        return lr_max * (step + 1) / warmup
    if step > decay or decay <= warmup:
        return min_lr
    ratio = (step - warmup) / (decay - warmup)                 # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr_max - min_lr)
    # END SOLUTION


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ----------------------------------------------------------------------------- one optimizer step

class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the run stops and keeps its last good checkpoint. `step` and `loss`
    say where (for callers that word their own advice, as the pipeline does)."""

    def __init__(self, message: str, step: int | None = None, loss: float | None = None):
        super().__init__(message)
        self.step, self.loss = step, loss


def check_finite(loss: float, step: int, run_dir: str | None = None) -> None:
    """Raise NonFiniteLossError with a clear message when `loss` is NaN or +-inf."""
    if math.isfinite(loss):
        return
    where = ""
    if run_dir is not None:
        path = os.path.join(run_dir, ckpt_io.RESUME_FILE)
        saved = ckpt_io.safe_load(path)["step"] if os.path.exists(path) else None
        where = (f"; the last good checkpoint ({path}, step {saved}) is kept" if saved is not None
                 else "; no checkpoint was written yet")
    raise NonFiniteLossError(f"step {step}: loss is {loss}; stopping before the update{where}. "
                             "Try a lower --learning_rate or --grad_clip.", step=step, loss=loss)


def forward_backward(model, loss_fn: Callable, micro_batches: list, ctx=None,
                     require_sync: bool = True) -> tuple[float, dict]:
    """Accumulate gradients over micro-batches: backward(loss_i / k) for each of the k micro-batches,
    so the summed gradient equals that of the mean loss over one batch of all k (for equal-size
    micro-batches and a per-example mean loss). Returns (mean loss, mean stats) as Python floats.

    Under DDP the gradient all-reduce runs only on the last micro-batch (model.no_sync() before).
    """
    k = len(micro_batches)
    ctx = ctx if ctx is not None else nullcontext()
    total, stats_sum = 0.0, {}
    for i, batch in enumerate(micro_batches):
        last = i == k - 1
        sync = nullcontext() if (last and require_sync) or not hasattr(model, "no_sync") else model.no_sync()
        # BEGIN SOLUTION a2.train_step
        with sync:
            with ctx:
                loss, stats = loss_fn(model, batch)
            (loss / k).backward()
        total += loss.item() / k
        # END SOLUTION
        for key, v in (stats or {}).items():
            v = v.item() if isinstance(v, torch.Tensor) else v
            stats_sum[key] = stats_sum.get(key, 0.0) + float(v) / k
    return total, stats_sum


def optimizer_step(model, optimizer, grad_clip: float = 0.0) -> float:
    """Clip the gradient norm (when grad_clip > 0), step, zero the gradients. Returns the norm before clipping."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    # BEGIN SOLUTION a2.train_step
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        grads = [p.grad.detach().norm() for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(grads)) if grads else torch.tensor(0.0)
    # END SOLUTION
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


@torch.no_grad()
def evaluate(model, loss_fn: Callable, get_batch: Callable, eval_iters: int, device="cpu", ctx=None,
             dist_info: DistInfo | None = None, split: str = "val") -> dict:
    """Mean loss (and stats) over micro-batches get_batch(split, 0..eval_iters-1), in eval mode.

    Under DDP each process evaluates its slice and the means are averaged over processes.
    """
    info = dist_info or DistInfo()
    ctx = ctx if ctx is not None else nullcontext()
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    try:
        for i in range(eval_iters):
            batch = to_device(shard(get_batch(split, i), info.rank, info.world_size), device)
            with ctx:
                loss, stats = loss_fn(model, batch)
            values = {"loss": loss.item(), **{k: float(v) for k, v in (stats or {}).items()}}
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v / eval_iters
    finally:
        model.train(was_training)
    return mean_over_processes(totals, info)


# ----------------------------------------------------------------------------- checkpoints and resume

def save_training_state(run_dir: str, model, optimizer, step: int, cfg=None, extra: dict | None = None) -> str:
    """Atomically write run_dir/ckpt.pt: model and optimizer state, step, config, every RNG state."""
    raw = ckpt_io.unwrap_model(model)
    state = {"model": ckpt_io.clean_state_dict(raw), "optimizer": optimizer.state_dict(), "step": int(step),
             "rng": get_rng_state()}
    if hasattr(raw, "config"):
        state["model_config"] = asdict(raw.config)
    if cfg is not None:
        state["config"] = asdict(cfg)
        state["config_class"] = type(cfg).__name__            # which stage saved it (load_training_state checks)
    state.update(extra or {})
    return ckpt_io.save_checkpoint(run_dir, state)


class ResumeError(ValueError):
    """--resume cannot continue this run directory (no checkpoint, or one of another model shape)."""


def no_checkpoint_error(run_dir: str) -> ResumeError:
    """--resume where run_dir has no ckpt.pt (start_stage checks it first; fit and the RL loop again)."""
    return ResumeError(f"--resume: {run_dir} has no {ckpt_io.RESUME_FILE} to continue from; "
                       f"drop --resume to start a fresh run")


def check_same_stage(state: dict, cfg, run_dir: str) -> None:
    """A ResumeError when the checkpoint `state` was saved by another stage than `cfg`'s: another config
    class, unless cfg's class has every field of the saved config (it extends it: rlhf.pretrain resuming
    minigpt.train's run). Checkpoints of older versions record only the config, whose fields tell the same."""
    saved_class = state.get("config_class")
    foreign = sorted(set(state.get("config") or {}) - set(asdict(cfg)))
    if saved_class != type(cfg).__name__ and foreign:
        what = saved_class or "settings " + ", ".join(foreign[:3])
        raise ResumeError(f"{run_dir}/ckpt.pt was saved by another stage ({what}; this one is "
                          f"{type(cfg).__name__}); choose another --out_dir, or drop --resume")


def check_resume(cfg) -> None:
    """Before a stage writes anything: --resume needs a checkpoint of this stage in cfg.out_dir (a
    ResumeError otherwise; the reward model would otherwise simulate its comparisons into the directory
    first). Without --resume, an unfinished stage's checkpoint there gets a note: this run starts afresh."""
    if not getattr(cfg, "resume", False):
        if os.path.exists(os.path.join(cfg.out_dir, ckpt_io.RESUME_FILE)) and not ckpt_io.is_finished(cfg.out_dir):
            note_once(f"{cfg.out_dir} holds an unfinished run's {ckpt_io.RESUME_FILE}; this one starts afresh "
                      f"(the stage's own command with --resume would continue it)")
        return
    state = ckpt_io.load_checkpoint(cfg.out_dir, mmap=True)   # the stage loads it: only its config is read here
    if state is None:
        raise no_checkpoint_error(cfg.out_dir)
    check_same_stage(state, cfg, cfg.out_dir)


def load_training_state(run_dir: str, model, optimizer=None, restore_rng: bool = True, cfg=None) -> dict | None:
    """Load run_dir/ckpt.pt into model (and optimizer, and the RNGs). Returns the state dict or None.
    A checkpoint of another model shape is a ResumeError naming the settings that differ, and so is one that
    another stage saved (cfg: this stage's config; check_same_stage): an SFT run's checkpoint fits a
    pretraining model, and resuming it would write pretraining over the SFT model."""
    state = ckpt_io.load_checkpoint(run_dir)
    if state is None:
        return None
    if cfg is not None:
        check_same_stage(state, cfg, run_dir)
    raw = ckpt_io.unwrap_model(model)
    saved, now = state.get("model_config") or {}, asdict(raw.config) if hasattr(raw, "config") else {}
    diff = [f"{k}={saved[k]} (now {now[k]})" for k in saved if k in now and saved[k] != now[k] and k != "dropout"]
    try:
        raw.load_state_dict(state["model"])
    except RuntimeError:                       # size mismatch / missing keys: another model
        raise ResumeError(f"{run_dir}/ckpt.pt was trained with {', '.join(diff) or 'another model shape'}; "
                          f"drop --resume (or use another --out_dir) or use the same settings") from None
    if optimizer is not None and "optimizer" in state:
        # keep this device's kernels (a CUDA run's fused=True need not exist on the CPU/MPS), set before
        # loading: load_state_dict places AdamW's step counters by the fused flag it reads
        saved = state["optimizer"]
        for group, now in zip(saved["param_groups"], optimizer.param_groups):
            group.update({k: now[k] for k in ("fused", "foreach") if k in now})
        try:
            optimizer.load_state_dict(saved)
        except ValueError:                     # other parameter groups: another stage's optimizer
            raise ResumeError(f"{run_dir}/ckpt.pt holds another stage's optimizer; choose another --out_dir, "
                              f"or drop --resume") from None
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state


class StopOnInterrupt:
    """Context manager: the first Ctrl-C (SIGINT) sets `.requested` so the loop can finish its step,
    save a checkpoint and stop cleanly; a second Ctrl-C raises KeyboardInterrupt at once.
    Outside the main thread (where signal handlers cannot be installed) it does nothing."""

    def __init__(self, verbose: bool = True):
        self.requested, self.verbose, self._old = False, verbose, None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.verbose:
            print("\nCtrl-C: finishing this step, saving a checkpoint, then stopping "
                  "(press again to abort at once)", file=sys.stderr, flush=True)

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


# ----------------------------------------------------------------------------- the loop

def fit(model: torch.nn.Module, loss_fn: Callable, get_batch: Callable, cfg: LoopConfig, *,
        run_dir: str | None = None, device: torch.device | str = "cpu", dist_info: DistInfo | None = None,
        optimizer: torch.optim.Optimizer | None = None, extra_state: dict | None = None,
        on_eval: Callable | None = None, desc: str = "train") -> dict:
    """Train `model` for cfg.max_iters optimizer steps; returns the final metrics.

    loss_fn(model, batch) -> (scalar loss, dict of float stats) is called under autocast, with `model`
    wrapped in DistributedDataParallel under torchrun (so call model(...), i.e. its forward).
    get_batch(split, index) -> batch of CPU tensors (see the module docstring); the global micro-batch
    is sharded by rank here and moved to `device`.
    Each step: lr from lr_at -> grad_accum micro-batches (forward_backward) -> NaN guard -> clip -> step.
    Every eval_interval steps and at the end: validation loss (evaluate), a metrics.jsonl record,
    ckpt.pt (rank 0), loss.png. cfg.resume restores ckpt.pt from run_dir first. on_eval(model, step)
    may return extra metrics to log with each evaluation. Ctrl-C saves ckpt.pt and returns early
    with result["interrupted"] = True; a NaN/inf loss raises NonFiniteLossError.
    """
    info = dist_info or DistInfo()
    device = torch.device(device)
    run_dir = run_dir if run_dir is not None else cfg.out_dir
    is_main = info.is_main
    if is_main:
        make_dir(run_dir, "--out_dir" if run_dir == cfg.out_dir else "")
    ctx = autocast_context(device, cfg.dtype)
    raw_model = ckpt_io.unwrap_model(model)
    raw_model.to(device)
    if optimizer is None:
        optimizer = configure_optimizer(raw_model, cfg, device.type)
    logger = MetricsLogger(os.path.join(run_dir, "metrics.jsonl"), enabled=is_main)

    # ---- resume
    step = 0
    state = load_training_state(run_dir, raw_model, optimizer, cfg=cfg) if cfg.resume else None
    if state is not None:
        step = state["step"]
        logger.truncate(step)
        if is_main:
            print(f"resumed {run_dir}/ckpt.pt at step {step}")
    else:
        if cfg.resume:
            raise no_checkpoint_error(run_dir)
        logger.reset()
    if is_main and step == 0:
        ckpt_io.write_config(run_dir, cfg)

    # ---- wrap: compile, then DDP
    train_model = raw_model
    if cfg.compile:
        train_model = torch.compile(train_model)
    if info.enabled:
        train_model = DDP(train_model, device_ids=[info.local_rank] if device.type == "cuda" else None)

    def save(at_step):
        if is_main:
            save_training_state(run_dir, raw_model, optimizer, at_step, cfg, extra_state)

    def do_eval(at_step):
        metrics = evaluate(train_model, loss_fn, get_batch, cfg.eval_iters, device, ctx, info)
        if on_eval is not None:
            metrics.update(on_eval(raw_model, at_step) or {})
        logger.log({"step": at_step, "split": "val", **metrics})
        return metrics

    last_val: dict = {}
    train_seconds, tokens_seen, recent = 0.0, 0, []
    interrupted = False
    last_plot = time.time()
    bar = None
    if cfg.progress and is_main and step < cfg.max_iters:
        bar = tqdm(total=cfg.max_iters, initial=step, desc=desc, dynamic_ncols=True, leave=True)
    train_model.train()
    try:
        with StopOnInterrupt(verbose=is_main) as stop:
            while step < cfg.max_iters:
                if cfg.eval_interval > 0 and step % cfg.eval_interval == 0:
                    last_val = do_eval(step)
                    save(step)
                    if is_main and time.time() - last_plot > 30:  # refresh the PNG now and then
                        plot_metrics(logger.path, os.path.join(run_dir, "loss.png"), title=desc)
                        last_plot = time.time()
                t0 = time.perf_counter()
                lr = lr_at(step, cfg)
                set_lr(optimizer, lr)
                micro = [to_device(shard(get_batch("train", step * cfg.grad_accum + i), info.rank, info.world_size),
                                   device) for i in range(cfg.grad_accum)]
                loss, stats = forward_backward(train_model, loss_fn, micro, ctx)
                n_tok = sum(count_tokens(b) for b in micro) * info.world_size
                # every process must agree on the loss (NaN guard) and on stopping
                loss, stop_share = all_reduce_mean([loss, float(stop.requested)], info)
                check_finite(loss, step, run_dir if is_main else None)
                grad_norm = optimizer_step(train_model, optimizer, cfg.grad_clip)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)   # this process's GPU (cuda:1 without torchrun too)
                dt = time.perf_counter() - t0
                train_seconds += dt
                tokens_seen += n_tok
                recent = (recent + [loss])[-20:]
                logger.log({"step": step, "split": "train", "loss": loss, "lr": lr, "grad_norm": grad_norm,
                            "tokens": n_tok, "tokens_per_s": n_tok / max(dt, 1e-9), **stats})
                step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", val=f"{last_val.get('loss', float('nan')):.4f}",
                                    tok_s=f"{tokens_seen / max(train_seconds, 1e-9):,.0f}")
                if stop_share > 0:   # any process was asked to stop
                    interrupted = True
                    break
    except KeyboardInterrupt:  # second Ctrl-C, or one outside the step: save what we have and re-raise
        save(step)
        if bar is not None:
            bar.close()
        if is_main:
            print(f"\ninterrupted: saved {run_dir}/ckpt.pt at step {step}; continue with --resume", file=sys.stderr)
        raise
    if bar is not None:
        bar.close()

    if interrupted:
        save(step)
        if is_main:
            print(f"interrupted: saved {run_dir}/ckpt.pt at step {step}; continue with --resume", flush=True)
    else:
        last_val = do_eval(step)
        save(step)
    if is_main:
        plot_metrics(logger.path, os.path.join(run_dir, "loss.png"), title=desc)
    return {"step": step, "interrupted": interrupted,
            "train_loss": float(np.mean(recent)) if recent else None,
            "val_loss": last_val.get("loss"), "val": last_val,
            "tokens_per_s": tokens_seen / train_seconds if train_seconds > 0 else None,
            "train_seconds": train_seconds, "tokens": tokens_seen,
            "loss_curve": os.path.join(run_dir, "loss.png")}


def start_stage(cfg: LoopConfig, make_run_dir: bool = True):
    """Every stage's start: pick the device (and check --dtype), join the process group (under torchrun),
    and create the run directory on rank 0 (then wait for it). Returns (device, dist_info, run_dir); the
    caller must call teardown_distributed() when done (a try/finally)."""
    device = pick_device(cfg.device)
    dtype = getattr(cfg, "dtype", "auto")
    check_dtype_name(dtype)                                       # before any work (and any process group)
    check_resume(cfg)
    info = setup_distributed(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    autocast_context(device, dtype)          # bfloat16 where it is not set up fails here, on this process's GPU
    if info.enabled and info.is_main:    # under torchrun: say how many processes share the work
        print(f"distributed: {info.world_size} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), "
              f"rank 0 writes {cfg.out_dir}", flush=True)
    if make_run_dir:
        if info.is_main:
            make_dir(cfg.out_dir, "--out_dir")
        barrier(info)
    return device, info, cfg.out_dir


def exercise_not_written(e: NotImplementedError) -> BaseException:
    """A course exercise still blank in a student's copy ("exercise a3.labeler — see ...") as a one-line
    error to raise; any other NotImplementedError is returned as it is (a real bug: keep its traceback)."""
    if not str(e).startswith("exercise "):
        return e
    return SystemExit(f"error: {e}: not written yet (`python tools/grade.py` shows which exercises pass)")


def out_of_memory_error(e: BaseException, step: tuple[str, str] | None, where: str = "", first: str = "",
                        smaller: str = "model") -> SystemExit:
    """A GPU out-of-memory error (torch.OutOfMemoryError) as a one-line error to raise: what torch said
    (oom_account), then `step` ((flags, why), e.g. smaller_step(cfg)) to run again with, after `first`
    (e.g. "delete DIR and "); without a step, a GPU with more memory or a smaller `smaller`. `where`: e.g.
    " in stage ppo"."""
    fix = (f"{first}run again with {step[0]} ({step[1]}), or on a GPU with more memory" if step else
           f"use a GPU with more memory or a smaller {smaller}")
    return SystemExit(f"error: out of GPU memory{where} ({oom_account(e)}); {fix}")


def oom_account(e: BaseException) -> str:
    """torch's out-of-memory message on one line, up to how much memory is free."""
    said = " ".join(str(e).split())
    end = said.find(" is free.")
    return said[:end + len(" is free.")] if end >= 0 else said[:200]


def smaller_step(cfg, flag: str = "--") -> tuple[str, str] | None:
    """(flags, why): the settings of a stage's config that make its training step need less memory, spelled
    with `flag` ("--" for a stage's own command, "--ppo." in the pipeline's). PPO's and GRPO's
    micro_batch_size (the same update in more pieces), else half the batch_size with twice the grad_accum
    (as many rows per optimizer step). None when no setting would: one row per micro-batch already, no
    such settings, or a batch that does not halve into whole rows for every process (torchrun splits it)."""
    micro = getattr(cfg, "micro_batch_size", None)
    if micro is not None:
        return (f"{flag}micro_batch_size={micro // 2}", f"now {micro}: the same update in more pieces") \
            if micro > 1 else None
    b, g = getattr(cfg, "batch_size", None), getattr(cfg, "grad_accum", None)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if b is None or g is None or b % 2 or (b // 2) % processes:
        return None
    return (f"{flag}batch_size={b // 2} {flag}grad_accum={2 * g}",
            f"now {b} and {g}: half the rows per micro-batch, as many per optimizer step")


def compile_failed(e: BaseException) -> bool:
    """Whether `e` comes from torch.compile's machinery (TorchDynamo, or Inductor: e.g. no working C++
    compiler, or a GPU too old for Triton) rather than from the model's own code."""
    return any(c.__module__.startswith(("torch._dynamo", "torch._inductor")) for c in type(e).__mro__)


def compile_error(e: BaseException, flag: str = "--compile=True") -> SystemExit:
    """A torch.compile failure as a one-line error to raise: the first line of what went wrong (the backend's
    own exception, where torch wraps one), and the way round it."""
    inner = getattr(e, "inner_exception", None)            # BackendCompilerFailed wraps the backend's error
    text = f"{type(inner).__name__}: {inner}" if inner is not None else str(e)
    said = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
    return SystemExit(f"error: torch.compile failed on this machine ({said[:200]}); run again without {flag} "
                      f"(the same training, only slower)")


def run_entry_point(train_fn, cfg, errors: tuple = ()):
    """What every stage's main() does with its train function: a NaN loss (or one of `errors`, e.g. bad data),
    running out of GPU memory or a torch.compile failure (--compile=True) becomes a one-line `error: ...` and
    exit status 1; Ctrl-C (ckpt.pt already saved) exits with 130."""
    try:
        return train_fn(cfg)
    except (NonFiniteLossError, ResumeError, ckpt_io.CheckpointError, *errors) as e:
        raise SystemExit(f"error: {e}") from None
    except torch.cuda.OutOfMemoryError as e:
        raise out_of_memory_error(e, smaller_step(cfg)) from None
    except NotImplementedError as e:
        raise exercise_not_written(e) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as e:                    # (after NotImplementedError: a blank exercise is an Exception too)
        if getattr(cfg, "compile", False) and compile_failed(e):
            raise compile_error(e) from None
        raise
