"""Stage 3 of InstructGPT: a reward model learned from labelers' rankings.

The reward model r_θ(x, y) is the SFT model with its LM head swapped for a scalar head, read at the
last real token of prompt + response. A labeler ranks K responses to a prompt; every pair of the K
(C(K,2) of them) is a comparison, and all of a prompt's pairs are scored from ONE forward pass per
response, in one batch element (InstructGPT §3.5, eq. 1):

    loss(θ) = - 1/C(K,2) · E_{(x, y_w, y_l) ~ D} [ log σ( r_θ(x, y_w) - r_θ(x, y_l) ) ]

Tied responses give no pair (rlhf.losses.ranked_reward_loss with a pair mask). Plain comparison files
(prompt/chosen/rejected, HH-RLHF) use rlhf.losses.pairwise_reward_loss, with an optional margin.
After training a bias is subtracted so that labeler demonstrations score 0 on average.

Run (after SFT):

    python -m rlhf.reward_model --preset default --sft_dir=runs/default/sft --out_dir=runs/default/reward_model
    python -m rlhf.reward_model --preset tiny --sft_dir=runs/tiny/sft --out_dir=runs/tiny/reward_model
    python -m rlhf.reward_model --data=pairs.jsonl          # any comparison JSONL instead of simulated labelers
    python -m rlhf.reward_model --out_dir=runs/default/reward_model --resume
    torchrun --standalone --nproc_per_node=2 -m rlhf.reward_model --preset default

What it writes to out_dir: data/rm_train.jsonl, data/rm_val.jsonl (the rankings, in the rankings
JSONL format), model.pt + tokenizer.bpe (RewardModel.load reads them), ckpt.pt, metrics.jsonl,
loss.png, calibration.png, summary.json (held-out accuracy, labeler ceiling, per family / per H,
RM–gold correlation, one-factor probes; metrics in rlhf/rm_metrics.py, probes in rlhf/rm_probes.py).

Where we simplify InstructGPT:
  1. The RM has the size of the policy and starts from its SFT weights (InstructGPT used one 6B RM,
     initialised from a 6B SFT model, for every policy size).
  2. Labelers are simulated (rlhf.world.labelers: Bradley–Terry noise around the gold oracle) and may
     declare ties; ties carry no loss.
  3. Candidates: the labeler's own demonstration, a flawed answer of the world and samples of the SFT
     policy at temperature >= 1 (and optionally of a second policy), so that comparisons are
     informative (docs/DESIGN.md, feasibility notes), each also with its chatter toggled (world.twin);
     InstructGPT sampled from several models too.
  4. The labelers' ceiling is measured by a second, independent simulated labeler ranking the same
     held-out candidates (InstructGPT measured ~73% inter-labeler agreement).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor

from minigpt import checkpoint as ckpt_io
from minigpt.configurator import parse_config, utf8_console
from minigpt.distributed import barrier, teardown_distributed
from minigpt.trainer import LoopConfig, fit, make_generator, run_entry_point, seed_everything, start_stage
from rlhf import data as D
from rlhf.data import encode_response  # noqa: F401  (R.encode_response: the ids the RM reads)
from rlhf.losses import pairwise_reward_loss, ranked_reward_loss
from rlhf.reward import RewardModel, last_token_values  # noqa: F401  (R.RewardModel, R.last_token_values)
from rlhf.rm_metrics import by_source, evaluate_rankings, plot_calibration  # noqa: F401  (R.evaluate_rankings)
from rlhf.rm_probes import format_probes, probe_reward_model
from rlhf.comparisons import simulate_rankings
from rlhf.stats import format_number

# -----------------------------------------------------------------------------
# config


@dataclass
class RMConfig(LoopConfig):
    """Reward model: rank K responses per prompt, learn r(x, y) with the K-choose-2 pairwise loss."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"n_train_prompts": ">= 1", "n_val_prompts": ">= 1", "gen_batch_size": ">= 1",
              "calibration_bins": ">= 1", "temperatures": ">= 0", "base_temperatures": ">= 0"}   # 0: greedy
    out_dir: str = "runs/default/reward_model"  # run directory (model.pt, summary.json, data/, plots)
    max_iters: int = 0               # optimizer steps; 0 = epochs * train prompts / batch_size
    batch_size: int = 16             # prompts per micro-batch, each with all its K responses (one forward each)
    learning_rate: float = 3e-4      # peak learning rate (default preset's tuning: 1e-3 did worse, 1e-4 underfit)
    min_lr: float = 3e-5             # floor of the cosine decay
    warmup_iters: int = 10           # linear warmup steps
    weight_decay: float = 0.0        # no decay: the backbone starts from the SFT weights
    eval_interval: int = 50          # validation loss / accuracy every this many steps
    eval_iters: int = 4              # validation batches (of batch_size prompts) per evaluation
    sft_dir: str = "runs/default/sft"  # SFT run: its policy samples the candidates (and its weights start the RM)
    init_dir: str = ""               # run whose GPT weights start the RM instead ("" = sft_dir), e.g. a larger
                                     # SFT model with the same tokenizer (InstructGPT: one 6B RM for every policy)
    init_rm: str = ""                # reward-model run whose weights, head included, start the RM instead ("" =
                                     # a fresh head): fine-tunes an earlier RM (rlhf.experiments.rounds)
    data: str = ""                   # comparison JSONL (rankings, prompt/chosen/rejected or HH-RLHF); "" = simulate labelers
    val_data: str = ""               # held-out comparisons for --data ("" = the last val_fraction of --data)
    val_fraction: float = 0.1        # share of --data held out when no --val_data is given
    skip_bad: int = 0                # --data from elsewhere: skip up to this many malformed records (one summary
                                     # line; e.g. the 5 of 2,312 HH-RLHF harmless-base test records whose
                                     # transcripts differ before the last reply); 0 = stop at the first
    norm_data: str = ""              # demonstrations JSONL whose mean reward becomes 0 ("" = the labelers' demos)
    n_train_prompts: int = 2000      # simulated: train prompts, each with K ranked candidates
    n_val_prompts: int = 300         # simulated: held-out val prompts (ranked by two independent labelers)
    data_seed: int = 0               # seed of prompts, demonstrations, sampling and labels
    include_demo: bool = True        # the labeler's demonstration is one of the K candidates
    n_perturbed: int = 1             # extra candidates per prompt: the world's flawed answers (world.perturb)
    twins: bool = True               # every candidate also appears with its chatter toggled (world.twin): K doubles
    temperatures: list[float] = field(default_factory=lambda: [1.0, 1.6])  # one SFT sample per temperature
    base_dir: str = ""               # optional second policy (e.g. the pretrain run) whose samples join in
    base_temperatures: list[float] = field(default_factory=list)  # one sample of base_dir per temperature
    max_new_tokens: int = 32         # length limit of sampled candidates (no stop token by then = not stopped)
    gen_batch_size: int = 256        # prompts per generation batch (bigger batches sample faster on a CPU)
    label_temperature: float = -1.0  # labelers' Bradley-Terry noise; < 0 = the world's default
    block_size: int = 0              # longest prompt + response in tokens (0 = the model's block_size)
    margin: float = 0.0              # pairwise files only: margin in -log σ(r_w - r_l - margin)
    loss_reduction: Literal["prompt", "pair"] = "prompt"   # ranked loss: "prompt" = InstructGPT eq. 1 (mean
                                     # over each prompt's pairs, then over prompts); "pair" = one mean over all
                                     # pairs of a batch
    epochs: float = 2.0              # passes over the train prompts (InstructGPT: 1; default preset: 2 > 1, 6 overfits)
    normalize: bool = True           # shift rewards so the demonstrations average 0 (InstructGPT)
    calibration_bins: int = 10       # bins of the calibration plot


