"""Stage 1 of InstructGPT: pretraining a GPT on plain text (the loop itself is minigpt/trainer.py).

Pretraining minimises the next-token cross-entropy over a text corpus (Radford et al. 2019, eq. 1):

    L(theta) = - 1/N * sum_t log p_theta(x_t | x_<t)          perplexity = exp(L)

Run it on any UTF-8 text file (the instruction world's corpus: python -m rlhf.pretrain, which calls
`train_pretrain` with that text; minigpt itself knows nothing of the world):

    python -m minigpt.train --data=my.txt --max_iters=2000 --out_dir=runs/default/mine
    python -m minigpt.train --preset tiny --data=my.txt --out_dir=/tmp/tiny   # a smoke run of seconds
    python -m minigpt.train --data=my.txt --out_dir=runs/default/mine --resume         # continue an interrupted run
    torchrun --standalone --nproc_per_node=2 -m minigpt.train --preset tiny --data=my.txt   # data parallel (DDP)
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

from minigpt import checkpoint as ckpt_io
from minigpt.config import GPTConfig
from minigpt.configurator import parse_config, utf8_console
from minigpt.distributed import DistInfo, barrier, teardown_distributed
from minigpt.files import read_text_file
from minigpt.generate import generate
from minigpt.model import GPT
from minigpt.tokenizer import train_bpe
from minigpt.trainer import LoopConfig, fit, make_generator, run_entry_point, seed_everything, start_stage


@dataclass
class TrainConfig(LoopConfig):
    """Pretraining: next-token prediction on a plain-text corpus (stage 1)."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"eval_iters": ">= 1", "block_size": ">= 2", "n_layer": ">= 1", "n_head": ">= 1", "n_embd": ">= 1",
              "dropout": "in [0, 1)", "num_samples": ">= 1", "sample_tokens": ">= 1", "sample_temperature": ">= 0",
              "vocab_size": ">= 262"}    # 256 bytes + 6 special tokens
    data: str = ""                   # UTF-8 text file to train on (rlhf.pretrain supplies the world's corpus instead)
    val_fraction: float = 0.1        # last fraction of the token stream held out for validation
    vocab_size: int = 1024           # BPE vocabulary (256 bytes + merges + specials) when a tokenizer is trained
    tokenizer_chars: int = 200_000   # characters of the text the BPE trainer sees (it is pure Python: keep it small)
    block_size: int = 128            # context length in tokens (the model's position table has this many rows)
    n_layer: int = 4                 # transformer blocks
    n_head: int = 4                  # attention heads per block
    n_embd: int = 128                # residual stream width
    dropout: float = 0.0             # dropout probability (0 = off; our models are small and data plentiful)
    bias: bool = True                # biases in Linear layers and LayerNorms, as in GPT-2
    num_samples: int = 3             # samples printed (and saved in summary.json) at the end
    sample_tokens: int = 64          # new tokens per sample
    sample_temperature: float = 0.8  # sampling temperature of those samples (0 = greedy)


PRESETS: dict[str, dict] = {
    # CI smoke run: a few seconds.
    "tiny": dict(out_dir="runs/tiny/pretrain", max_iters=30, batch_size=8, warmup_iters=5, eval_interval=15,
                 eval_iters=2, tokenizer_chars=20_000, vocab_size=300, block_size=64,
                 n_layer=2, n_head=2, n_embd=32, num_samples=1, sample_tokens=16),
    # The course's student-scale run: a 2-layer, 64-wide model that still learns the world in ~40 s.
    "small": dict(out_dir="runs/small/pretrain", max_iters=400, batch_size=32, warmup_iters=30, eval_interval=100,
                  eval_iters=4, tokenizer_chars=100_000, vocab_size=512, block_size=96,
                  n_layer=2, n_head=2, n_embd=64, learning_rate=3e-3, min_lr=3e-4),
    # The CPU default: pretraining + SFT in 3-7 minutes on 2 cores (depending on the CPU).
    "default": dict(),
}


# ----------------------------------------------------------------------------- pretraining

