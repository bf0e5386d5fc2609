"""Peak memory of a pretraining step, estimated on any machine (no GPU needed): will a preset fit my GPU?

    python -m bench.memory --preset gpt2       # the pipeline preset's pretraining steps; seconds, any CPU
    python -m bench.memory --n_layer=24 --n_head=16 --n_embd=1024 --block_size=512 --vocab_size=8192 \
        --batch_size=64                        # any GPT shape and micro-batch
    python -m bench.memory --preset gpt2 --device=cuda   # on a GPU: the real step, estimate next to measurement

The step is the one `fit` runs: forward with the loss, backward, AdamW step, done twice so the optimizer's
state exists. It runs on fake tensors (torch's FakeTensorMode: shapes and dtypes without data, so a
300M-parameter model "trains" in seconds on a laptop), and `LiveBytes`, a TorchDispatchMode, adds up the
bytes of every tensor storage alive at each moment. What it counts: parameters, gradients, AdamW state,
activations kept for backward, temporaries. What it leaves out: the CUDA context (a few hundred MB that
torch.cuda does not count either), cuBLAS workspaces and the caching allocator's rounding and
fragmentation, so a GPU needs somewhat more than it prints. A GPU without bf16 hardware (T4, V100, P100)
trains in float32 (docs/DESIGN.md, "Precision"): read the float32 column there.

It estimates the pretraining steps, which train on a preset's longest sequences (block_size). SFT, the reward
model, PPO and DPO train the same model on prompts and answers of tens of tokens but keep more models
resident (PPO: policy, value, reference and reward model); those it does not estimate. On a GPU the pipeline
measures every stage's real peak (torch.cuda.max_memory_allocated), in report.md. Halving the micro-batch
with `--pretrain.batch_size=B/2 --pretrain.grad_accum=2` halves the activations and keeps the rows per step.
"""

import argparse
import weakref

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from minigpt.config import GPTConfig
from minigpt.configurator import CommandParser, bounded, utf8_console
from minigpt.model import GPT
from minigpt.train import model_config_from
from minigpt.trainer import autocast_context, has_bf16_hardware, pick_device
from rlhf.pipeline import PIPELINE_PRESETS, PipelineConfig, build_stage_configs

GIB = 2 ** 30


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every tensor storage an op returns, from the first time it is seen until it is
    freed: `now` is what is alive, `peak` the most that ever was. Storages made before the mode count from
    their first use (or `add`); a storage that grows in place (resize_) keeps its first size."""

    def __init__(self):
        super().__init__()
        self.now = self.peak = 0
        self.alive: set[int] = set()

    def add(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)          # one Python object per storage while it lives (views share it)
        if key in self.alive:
            return
        n = storage.nbytes()
        self.alive.add(key)
        self.now += n
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self._free, key, n)

    def _free(self, key: int, n: int) -> None:
        self.alive.discard(key)
        self.now -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.add(t)
        return out


def train_steps(config: GPTConfig, batch_size: int, device: str, dtype: str, steps: int = 2) -> tuple:
    """(model, optimizer) after `steps` pretraining steps on random tokens (batch_size, block_size)."""
    model = GPT(config)
    if torch.device(device).type != "cpu":
        model = model.to(device)          # (not on fake CPU tensors: .to() cannot swap the counted ones)
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95),
                                     device_type=torch.device(device).type)
    for _ in range(steps):
        idx = torch.randint(0, config.vocab_size, (batch_size, config.block_size), device=device)  # (B, T)
        with autocast_context(device, dtype):
            _, loss = model(idx, targets=idx)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, opt


def estimate(config: GPTConfig, batch_size: int, dtype: str = "float32") -> float:
    """Estimated peak bytes of a pretraining step (see the module docstring), on fake tensors."""
    counter = LiveBytes()
    with FakeTensorMode(), counter:
        train_steps(config, batch_size, "cpu", dtype)      # the CPU's bf16 autocast stands in for CUDA's
    return counter.peak


def measure_cuda(config: GPTConfig, batch_size: int, device: str, dtype: str) -> float:
    """The same steps really run on a CUDA device: torch.cuda.max_memory_allocated, in bytes."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    model, opt = train_steps(config, batch_size, device, dtype)
    peak = torch.cuda.max_memory_allocated(device) - before
    del model, opt
    torch.cuda.empty_cache()
    return peak