PRESETS: dict[str, dict] = {
    # CI smoke run: seconds.
    "tiny": dict(out_dir="runs/tiny/reward_model", sft_dir="runs/tiny/sft", n_train_prompts=48, n_val_prompts=24,
                 temperatures=[1.0, 1.6], max_new_tokens=16, batch_size=8, epochs=1.0,
                 warmup_iters=2, eval_interval=5, eval_iters=1, learning_rate=1e-4, min_lr=1e-5,
                 gen_batch_size=64, calibration_bins=5),
    # After the default SFT (the dataclass defaults): K = 8 candidates per prompt = the labeler's
    # demonstration, 1 flawed world answer, SFT samples at T = 1.0 and 1.6, and the chatter-toggled
    # twin of each of those four; 2000 prompts, 2 epochs.
    # The course's student-scale run: 400 ranked prompts after the small SFT.
    "small": dict(out_dir="runs/small/reward_model", sft_dir="runs/small/sft", n_train_prompts=400,
                  n_val_prompts=150, eval_interval=25, eval_iters=4, warmup_iters=5),
    "default": dict(),
}


# -----------------------------------------------------------------------------
# comparisons: simulated labelers ranking policy samples, or a JSONL file


@dataclass
class RankedItem:
    """One prompt's K responses, encoded and sorted best first (stable in the file's order)."""
    ids: list[list[int]]      # K token-id lists (prompt + response)
    ranks: list[int]          # K labeler ranks, ascending (0 = best)
    texts: list[str]          # K response texts (identical texts never form a pair)
    meta: dict                # family, h, and per-response lists (gold, source, ranks_2), in the same order