class LMBatches:
    """Random windows of a token stream: get_batch(split, index) -> (x, y), both (batch_size, block_size).

    y is x shifted by one token (the next-token targets). Window starts come from
    make_generator(seed, split, index), so batch `index` is the same in every run and process.
    """

    def __init__(self, train_ids: torch.Tensor, val_ids: torch.Tensor, block_size: int, batch_size: int,
                 seed: int = 0):
        for name, ids in (("train", train_ids), ("val", val_ids)):
            if len(ids) < block_size + 2:
                raise ValueError(f"{name} split has {len(ids)} tokens, fewer than block_size + 2 = "
                                 f"{block_size + 2}: use more data or a smaller --block_size")
        self.data = {"train": train_ids, "val": val_ids}
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed

    def __call__(self, split: str, index: int):
        data, T = self.data[split], self.block_size
        g = make_generator(self.seed, split, index)
        starts = torch.randint(len(data) - T - 1, (self.batch_size,), generator=g)      # (B,)
        offsets = torch.arange(T)                                                       # (T,)
        x = data[starts[:, None] + offsets]                                             # (B, T)
        y = data[starts[:, None] + offsets + 1]                                         # (B, T)
        return x.long(), y.long()


def lm_loss(model, batch):
    """Next-token cross-entropy of an (x, y) batch: loss_fn for fit."""
    x, y = batch
    _, loss = model(x, y)
    return loss, {}


def load_text(cfg: TrainConfig) -> str:
    """The training text: cfg.data's file (UTF-8)."""
    if not cfg.data:
        raise SystemExit("error: no training text: pass --data=FILE (a UTF-8 text file); "
                         "python -m rlhf.pretrain trains on the instruction world's corpus")
    return read_text_file(cfg.data, "--data")


def get_tokenizer(cfg: TrainConfig, text: str, run_dir: str, info: DistInfo):
    """The run's tokenizer: run_dir/tokenizer.bpe if present, else BPE trained on the text's start
    (by rank 0, then read back by the others)."""
    path = os.path.join(run_dir, ckpt_io.TOKENIZER_FILE)
    if not os.path.exists(path) and info.is_main:
        t0 = time.perf_counter()
        tok = train_bpe(text[:cfg.tokenizer_chars], cfg.vocab_size)
        ckpt_io.save_tokenizer(run_dir, tok)
        print(f"trained a BPE tokenizer of {tok.vocab_size} tokens on {min(len(text), cfg.tokenizer_chars):,} "
              f"characters in {time.perf_counter() - t0:.1f}s -> {path}")
    barrier(info)
    return ckpt_io.load_tokenizer(run_dir)


def model_config_from(cfg: TrainConfig, vocab_size: int) -> GPTConfig:
    """The GPTConfig of a pretraining config; a shape GPTConfig refuses (n_embd not divisible by n_head) is a
    one-line error (SystemExit)."""
    try:
        return GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                         n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def sample_text(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float,
                seed: int = 0, device="cpu") -> list[str]:
    """Continue each prompt (seeded sampling, or greedy at temperature 0); returns prompt + continuation."""
    ids = [tokenizer.encode(p) or [0] for p in prompts]
    room = model.config.block_size - max_new_tokens
    ids = [x[-room:] if room > 0 else x[-1:] for x in ids]
    g = torch.Generator(device=model.device).manual_seed(seed)   # on the model's device, as multinomial needs
    out = generate(model, ids, max_new_tokens, temperature=temperature, top_k=50 if temperature > 0 else None,
                   generator=g)
    return [p + tokenizer.decode(r[m.bool()].tolist()) for p, r, m in
            zip(prompts, out.response, out.response_mask)]


