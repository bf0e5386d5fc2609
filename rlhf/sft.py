"""Stage 2 of InstructGPT: supervised fine-tuning (SFT) of the pretrained model on demonstrations.

Labelers write the response they want for a prompt; the policy is trained to imitate it with the
next-token loss restricted to the response (Ouyang et al. 2022, §3.5 "Supervised fine-tuning"):

    L_SFT(theta) = - sum_{b,t} m[b,t] * log pi_theta(x[b,t+1] | x[b,<=t]) / sum_{b,t} m[b,t]

where m = 1 exactly on assistant content tokens and their <|end|> (rlhf.data.render), so the prompt
is context, never a target, and the model learns to stop. Padding has m = 0 and is never attended to.

Run it (after `python -m rlhf.pretrain --preset default`, which writes runs/default/pretrain):

    python -m rlhf.sft --preset default                     # 1-2.5 min on 2 CPU cores
    python -m rlhf.sft --preset tiny --init_from=runs/tiny/pretrain --out_dir=runs/tiny/sft
    python -m rlhf.sft --data=demos.jsonl                   # your own demonstrations (messages or Alpaca JSONL)
    torchrun --standalone --nproc_per_node=2 -m rlhf.sft    # data parallel

The evaluation reports the validation loss on held-out demonstrations and, when the caller hands in
a gold evaluator (rlhf.gold.GoldEvaluator: `main()` below and the pipeline do), the gold-oracle score
of greedy responses to held-out *val* prompts, per task family, for the base (pretrained) model and
for the SFT model: the first alignment number of the pipeline. The training code never sees the oracle.

Simplifications relative to InstructGPT:
  1. Demonstrations come from simulated labelers (rlhf.world.labelers): few, varied and imperfect
     (verbose, off-format, occasionally wrong) on purpose, so the SFT model leaves headroom for RLHF.
  2. We train for a fixed number of steps and keep the last checkpoint; InstructGPT trained 16 epochs
     and selected the checkpoint by reward-model score on a validation set.
  3. Under DDP each process averages the loss over its own supervised tokens, so N processes equal
     one process exactly only when every row has the same number of supervised tokens.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Literal

import torch

from minigpt import checkpoint as ckpt_io
from minigpt.configurator import parse_config, utf8_console
from minigpt.distributed import barrier, teardown_distributed
from minigpt.trainer import LoopConfig, fit, make_generator, run_entry_point, seed_everything, start_stage
from rlhf.data import DataError, SFTDataset, collate_sft, load_demonstrations, pad_token_id, write_jsonl
from rlhf.losses import sft_loss
from rlhf.world import make_demonstrations


@dataclass
class SFTConfig(LoopConfig):
    """Supervised fine-tuning on demonstrations (stage 2)."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"n_demos": ">= 1", "n_val_demos": ">= 1", "eval_iters": ">= 1", "eval_batch_size": ">= 1"}
    out_dir: str = "runs/default/sft"  # run directory of this stage
    init_from: str = "runs/default/pretrain"  # run directory of the pretrained model (its model.pt + tokenizer.bpe)
    data: str = ""                      # demonstrations JSONL (messages or Alpaca); empty = the world's labelers
    n_demos: int = 6000                 # world demonstrations to train on (InstructGPT: ~13k). Default preset's
                                        # tuning: 1500 left the base's knowledge unused (val gold 0.295 vs 0.447)
    n_val_demos: int = 200              # held-out demonstrations (val-split prompts) for the validation loss
    demo_seed: int = 0                  # seed of the world's demonstrations
    val_fraction: float = 0.1           # with --data: fraction of the file held out for the validation loss
    train_on: Literal["all", "last"] = "all"  # which assistant turns carry loss: all | last
    n_eval: int = 200                   # held-out val prompts for the gold score (0 = skip the gold evaluation)
    eval_seed: int = 0                  # which val prompts
    max_new_tokens: int = 32            # response budget of the gold evaluation (no stop = cut here)
    eval_batch_size: int = 100          # prompts per generation batch
    max_iters: int = 900                # optimizer steps. Default preset's tuning (6000 demos, ~5 epochs): val
                                        # gold 0.33 at 300 steps, 0.415 at 600, 0.447 at 900; the base reverses all
                                        # 58 words of the world, SFT's gold on "reverse" prompts went 0.13 -> 0.67
    batch_size: int = 32                # conversations per micro-batch (all processes together)
    learning_rate: float = 1e-3         # peak learning rate
    min_lr: float = 1e-4                # end of the cosine decay
    warmup_iters: int = 20              # linear warmup steps
    weight_decay: float = 0.0           # no decay: a short fine-tune should not shrink pretrained weights
    eval_interval: int = 50             # validation loss every this many steps
    eval_iters: int = 7                 # validation micro-batches (eval_iters x batch_size ~ n_val_demos: all of them)