def to_items(records, tokenizer, max_len: int) -> list[RankedItem]:
    """Encode rlhf.data Ranking / Preference records into RankedItems (a Preference = a ranking of two)."""
    per_response = ("gold", "source", "stopped", "ranks_2")
    items = []
    for rec in records:
        if isinstance(rec, D.Preference):
            rec = D.Ranking(rec.prompt, [rec.chosen, rec.rejected], [0, 1], dict(rec.meta))
        K = len(rec.responses)
        order = sorted(range(K), key=lambda i: rec.ranks[i])                    # best first, stable
        meta = {k: v for k, v in rec.meta.items() if k not in per_response}
        for k in per_response:
            if isinstance(rec.meta.get(k), list) and len(rec.meta[k]) == K:
                meta[k] = [rec.meta[k][i] for i in order]
        stopped = meta.get("stopped", [True] * K)
        ids = [encode_response(rec.prompt, rec.responses[i], tokenizer, max_len, bool(s))
               for i, s in zip(order, stopped)]
        items.append(RankedItem(ids, [rec.ranks[i] for i in order], [rec.responses[i] for i in order], meta))
    return items


def pair_mask_of(item: RankedItem, K: int) -> Tensor:
    """(K, K) 0/1: [i, j] = 1 where i < j, response i is ranked strictly better and the texts differ."""
    mask = torch.zeros(K, K)
    # BEGIN SOLUTION a3.pair_mask
    for i in range(len(item.ranks)):
        for j in range(i + 1, len(item.ranks)):
            if item.ranks[i] < item.ranks[j] and item.texts[i] != item.texts[j]:
                mask[i, j] = 1.0
    # END SOLUTION
    return mask