def preset_steps(preset: str) -> list[tuple[str, GPTConfig, int]]:
    """[(stage, model config, micro-batch rows)] of a pipeline preset's pretraining stages (with the
    headline's larger model where the preset trains one)."""
    scfg = build_stage_configs(PipelineConfig(out="runs/_memory"), preset)
    headline = PIPELINE_PRESETS[preset]["pipeline"].get("headline", False)
    return [(s, model_config_from(scfg[s], scfg[s].vocab_size), scfg[s].batch_size)
            for s in (("pretrain", "pretrain_large") if headline else ("pretrain",))]


# the shape flags: (default, what it is); GPT-2 small's shape at the gpt2 preset's vocabulary and micro-batch
SHAPE = {"n_layer": (12, "transformer blocks"), "n_head": (12, "attention heads"), "n_embd": (768, "residual width"),
         "block_size": (512, "training sequence length"), "vocab_size": (8192, "vocabulary size"),
         "batch_size": (64, "rows per micro-batch")}


def main(argv=None):
    p = CommandParser(prog="python -m bench.memory", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="", help="a pipeline preset (tiny, small, default, headline, gpu, gpt2): "
                   "its pretraining steps; otherwise the shape below")
    for k, (default, what) in SHAPE.items():        # None when not given: refused beside --preset
        p.add_argument(f"--{k}", type=bounded(int, ">= 1"), default=None, help=f"{what} (default {default})")
    p.add_argument("--device", default="cpu", help="cpu: estimate only; cuda: also run the steps and measure")
    args = p.parse_args(argv)
    if args.preset:
        if args.preset not in PIPELINE_PRESETS:
            raise SystemExit(f"error: --preset={args.preset}: choose one of {', '.join(PIPELINE_PRESETS)}")
        shape = [f"--{k}" for k in SHAPE if getattr(args, k) is not None]
        if shape:                                      # they were ignored, silently
            raise SystemExit(f"error: {', '.join(shape)} with --preset: a preset sets the shapes; give one or the "
                             f"other")
        steps = preset_steps(args.preset)
    else:
        for k, (default, _) in SHAPE.items():
            setattr(args, k, default if getattr(args, k) is None else getattr(args, k))
        try:
            config = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                               block_size=args.block_size, vocab_size=args.vocab_size)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        steps = [("pretraining", config, args.batch_size)]
    device = str(pick_device(args.device))              # an unknown or unusable device: one line
    on_cuda = device.startswith("cuda")
    head = f"{'step':<16} {'model':<22} {'params':>8} {'micro-batch':>12} {'float32':>9} {'bf16':>9}"
    print(head + ("   measured on " + torch.cuda.get_device_name(device) if on_cuda else ""))
    for name, config, batch in steps:
        with FakeTensorMode():
            n_params = sum(p.numel() for p in GPT(config).parameters())
        est = {dt: estimate(config, batch, dt) / GIB for dt in ("float32", "bfloat16")}
        shape = f"{config.n_layer}x{config.n_embd}, V {config.vocab_size}"
        line = (f"{name:<16} {shape:<22} {n_params / 1e6:>7.1f}M {f'{batch}x{config.block_size}':>12} "
                f"{est['float32']:>7.2f} G {est['bfloat16']:>7.2f} G")
        if on_cuda:
            real = measure_cuda(config, batch, device, "float32") / GIB
            line += f"   {real:.2f} G"
            if has_bf16_hardware(device):
                line += f" / {measure_cuda(config, batch, device, 'bfloat16') / GIB:.2f} G"
        print(line)
    print("GiB of tensors (parameters, gradients, AdamW state, activations); a GPU also needs its CUDA context "
          "and allocator slack on top. GPUs without bf16 hardware (T4, V100, P100) train in float32.")


if __name__ == "__main__":
    utf8_console()
    main()