PRESETS: dict[str, dict] = {
    "tiny": dict(out_dir="runs/tiny/sft", init_from="runs/tiny/pretrain", n_demos=64, n_val_demos=16,
                 n_eval=16, max_new_tokens=12, max_iters=10, batch_size=8, warmup_iters=2, eval_interval=5,
                 eval_iters=2, eval_batch_size=16),
    # The course's student-scale run (python -m rlhf.pipeline --preset small): seconds on 2 cores.
    "small": dict(out_dir="runs/small/sft", init_from="runs/small/pretrain", n_demos=3000, n_val_demos=100,
                  n_eval=100, max_iters=300, warmup_iters=20, eval_interval=100, eval_iters=4),
    "default": dict(),
}


# ----------------------------------------------------------------------------- data

class SFTBatches:
    """get_batch(split, index) -> a right-padded batch dict (rlhf.data.collate_sft):
    idx (B, T), targets (B, T) with -1 off the response, loss_mask (B, T) float, attention_mask (B, T).

    Train: epoch by epoch through a permutation seeded by (seed, epoch), so micro-batch `index` is a
    pure function of its number (exact resume, identical on every DDP process). Val: consecutive rows.
    """

    def __init__(self, train_examples: list, val_examples: list, batch_size: int, pad_id: int, seed: int = 0):
        if not train_examples:
            raise ValueError("no training examples (every demonstration was dropped: too long for block_size?)")
        self.examples = {"train": train_examples, "val": val_examples or train_examples}
        self.batch_size, self.pad_id, self.seed = batch_size, pad_id, seed

    @lru_cache(maxsize=4)
    def _perm(self, epoch: int) -> list[int]:
        n = len(self.examples["train"])
        return torch.randperm(n, generator=make_generator(self.seed, "sft-epoch", epoch)).tolist()

    def __call__(self, split: str, index: int):
        exs, B = self.examples[split], self.batch_size
        positions = range(index * B, (index + 1) * B)
        if split == "train":
            rows = [self._perm(p // len(exs))[p % len(exs)] for p in positions]
        else:
            rows = [p % len(exs) for p in positions]
        return collate_sft([exs[i] for i in rows], self.pad_id)


def sft_loss_fn(model, batch):
    """loss_fn for minigpt.trainer.fit: masked next-token loss on the response tokens only."""
    logits, _ = model(batch["idx"], attention_mask=batch["attention_mask"])   # (B, T, V)
    loss = sft_loss(logits, batch["targets"], batch["loss_mask"])
    return loss, {"response_tokens": batch["loss_mask"].sum().item()}


def load_sft_data(cfg: SFTConfig) -> tuple[list, list]:
    """(train conversations, val conversations): from cfg.data, or from the world's labelers
    (train-split prompts for training, val-split prompts for the validation loss)."""
    if cfg.data:
        if not os.path.exists(cfg.data):
            raise SystemExit(f"error: --data={cfg.data}: no such file")
        try:
            convs = load_demonstrations(cfg.data)
        except DataError as e:
            raise SystemExit(f"error: {e}") from None
        order = list(range(len(convs)))
        random.Random(cfg.demo_seed).shuffle(order)
        n_val = int(round(len(convs) * cfg.val_fraction)) if len(convs) > 1 else 0
        val = [convs[i] for i in order[:n_val]]
        train = [convs[i] for i in order[n_val:]]
        return train, val
    train = make_demonstrations(cfg.n_demos, seed=cfg.demo_seed, split="train", progress=cfg.progress)
    val = make_demonstrations(cfg.n_val_demos, seed=cfg.demo_seed, split="val",
                              progress=cfg.progress) if cfg.n_val_demos > 0 else []
    return train, val


def format_gold_table(base: dict, sft: dict) -> str:
    """A small text table: gold score per family, base vs SFT."""
    lines = [f"{'family':<12} {'n':>4} {'base':>6} {'sft':>6}"]
    counts = Counter(r["family"] for r in sft["rows"])
    for fam in sft["per_family"]:
        lines.append(f"{fam:<12} {counts[fam]:>4} {base['per_family'].get(fam, float('nan')):>6.3f} "
                     f"{sft['per_family'][fam]:>6.3f}")
    lines.append(f"{'overall':<12} {sft['n']:>4} {base['gold']:>6.3f} {sft['gold']:>6.3f}")
    lines.append(f"{'stop rate':<12} {'':>4} {base['stop_rate']:>6.3f} {sft['stop_rate']:>6.3f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the stage

def train_sft(cfg: SFTConfig, evaluator: Callable | None = None) -> dict:
    """Stage 2: load the pretrained run -> demonstrations -> fit with the masked loss -> gold evaluation
    of base and SFT (when the caller hands in an `evaluator`, e.g. rlhf.gold.GoldEvaluator: a callable
    (model, tokenizer) -> {"gold", "per_family", "per_h", "stop_rate", "n", "rows"}) -> run_dir/model.pt,
    tokenizer.bpe, summary.json. Returns the summary."""
    t_start = time.time()
    device, info, run_dir = start_stage(cfg, make_run_dir=False)
    try:
        if not os.path.exists(os.path.join(cfg.init_from, ckpt_io.MODEL_FILE)):
            raise SystemExit(f"error: --init_from={cfg.init_from}: no {ckpt_io.MODEL_FILE}; "
                             "run `python -m rlhf.pretrain` (with the same --preset) first, "
                             "or point --init_from at a pretrained run")
        seed_everything(cfg.seed)
        model, tok = ckpt_io.load_model(cfg.init_from, device=device)
        block = model.config.block_size

        train_convs, val_convs = load_sft_data(cfg)
        train_ds = SFTDataset(train_convs, tok, max_len=block, train_on=cfg.train_on)
        val_ds = SFTDataset(val_convs, tok, max_len=block, train_on=cfg.train_on) if val_convs else None
        val_examples = val_ds.examples if val_ds is not None else []
        batches = SFTBatches(train_ds.examples, val_examples, cfg.batch_size, pad_token_id(tok), seed=cfg.seed)
        if info.is_main:
            n_resp = sum(int(e.loss_mask.sum()) for e in train_ds.examples)
            n_all = sum(len(e.idx) for e in train_ds.examples)
            print(f"sft data: {len(train_ds)} train demonstrations ({train_ds.n_dropped} dropped as too long), "
                  f"{len(val_examples)} val; {n_resp:,} of {n_all:,} tokens are supervised "
                  f"({n_resp / max(n_all, 1):.0%}); ~{cfg.max_iters * cfg.batch_size * cfg.grad_accum / max(len(train_ds), 1):.1f} epochs")

        base = None
        if info.is_main and evaluator is not None:
            t0 = time.perf_counter()
            base = evaluator(model, tok)
            print(f"base model gold score on {base['n']} val prompts: {base['gold']:.3f} "
                  f"(stop rate {base['stop_rate']:.2f}; {time.perf_counter() - t0:.1f}s)")
        barrier(info)

        torch.manual_seed(cfg.seed + info.rank)
        model.train()
        result = fit(model, sft_loss_fn, batches, cfg, run_dir=run_dir, device=device, dist_info=info,
                     desc="sft")
        summary: dict = {}
        if info.is_main and not result["interrupted"]:
            model.eval()
            sft = None
            if evaluator is not None:
                t0 = time.perf_counter()
                sft = evaluator(model, tok)
                print(f"\nsft model gold score: {sft['gold']:.3f} ({time.perf_counter() - t0:.1f}s)")
                print(format_gold_table(base, sft))
                print("\nsamples (val prompts, greedy):")
                for r in sft["rows"][:6]:
                    print(f"  [{r['family']}] {r['prompt']!r} -> {r['response']!r} "
                          f"(gold {r['gold_answer']!r}, score {r['score']:.2f})")
                write_jsonl(os.path.join(run_dir, "eval_samples.jsonl"),
                            [{"model": "base", **r} for r in base["rows"]] + [{"model": "sft", **r} for r in sft["rows"]])
            val_loss = result["val_loss"]
            summary = {"stage": "sft", "val_loss": val_loss, "train_loss": result["train_loss"],
                       "steps": result["step"], "tokens_per_s": result["tokens_per_s"],
                       "train_seconds": result["train_seconds"], "seconds": time.time() - t_start,
                       "n_train_demos": len(train_ds), "n_val_demos": len(val_examples),
                       "loss_curve": result["loss_curve"], "init_from": cfg.init_from, "device": str(device),
                       "world_size": info.world_size}
            if sft is not None:
                summary.update({
                    "n_eval_prompts": sft["n"],
                    "base": {k: base[k] for k in ("gold", "per_family", "per_h", "stop_rate")},
                    "sft": {k: sft[k] for k in ("gold", "per_family", "per_h", "stop_rate")},
                    "gold_score": sft["gold"], "base_gold_score": base["gold"],
                    "samples": sft["rows"][:6]})
            ckpt_io.save_model(run_dir, model, tok, extra={"stage": "sft", "step": result["step"]})
            ckpt_io.write_summary(run_dir, summary)
            shown = f"val loss {val_loss:.4f}" if val_loss is not None else "no val loss (no steps)"
            print(f"\nsft: {shown}, {result['tokens_per_s'] or 0:,.0f} tokens/s, "
                  f"{summary['seconds']:.1f}s -> {run_dir}")
        barrier(info)
        if result["interrupted"]:  # Ctrl-C: ckpt.pt is saved; callers (the pipeline) must not go on
            raise KeyboardInterrupt
        return summary
    finally:
        teardown_distributed()


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(SFTConfig, argv, PRESETS, prog="python -m rlhf.sft")
    if cfg.train_on not in ("all", "last"):
        raise SystemExit(f"error: --train_on must be all or last, got {cfg.train_on!r}")
    # local import: the command line is the caller that hands the gold judge to the training code
    from rlhf.gold import GoldEvaluator
    evaluator = gold_evaluator(cfg, GoldEvaluator)
    return run_entry_point(lambda c: train_sft(c, evaluator), cfg)


def gold_evaluator(cfg: SFTConfig, evaluator_class):
    """The evaluator this stage's settings ask for (n_eval val prompts, eval_seed, max_new_tokens), built
    from the class the caller passes in (rlhf.gold.GoldEvaluator), or None when n_eval is 0."""
    if cfg.n_eval <= 0:
        return None
    return evaluator_class(cfg.n_eval, seed=cfg.eval_seed, max_new_tokens=cfg.max_new_tokens,
                           batch_size=cfg.eval_batch_size)


if __name__ == "__main__":
    utf8_console()
    main()