def collate_items(items: list[RankedItem], pad_id: int) -> dict[str, Tensor]:
    """A batch of P prompts: idx, attention_mask (P, K, T) right-padded; pair_mask (P, K, K).

    K is the largest K of the batch; missing responses are all-padding rows that no pair touches.
    """
    P, K = len(items), max(len(it.ids) for it in items)
    T = max(len(s) for it in items for s in it.ids)
    idx = torch.full((P, K, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((P, K, T), dtype=torch.long)
    pair_mask = torch.zeros((P, K, K))
    for p, it in enumerate(items):
        for k, s in enumerate(it.ids):
            idx[p, k, :len(s)] = torch.tensor(s, dtype=torch.long)
            attention_mask[p, k, :len(s)] = 1
        pair_mask[p] = pair_mask_of(it, K)
    return {"idx": idx, "attention_mask": attention_mask, "pair_mask": pair_mask}


class RankingBatches:
    """get_batch(split, index) → a collated batch of `batch_size` prompts (a pure function of its arguments).

    train: epoch e = index * batch_size // n visits the items in a permutation seeded by (seed, e), so
    every item is seen once per epoch and a resumed run replays the same batches. val: fixed slices.
    """

    def __init__(self, train: list[RankedItem], val: list[RankedItem], batch_size: int, pad_id: int, seed: int):
        self.items = {"train": train, "val": val}
        self.batch_size, self.pad_id, self.seed = batch_size, pad_id, seed
        self._perms: dict[int, list[int]] = {}  # epoch -> permutation of the train items

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            n = len(self.items["train"])
            self._perms[epoch] = torch.randperm(n, generator=make_generator(self.seed, "rm-epoch", epoch)).tolist()
        return self._perms[epoch]

    def __call__(self, split: str, index: int) -> dict[str, Tensor]:
        items, B = self.items[split], self.batch_size
        n = len(items)
        if split == "train":
            chosen = []
            for pos in range(index * B, (index + 1) * B):
                epoch, offset = divmod(pos, n)
                chosen.append(items[self._perm(epoch)[offset]])
        else:
            chosen = [items[(index * B + i) % n] for i in range(B)]
        return collate_items(chosen, self.pad_id)


def rm_loss(model, batch: dict[str, Tensor], pairwise: bool = False, margin: float = 0.0,
            reduction: str = "prompt"):
    """(loss, stats) of a batch: one forward pass per response, every kept pair of a prompt compared.

    pairwise=True (comparison files of chosen/rejected pairs, K = 2): pairwise_reward_loss with margin.
    """
    idx, attention_mask, pair_mask = batch["idx"], batch["attention_mask"], batch["pair_mask"]
    P, K, T = idx.shape
    # BEGIN SOLUTION a3.rm_loss
    flat_mask = attention_mask.view(P * K, T)
    values = model(idx.view(P * K, T), flat_mask)                                # (P*K, T)
    rewards = last_token_values(values, flat_mask).view(P, K).float()            # (P, K)
    # END SOLUTION
    if pairwise:
        loss = pairwise_reward_loss(rewards[:, 0], rewards[:, 1], margin if margin else None)
    else:
        loss = ranked_reward_loss(rewards, pair_mask, reduction=reduction)
    with torch.no_grad():
        # BEGIN SOLUTION a3.rm_loss
        diff = rewards[:, :, None] - rewards[:, None, :]                         # (P, K, K): r_i - r_j
        correct = (diff > 0).float() + 0.5 * (diff == 0).float()
        n_pairs = pair_mask.sum().clamp(min=1)
        # END SOLUTION
        real = attention_mask.any(-1).float()                                    # (P, K) real responses
        stats = {"accuracy": (correct * pair_mask).sum() / n_pairs, "pairs": pair_mask.sum(),
                 "reward_mean": (rewards * real).sum() / real.sum().clamp(min=1)}
    return loss, stats


# -----------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def score_items(model: RewardModel, items: list[RankedItem], pad_id: int, batch_size: int = 16,
                device="cpu") -> list[list[float]]:
    """The reward of every response of every item: [[r_1, ..., r_K], ...] (same order as item.ids)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        batch = collate_items(chunk, pad_id)
        P, K, T = batch["idx"].shape
        mask = batch["attention_mask"].view(P * K, T).to(device)
        r = model.score(batch["idx"].view(P * K, T).to(device), mask).float().view(P, K).cpu()
        out += [r[p, :len(it.ids)].tolist() for p, it in enumerate(chunk)]
    model.train(was_training)
    return out


def demonstration_responses(cfg: RMConfig, train_records) -> list[tuple[list[dict], str]]:
    """(prompt, reply) pairs whose mean reward becomes 0: --norm_data, else the labelers' demonstrations
    among the candidates, else every chosen/ranked response of the training data."""
    if cfg.norm_data:
        return [(conv[:-1], conv[-1]["content"]) for conv in D.load_demonstrations(cfg.norm_data)]
    demos, everything = [], []
    for rec in train_records:
        if isinstance(rec, D.Preference):
            everything.append((rec.prompt, rec.chosen))
            continue
        sources = rec.meta.get("source") or [None] * len(rec.responses)
        for resp, s in zip(rec.responses, sources):
            everything.append((rec.prompt, resp))
            if s == "demo":
                demos.append((rec.prompt, resp))
    return demos or everything


# -----------------------------------------------------------------------------
# the stage


def load_comparisons(cfg: RMConfig, run_dir: str, tokenizer, policies, is_main: bool, info,
                     gold: Callable | None = None) -> tuple[list, list, bool]:
    """(train records, val records, pairwise) from --data, or from simulated labelers written to run_dir/data."""
    if cfg.data:
        fmt, records, val = D.load_comparison_files(cfg.data, cfg.val_data, cfg.skip_bad, "the reward model")
        if val is None:
            n_val = max(1, int(len(records) * cfg.val_fraction))
            records, val = records[:-n_val], records[-n_val:]
        return records, val, fmt in ("pairs", "hh")
    data_dir = os.path.join(run_dir, "data")
    train_path, val_path = os.path.join(data_dir, "rm_train.jsonl"), os.path.join(data_dir, "rm_val.jsonl")
    reuse = cfg.resume and os.path.exists(train_path) and os.path.exists(val_path)
    if is_main and not reuse:
        t0 = time.time()
        D.write_jsonl(train_path, simulate_rankings("train", cfg.n_train_prompts, policies, tokenizer, cfg, gold=gold))
        D.write_jsonl(val_path, simulate_rankings("val", cfg.n_val_prompts, policies, tokenizer, cfg, n_labelers=2,
                                                  gold=gold))
        print(f"comparisons: {cfg.n_train_prompts} train + {cfg.n_val_prompts} val prompts ranked "
              f"in {time.time() - t0:.1f}s -> {data_dir}")
    barrier(info)
    return D.load_rankings(train_path), D.load_rankings(val_path), False


def init_backbone(cfg: RMConfig, sft, tokenizer, device):
    """The GPT whose weights start the RM: the SFT policy, or --init_dir's model (same tokenizer required,
    since the RM reads the token ids the policy generates)."""
    if not cfg.init_dir or os.path.abspath(cfg.init_dir) == os.path.abspath(cfg.sft_dir):
        return sft
    gpt, tok = ckpt_io.load_model(cfg.init_dir, device)
    if tok.vocab_size != tokenizer.vocab_size or tok.encode(_TOKENIZER_PROBE) != tokenizer.encode(_TOKENIZER_PROBE):
        raise SystemExit(f"error: --init_dir={cfg.init_dir} has another tokenizer than --sft_dir={cfg.sft_dir}; "
                         "the reward model must read the policy's token ids")
    if gpt.config.block_size < sft.config.block_size:
        raise SystemExit(f"error: --init_dir={cfg.init_dir} reads {gpt.config.block_size} tokens, fewer than the "
                         f"{sft.config.block_size} of --sft_dir={cfg.sft_dir}'s policy, whose responses it must score")
    return gpt


_TOKENIZER_PROBE = "<|user|>What is 12 + 7?<|end|><|assistant|>Sure! 19, reversed: enots.<|end|>"


def train_reward_model(cfg: RMConfig, gold: Callable | None = None) -> dict:
    """Stage 3: comparisons -> RewardModel from the SFT weights -> fit -> normalise -> evaluate -> model.pt.

    `gold(conversation, response, stopped) -> [0, 1]` is the judge the caller may hand in (rlhf.gold.score;
    `main()` and the pipeline do): it only annotates the simulated comparisons for the held-out "vs gold"
    metrics, never the loss. Without it those metrics are skipped."""
    t_start = time.time()
    needed = [(cfg.sft_dir, "rlhf.sft"), (cfg.init_dir, "rlhf.sft"), (cfg.base_dir, "rlhf.pretrain"),
              (cfg.init_rm, "rlhf.reward_model")]
    for d, stage in needed:   # before anything is written
        if d and not os.path.exists(os.path.join(d, ckpt_io.MODEL_FILE)):
            raise SystemExit(f"error: {d}: no {ckpt_io.MODEL_FILE}; train that stage first (python -m {stage})")
    if cfg.data and not os.path.exists(cfg.data):
        raise SystemExit(f"error: --data={cfg.data}: no such file")
    if cfg.val_data and not cfg.data:
        raise SystemExit("error: --val_data holds out comparisons of your own --data; give --data too")
    # another stage's model, or demonstrations of another format: one line before comparisons are simulated
    # into the run directory (they once overwrote a finished run's before the stage stopped)
    if cfg.init_rm:
        RewardModel.load(cfg.init_rm, "cpu")
    if cfg.init_dir:
        ckpt_io.load_model(cfg.init_dir, "cpu")
    if cfg.norm_data:
        D.load_demonstrations(cfg.norm_data)
    device, info, run_dir = start_stage(cfg)
    try:
        seed_everything(cfg.seed)
        sft, tokenizer = ckpt_io.load_model(cfg.sft_dir, device)
        policies = [("sft", sft, list(cfg.temperatures))]
        if cfg.base_dir and cfg.base_temperatures:
            policies.append(("base", ckpt_io.load_model(cfg.base_dir, device)[0], list(cfg.base_temperatures)))
        train_records, val_records, pairwise = load_comparisons(cfg, run_dir, tokenizer, policies, info.is_main, info,
                                                                gold)
        seconds_data = time.time() - t_start
        max_len = cfg.block_size or sft.config.block_size
        pad_id = D.pad_token_id(tokenizer)
        train_items = to_items(train_records, tokenizer, max_len)
        val_items = to_items(val_records, tokenizer, max_len)
        n_pairs = sum(int(pair_mask_of(it, len(it.ids)).sum()) for it in train_items)
        n_all = sum(len(it.ids) * (len(it.ids) - 1) // 2 for it in train_items)
        if n_pairs == 0:
            raise SystemExit("error: the training comparisons contain no informative (non-tied) pair")

        seed_everything(cfg.seed)  # the same head init in every process and run
        model = RewardModel.from_pretrained_gpt(init_backbone(cfg, sft, tokenizer, device)).to(device)
        if cfg.init_rm:   # fine-tune an earlier reward model (same shape required: load_state_dict checks)
            model.load_state_dict(RewardModel.load(cfg.init_rm, device).state_dict())
        del policies, sft
        steps = cfg.max_iters if cfg.max_iters > 0 else max(1, math.ceil(cfg.epochs * len(train_items) / cfg.batch_size))
        run_cfg = replace(cfg, max_iters=steps)
        if info.is_main:
            Ks = sorted({len(it.ids) for it in train_items})
            print(f"reward model: {len(train_items)} train prompts (K = {', '.join(map(str, Ks))}), {n_pairs} informative "
                  f"pairs of {n_all} ({n_pairs / max(n_all, 1):.1%}); {len(val_items)} val prompts; "
                  f"{steps} steps of {cfg.batch_size} prompts; {'pairwise' if pairwise else 'ranked'} loss; device {device}")
        batches = RankingBatches(train_items, val_items, cfg.batch_size, pad_id, cfg.seed)

        def loss_fn(m, batch):
            return rm_loss(m, batch, pairwise=pairwise, margin=cfg.margin, reduction=cfg.loss_reduction)

        result = fit(model, loss_fn, batches, run_cfg, run_dir=run_dir, device=device, dist_info=info,
                     desc="reward model")
        summary: dict = {}
        if info.is_main and not result["interrupted"]:
            model.eval()
            # normalise: the demonstrations' mean reward becomes 0 (InstructGPT)
            demos = demonstration_responses(cfg, train_records)
            demo_items = [RankedItem([encode_response(p, r, tokenizer, max_len)], [0], [r], {}) for p, r in demos]
            demo_rewards = [r[0] for r in score_items(model, demo_items, pad_id, device=device)]
            offset = float(np.mean(demo_rewards)) if (cfg.normalize and demo_rewards) else 0.0
            model.normalize_(offset)
            demo_after = [r[0] for r in score_items(model, demo_items, pad_id, device=device)]

            val_rewards = score_items(model, val_items, pad_id, device=device)
            metrics = evaluate_rankings(val_items, val_rewards, cfg.calibration_bins, seed=cfg.seed)
            cal_path = plot_calibration(metrics["calibration"], os.path.join(run_dir, "calibration.png"))
            # one-factor probes on the world's prompts: only for a reward model of the world's comparisons
            probes = None if cfg.data else probe_reward_model(model, tokenizer, cfg.n_val_prompts, "val",
                                                              cfg.data_seed)
            train_share = n_pairs / max(n_all, 1)
            ceiling = metrics["label_agreement"]
            summary = {
                "stage": "reward_model",
                "val_accuracy": metrics["accuracy"], "label_agreement": ceiling,
                "gap_to_ceiling": (ceiling - metrics["accuracy"]) if ceiling is not None and metrics["accuracy"] is not None else None,
                "go": (metrics["accuracy"] >= ceiling - 0.03) if ceiling is not None and metrics["accuracy"] is not None else None,
                **{k: v for k, v in metrics.items() if k not in ("accuracy", "label_agreement")},
                "informative_share_train": train_share, "train_pairs": n_pairs, "train_prompts": len(train_items),
                "val_prompts": len(val_items), "loss": "pairwise" if pairwise else "ranked",
                "reward_offset": offset, "demo_reward_mean": float(np.mean(demo_after)) if demo_after else None,
                "demo_reward_std": float(np.std(demo_after)) if demo_after else None,
                "by_source": by_source(val_items, val_rewards), "probes": probes,
                "train_loss": result["train_loss"], "val_loss": result["val_loss"], "steps": result["step"],
                "seconds_data": seconds_data, "seconds_train": result["train_seconds"],
                "seconds": time.time() - t_start, "device": str(device), "world_size": info.world_size,
                "loss_curve": result["loss_curve"], "calibration_plot": cal_path,
            }
            model.save(run_dir, tokenizer, extra={"stage": "reward_model", "step": result["step"], "reward_offset": offset})
            ckpt_io.write_summary(run_dir, summary)
            print_summary(summary)
        barrier(info)
        if result["interrupted"]:  # Ctrl-C: ckpt.pt is saved; the command exits 130, the pipeline does not go on
            raise KeyboardInterrupt
        return summary or result
    finally:
        teardown_distributed()


def _pct(x) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}"


def print_summary(s: dict) -> None:
    """The closing note: accuracy vs the labelers' ceiling, per family / per H, RM–gold correlation."""
    if s["go"] is None:                     # no second labeler (e.g. a third-party file): no ceiling to compare
        print(f"\nreward model: held-out accuracy {_pct(s['val_accuracy']).strip()}% on {s['pairs']} pairs")
    else:
        print(f"\nreward model: held-out accuracy {_pct(s['val_accuracy'])}% vs labeler agreement (ceiling) "
              f"{_pct(s['label_agreement'])}% on {s['pairs']} pairs: {'GO' if s['go'] else 'NO-GO'} "
              "(goal: within 3 points)")
    if s.get("gold_pairs"):                 # world comparisons only: the oracle's scores annotate them
        print(f"  vs gold: RM {_pct(s['gold_accuracy'])}%, labelers {_pct(s['labeler_gold_accuracy'])}% on "
              f"{s['gold_pairs']} pairs with different gold scores; RM-gold Pearson "
              f"{format_number(s['rm_gold_pearson'])}, Spearman {format_number(s['rm_gold_spearman'])}, "
              f"within prompt {format_number(s['rm_gold_pearson_within_prompt'])}")
    print(f"  informative pairs: train {_pct(s['informative_share_train'])}%, val {_pct(s['informative_share'])}%; "
          f"calibration ECE {format_number(s['calibration']['ece'])}; demo reward after normalising "
          f"{format_number(s['demo_reward_mean'], 4)} (std {format_number(s['demo_reward_std'])})")
    for title, key in (("family", "by_family"), ("H", "by_h"), ("pair", "by_pair_sources")):
        if not s.get(key):                  # no such labels (e.g. a third-party comparison file): no table
            continue
        print(f"  {title:<11} {'acc':>6} {'ceiling':>8} {'pairs':>6}")
        for name, g in s[key].items():
            print(f"  {name:<11} {_pct(g['accuracy']):>6} {_pct(g['ceiling']):>8} {g['pairs']:>6}")
    if s.get("by_source"):
        print(f"  {'source':<11} {'reward':>7} {'gold':>6} {'n':>6}")
        for name, g in s["by_source"].items():
            print(f"  {name:<11} {format_number(g['reward']):>7} {format_number(g['gold']):>6} {g['n']:>6}")
    if s.get("probes"):
        print(format_probes(s["probes"]))
    print(f"  {s['seconds']:.1f}s ({s['seconds_data']:.1f}s making comparisons, {s['seconds_train']:.1f}s training)")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(RMConfig, argv, PRESETS, prog="python -m rlhf.reward_model")
    # local import: the command line is the caller that hands the gold judge to the stage (evaluation only)
    from rlhf.gold import score
    return run_entry_point(lambda c: train_reward_model(c, gold=score), cfg, errors=(D.DataError, FileNotFoundError))


if __name__ == "__main__":
    utf8_console()
    main()