def train_pretrain(cfg: TrainConfig, text: str | None = None) -> dict:
    """Stage 1: tokenizer (if needed) -> token stream -> GPT -> fit -> model.pt + summary.json.
    `text` is the corpus (None: read cfg.data)."""
    t_start = time.time()
    done = ckpt_io.read_summary(cfg.out_dir) if cfg.resume and ckpt_io.is_finished(cfg.out_dir) else None
    if done is not None and done.get("steps") == cfg.max_iters:      # nothing left to train: keep the summary
        print(f"{cfg.out_dir} finished all {cfg.max_iters} steps already (summary.json); nothing to resume")
        return done
    text = load_text(cfg) if text is None else text              # bad input fails before anything is written
    if len(text) < 2 * (cfg.block_size + 2):                      # a token is at least one character
        raise SystemExit(f"error: {cfg.data or 'the training text'}: {len(text)} characters, too few for a train "
                         f"and a val window of block_size={cfg.block_size} tokens; use more text or a smaller "
                         f"--block_size")
    device, info, run_dir = start_stage(cfg)
    try:
        seed_everything(cfg.seed)
        tok = get_tokenizer(cfg, text, run_dir, info)
        t0 = time.perf_counter()
        ids = torch.tensor(tok.encode(text), dtype=torch.int32)
        n_val = max(int(len(ids) * cfg.val_fraction), cfg.block_size + 2)
        train_ids, val_ids = ids[:-n_val], ids[-n_val:]
        if info.is_main:
            print(f"data: {len(text):,} characters -> {len(ids):,} tokens ({len(text) / len(ids):.2f} chars/token, "
                  f"encoded in {time.perf_counter() - t0:.1f}s); train {len(train_ids):,}, val {len(val_ids):,}")
        try:
            batches = LMBatches(train_ids, val_ids, cfg.block_size, cfg.batch_size, seed=cfg.seed)
        except ValueError as e:                    # too little text for one window of block_size tokens
            raise SystemExit(f"error: {cfg.data or 'the training text'}: {e}") from None

        seed_everything(cfg.seed)  # the same init in every process and run
        model = GPT(model_config_from(cfg, tok.vocab_size))
        if info.is_main:
            with torch.no_grad():
                x, y = batches("val", 0)
                init_loss = model(x[:4], y[:4])[1].item()
            print(f"model: {model.num_params() / 1e6:.2f}M non-embedding parameters; loss at init {init_loss:.3f} "
                  f"(ln V = {math.log(tok.vocab_size):.3f}); device {device}")
        torch.manual_seed(cfg.seed + info.rank)  # dropout streams differ between processes

        result = fit(model, lm_loss, batches, cfg, run_dir=run_dir, device=device, dist_info=info,
                     desc="pretrain")
        summary = {}
        if info.is_main and not result["interrupted"]:
            model.eval()
            starts = [line[:24] for line in text[-n_val * 3:].splitlines() if len(line) > 24][:cfg.num_samples]
            samples = sample_text(model, tok, starts, cfg.sample_tokens, cfg.sample_temperature, cfg.seed, device)
            print("\nsamples:")
            for s in samples:
                print("  " + repr(s))
            val_loss = result["val_loss"]
            summary = {"stage": "pretrain", "val_loss": val_loss,
                       "val_ppl": math.exp(val_loss) if val_loss is not None and val_loss < 50 else None,
                       "train_loss": result["train_loss"], "steps": result["step"],
                       "tokens_per_s": result["tokens_per_s"], "train_seconds": result["train_seconds"],
                       "seconds": time.time() - t_start, "tokens_trained": result["tokens"],
                       "n_params": model.num_params(), "vocab_size": tok.vocab_size, "device": str(device),
                       "world_size": info.world_size, "loss_curve": result["loss_curve"], "samples": samples}
            ckpt_io.save_model(run_dir, model, tok, extra={"stage": "pretrain", "step": result["step"]})
            ckpt_io.write_summary(run_dir, summary)
            shown = (f"val loss {val_loss:.4f}" + (f" (perplexity {summary['val_ppl']:.2f})" if summary["val_ppl"] else "")
                     if val_loss is not None else "no val loss (no steps)")
            print(f"\npretrain: {shown}, {summary['tokens_per_s'] or 0:,.0f} tokens/s, {summary['seconds']:.1f}s "
                  f"-> {run_dir}")
        barrier(info)
        if result["interrupted"]:  # Ctrl-C: ckpt.pt is saved; callers (the pipeline) must not go on
            raise KeyboardInterrupt
        return summary
    finally:
        teardown_distributed()


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(TrainConfig, argv, PRESETS, prog="python -m minigpt.train")
    return run_entry_point(train_pretrain, cfg)


if __name__ == "__main__":
    utf8_console()
    main()
