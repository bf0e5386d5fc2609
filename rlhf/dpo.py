"""Direct preference optimisation (DPO): RLHF without a reward model or a sampler, for contrast with PPO.

    python -m rlhf.dpo --preset default        # after rlhf.reward_model (reuses its comparisons)
    python -m rlhf.dpo --preset tiny --sft_dir=runs/tiny/sft --rm_dir=runs/tiny/reward_model --out_dir=runs/tiny/dpo
    python -m rlhf.dpo --data=pairs.jsonl      # any comparison JSONL (prompt/chosen/rejected, HH-RLHF, rankings)
    python -m rlhf.dpo --out_dir=runs/default/dpo --resume
    torchrun --standalone --nproc_per_node=2 -m rlhf.dpo --preset default

The KL-regularised RLHF objective max_π E[r(x, y)] - β KL(π || π_ref) has the closed-form optimum
π*(y|x) ∝ π_ref(y|x) exp(r(x, y) / β). Solving it for r, r(x, y) = β log π*(y|x)/π_ref(y|x) + β log Z(x),
and putting that into the reward model's Bradley-Terry loss (Z cancels in a difference) gives a loss on
the policy itself (Rafailov et al. 2023, eq. 7):

    L_DPO(π; π_ref) = - E_{(x, y_w, y_l)} [ log σ( β log π(y_w|x)/π_ref(y_w|x) - β log π(y_l|x)/π_ref(y_l|x) ) ]

where log π(y|x) = Σ_t log π(y_t | x, y_<t) is summed over the response tokens only (the prompt and the
padding carry no log-prob: `sequence_logprobs`). The implicit reward of a response is
r̂(x, y) = β (log π(y|x) - log π_ref(y|x)); we log its accuracy (share of pairs with r̂_w > r̂_l) and the
margin r̂_w - r̂_l. At the start π = π_ref, every r̂ is 0 and the loss is exactly ln 2.

The comparisons are the reward-model stage's own (rm_dir/data/rm_train.jsonl, rm_val.jsonl: simulated
labelers ranking the labeler's demonstration and SFT samples), each ranking expanded into its non-tied
pairs; with no RM run, the same simulation is run here; --data takes any comparison file instead. So
DPO and PPO learn from the same labels: PPO through a reward model and on-policy samples, DPO directly
from the fixed, off-policy pairs. The gold oracle only evaluates (greedy and sampled answers of the DPO
policy and of the SFT model to the same val prompts).

Simplifications relative to Rafailov et al. 2023:
  1. Scale: a ~1M-parameter GPT and ~45,000 pairs (2,000 ranked prompts) from simulated labelers
     (the paper: GPT-2/Pythia-2.8B on IMDb, TL;DR and Anthropic-HH).
  2. π_ref is the SFT model (the paper's choice when an SFT model exists). Its log-probs are computed once
     before training (it is frozen), as several open implementations do.
  3. A K-way ranking becomes its K-choose-2 non-tied pairs, each an independent example (the paper trains
     on pairs; Plackett-Luce on whole rankings, its appendix A.3, is not implemented).
  4. A candidate that never said <|end|> is encoded without it (as the reward model sees it); a prompt +
     response longer than the context is cut by the reward model's rule (rlhf.reward_model.encode_response).
  5. No label smoothing / conservative DPO, no length normalisation (IPO, SimPO and others change the loss).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from tqdm.auto import tqdm

from minigpt import checkpoint as ckpt_io
from minigpt.configurator import parse_config, utf8_console
from minigpt.distributed import barrier, teardown_distributed
from minigpt.trainer import (LoopConfig, autocast_context, evaluate, fit, make_generator, plot_panels,
                             read_metrics, run_entry_point, seed_everything, start_stage)
from rlhf import data as D
from rlhf.comparisons import LabelingConfig, simulate_rankings
from rlhf.losses import dpo_loss
from rlhf.rl_update import disable_dropout, frozen
from rlhf.rollout import sequence_logprobs

# -----------------------------------------------------------------------------
# config


@dataclass
class DPOConfig(LoopConfig):
    """DPO: fit the SFT policy to the labelers' comparisons directly, with π_ref = the SFT model."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    # β = 0 learns nothing, β < 0 learns to prefer the rejected answers
    BOUNDS = {"beta": "> 0", "eval_batch_size": ">= 1", "temperatures": ">= 0"}
    out_dir: str = "runs/default/dpo"  # run directory: model.pt, ckpt.pt, metrics.jsonl, loss.png, dpo.png, summary.json
    sft_dir: str = "runs/default/sft"  # SFT run: the initial policy and the frozen reference π_ref
    rm_dir: str = "runs/default/reward_model"  # RM run whose data/rm_{train,val}.jsonl are the comparisons
    data: str = ""                      # comparison JSONL (pairs, HH-RLHF or rankings) instead of rm_dir's
    val_data: str = ""                  # held-out comparisons for --data ("" = the last val_fraction of --data)
    val_fraction: float = 0.1           # share of --data held out when no --val_data is given
    skip_bad: int = 0                   # --data from elsewhere: skip up to this many malformed records (0 = none)
    n_train_prompts: int = 1500         # simulated (no RM data): train prompts, each with K ranked candidates
    n_val_prompts: int = 300            # simulated: held-out val prompts
    data_seed: int = 0                  # simulated: seed of prompts, demonstrations, sampling and labels
    temperatures: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.6])  # simulated: one SFT sample per temperature
    sample_tokens: int = 48             # simulated: length limit of the sampled candidates
    beta: float = 0.1                   # β: strength of the implicit KL penalty (small = far from π_ref allowed)
    epochs: float = 2.0                 # passes over the train pairs (when max_iters = 0)
    max_iters: int = 0                  # optimizer steps; 0 = epochs * train pairs / batch_size
    batch_size: int = 16                # pairs per micro-batch (2 sequences each: chosen and rejected)
    learning_rate: float = 1e-4         # peak learning rate (DPO wants a small one: it moves the policy directly)
    min_lr: float = 1e-5                # end of the cosine decay
    warmup_iters: int = 10              # linear warmup steps
    weight_decay: float = 0.0           # no decay: a short fine-tune should not shrink the SFT weights
    eval_interval: int = 50             # validation (held-out pairs) every this many steps
    eval_iters: int = 32                # validation micro-batches then (the same pairs each time; 0 = every held-out
                                        # pair); the summary's final numbers always cover every held-out pair
    n_eval: int = 200                   # val prompts for the gold score of the DPO and the SFT policy (0 = skip)
    eval_seed: int = 0                  # which val prompts, and the seed of the sampled answers
    max_new_tokens: int = 40            # response budget of the gold evaluation (as PPO's)
    eval_batch_size: int = 100          # prompts per generation batch
    ref_batch_size: int = 64            # sequences per forward pass when computing the reference log-probs


PRESETS: dict[str, dict] = {
    # CI smoke run: seconds (simulates its own comparisons when the tiny RM run has none).
    "tiny": dict(out_dir="runs/tiny/dpo", sft_dir="runs/tiny/sft", rm_dir="runs/tiny/reward_model",
                 n_train_prompts=32, n_val_prompts=16, temperatures=[1.0, 1.6], sample_tokens=16, batch_size=8,
                 max_iters=6, warmup_iters=2, eval_interval=3, eval_iters=2, learning_rate=1e-4, min_lr=1e-5,
                 n_eval=16, max_new_tokens=12, eval_batch_size=16),
    # The course's student-scale run, on the small RM stage's comparisons.
    "small": dict(out_dir="runs/small/dpo", sft_dir="runs/small/sft", rm_dir="runs/small/reward_model",
                  max_iters=150, eval_interval=50, eval_iters=8, n_eval=100),
    # After the default RM stage: its 2,000 ranked prompts (~45,000 non-tied pairs), two epochs.
    "default": dict(),
}

# -----------------------------------------------------------------------------
# data: comparisons -> encoded pairs -> batches


@dataclass
class EncodedPair:
    """One comparison as token ids: prompt + chosen and prompt + rejected, each with its response mask."""
    chosen: list[int]              # prompt + chosen response ids
    chosen_mask: list[int]         # 1 on the chosen response's tokens
    rejected: list[int]            # prompt + rejected response ids
    rejected_mask: list[int]       # 1 on the rejected response's tokens
    ref_chosen: float = 0.0        # log π_ref(chosen | prompt), filled in by reference_logprobs
    ref_rejected: float = 0.0      # log π_ref(rejected | prompt)
    meta: dict = field(default_factory=dict)  # family, h, ... of the comparison (for reports only)


def preference_pairs(records) -> list[tuple[D.Preference, bool, bool]]:
    """(Preference, chosen_stopped, rejected_stopped) for every non-tied pair of the records.

    A Preference is one pair; a Ranking gives its K-choose-2 pairs minus ties and identical texts
    (rlhf.data.ranking_pairs). `stopped` comes from the ranking's per-response "stopped" list when the
    file has one (the RM stage writes it), else every response is taken to have ended with <|end|>.
    """
    out = []
    for rec in records:
        if isinstance(rec, D.Preference):
            out.append((rec, True, True))
            continue
        flags = rec.meta.get("stopped")
        stopped = dict(zip(rec.responses, flags)) if isinstance(flags, list) and len(flags) == len(rec.responses) else {}
        for pref in D.ranking_pairs(rec):
            out.append((pref, bool(stopped.get(pref.chosen, True)), bool(stopped.get(pref.rejected, True))))
    return out


def encode_pairs(records, tokenizer, max_len: int) -> list[EncodedPair]:
    """Encode every non-tied pair of `records` (Preferences or Rankings) for a model of context max_len."""
    pairs = []
    for pref, c_stop, r_stop in preference_pairs(records):
        c, cm = D.encode_response_with_mask(pref.prompt, pref.chosen, tokenizer, max_len, c_stop)
        r, rm = D.encode_response_with_mask(pref.prompt, pref.rejected, tokenizer, max_len, r_stop)
        if c == r:  # e.g. identical after truncation: no signal
            continue
        meta = {k: pref.meta[k] for k in ("family", "h") if k in pref.meta}
        pairs.append(EncodedPair(c, cm, r, rm, meta=meta))
    return pairs


def collate_pairs(pairs: list[EncodedPair], pad_id: int) -> dict[str, Tensor]:
    """A batch of B pairs, chosen and rejected padded to one width T (so one forward pass takes both):
    {chosen_idx, chosen_attention, chosen_mask, rejected_idx, rejected_attention, rejected_mask}: (B, T);
    ref_chosen, ref_rejected: (B,). Separate keys keep each pair's two halves together when DDP shards rows."""
    idx, attn = D.pad_right([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)   # (2B, T)
    resp, _ = D.pad_right([p.chosen_mask for p in pairs] + [p.rejected_mask for p in pairs], 0)  # (2B, T)
    B = len(pairs)
    return {"chosen_idx": idx[:B], "chosen_attention": attn[:B], "chosen_mask": resp[:B].float(),
            "rejected_idx": idx[B:], "rejected_attention": attn[B:], "rejected_mask": resp[B:].float(),
            "ref_chosen": torch.tensor([p.ref_chosen for p in pairs]),
            "ref_rejected": torch.tensor([p.ref_rejected for p in pairs])}


@torch.no_grad()
def reference_logprobs(ref_model, pairs: list[EncodedPair], pad_id: int, batch_size: int = 64,
                       device="cpu", progress: bool = False) -> None:
    """Fill in pair.ref_chosen / ref_rejected = log π_ref(y|x), once, in eval mode (π_ref is frozen)."""

    was_training = ref_model.training
    ref_model.eval()
    starts = range(0, len(pairs), max(1, batch_size // 2))
    for s in tqdm(starts, desc="reference log-probs", leave=False, disable=not progress, dynamic_ncols=True):
        chunk = pairs[s:s + max(1, batch_size // 2)]
        b = collate_pairs(chunk, pad_id)
        lp_c, lp_r = _pair_logprobs(ref_model, {k: v.to(device) for k, v in b.items()})
        for p, c, r in zip(chunk, lp_c.tolist(), lp_r.tolist()):
            p.ref_chosen, p.ref_rejected = c, r
    ref_model.train(was_training)


def _pair_logprobs(model, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(log π(chosen), log π(rejected)), both (B,), from ONE forward pass over the 2B sequences."""
    idx = torch.cat([batch["chosen_idx"], batch["rejected_idx"]])                 # (2B, T)
    attn = torch.cat([batch["chosen_attention"], batch["rejected_attention"]])    # (2B, T)
    resp = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])              # (2B, T)
    logps = sequence_logprobs(model, idx, attn, resp)                              # (2B,)
    B = batch["chosen_idx"].shape[0]
    return logps[:B], logps[B:]


class PairBatches:
    """get_batch(split, index) -> collate_pairs of batch_size pairs: a pure function of its arguments.

    train: epoch e visits the pairs in a permutation seeded by (seed, e) (exact resume; the same global
    batch on every DDP process, which keeps its own rows); val: consecutive pairs, wrapping around.
    """

    def __init__(self, train: list[EncodedPair], val: list[EncodedPair], batch_size: int, pad_id: int, seed: int = 0):
        if not train:
            raise ValueError("no training pairs (every comparison was a tie?)")
        self.pairs = {"train": train, "val": val or train}
        self.batch_size, self.pad_id, self.seed = batch_size, pad_id, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            n = len(self.pairs["train"])
            self._perms[epoch] = torch.randperm(n, generator=make_generator(self.seed, "dpo-epoch", epoch)).tolist()
        return self._perms[epoch]

    def __call__(self, split: str, index: int) -> dict[str, Tensor]:
        pairs, B = self.pairs[split], self.batch_size
        n = len(pairs)
        if split == "train":
            rows = [self._perm(p // n)[p % n] for p in range(index * B, (index + 1) * B)]
        else:
            rows = [(index * B + i) % n for i in range(B)]
        return collate_pairs([pairs[i] for i in rows], self.pad_id)


def dpo_loss_fn(model, batch: dict[str, Tensor], beta: float) -> tuple[Tensor, dict]:
    """loss_fn for minigpt.trainer.fit: DPO eq. 7 on a batch of pairs, plus the implicit-reward statistics."""
    pi_c, pi_r = _pair_logprobs(model, batch)                                      # (B,), (B,)
    loss, stats = dpo_loss(pi_c, pi_r, batch["ref_chosen"], batch["ref_rejected"], beta)
    with torch.no_grad():
        stats = {k: float(v) for k, v in stats.items()}
        stats["margin"] = stats["chosen_reward"] - stats["rejected_reward"]       # mean r̂_w - r̂_l
        stats["logp_chosen"] = float(pi_c.mean())                                 # watch both: DPO often lowers
        stats["logp_rejected"] = float(pi_r.mean())                               # the chosen log-prob too
    return loss, stats


# -----------------------------------------------------------------------------
# comparisons: from the RM run, a file, or simulated labelers


def load_comparisons(cfg: DPOConfig, tokenizer, sft_model, is_main: bool, info) -> tuple[list, list, str]:
    """(train records, val records, where they came from): --data; else the RM run's rankings; else
    simulated here exactly as the RM stage does (rlhf.comparisons.simulate_rankings), written to out_dir/data."""
    if cfg.data:
        _, records, val = D.load_comparison_files(cfg.data, cfg.val_data, cfg.skip_bad, "DPO")
        if val is not None:
            return records, val, cfg.data
        n_val = max(1, int(len(records) * cfg.val_fraction)) if len(records) > 1 else 0
        return records[:len(records) - n_val], records[len(records) - n_val:], cfg.data
    rm_train = os.path.join(cfg.rm_dir, "data", "rm_train.jsonl")
    rm_val = os.path.join(cfg.rm_dir, "data", "rm_val.jsonl")
    if os.path.exists(rm_train) and os.path.exists(rm_val):
        return D.load_rankings(rm_train), D.load_rankings(rm_val), os.path.join(cfg.rm_dir, "data")
    data_dir = os.path.join(cfg.out_dir, "data")
    train_path, val_path = os.path.join(data_dir, "dpo_train.jsonl"), os.path.join(data_dir, "dpo_val.jsonl")
    if is_main and not (cfg.resume and os.path.exists(train_path) and os.path.exists(val_path)):
        sim = LabelingConfig(data_seed=cfg.data_seed, max_new_tokens=cfg.sample_tokens, progress=cfg.progress)
        policies = [("sft", sft_model, list(cfg.temperatures))]
        t0 = time.time()
        D.write_jsonl(train_path, simulate_rankings("train", cfg.n_train_prompts, policies, tokenizer, sim))
        D.write_jsonl(val_path, simulate_rankings("val", cfg.n_val_prompts, policies, tokenizer, sim))
        print(f"comparisons: no {rm_train}; simulated {cfg.n_train_prompts} train + {cfg.n_val_prompts} val "
              f"rankings in {time.time() - t0:.1f}s -> {data_dir}")
    barrier(info)
    return D.load_rankings(train_path), D.load_rankings(val_path), data_dir


# -----------------------------------------------------------------------------
# the stage

DPO_PANELS = [("loss", "DPO loss (ln 2 at start)"), ("accuracy", "implicit-reward accuracy"),
              ("margin", "margin r̂_w - r̂_l"), ("chosen_reward", "r̂ chosen = β log π/π_ref"),
              ("rejected_reward", "r̂ rejected"), ("logp_chosen", "log π(chosen)"),
              ("logp_rejected", "log π(rejected)"), ("lr", "learning rate")]

def train_dpo(cfg: DPOConfig, evaluator=None) -> dict:
    """SFT policy + comparisons -> reference log-probs -> fit with the DPO loss -> gold evaluation against
    SFT (evaluator.versus, when the caller hands in a gold evaluator: rlhf.gold.GoldEvaluator) ->
    out_dir/model.pt, summary.json, dpo.png. Returns the summary."""
    t_start = time.time()
    if not os.path.exists(os.path.join(cfg.sft_dir, ckpt_io.MODEL_FILE)):     # before anything is written
        raise SystemExit(f"error: --sft_dir={cfg.sft_dir}: no {ckpt_io.MODEL_FILE}; "
                         f"run `python -m rlhf.sft` (with the same --preset) first")
    if cfg.data and not os.path.exists(cfg.data):
        raise SystemExit(f"error: --data={cfg.data}: no such file")
    if cfg.val_data and not cfg.data:
        raise SystemExit("error: --val_data holds out comparisons of your own --data; give --data too")
    device, info, run_dir = start_stage(cfg)
    try:
        seed_everything(cfg.seed)
        policy, tokenizer = ckpt_io.load_model(cfg.sft_dir, device)
        reference, _ = ckpt_io.load_model(cfg.sft_dir, device)
        disable_dropout(policy)         # with dropout, π ≠ π_ref at the start and the loss is not ln 2
        frozen(reference)
        pad_id, max_len = D.pad_token_id(tokenizer), policy.config.block_size

        train_records, val_records, source = load_comparisons(cfg, tokenizer, reference, info.is_main, info)
        seconds_data = time.time() - t_start
        train_pairs = encode_pairs(train_records, tokenizer, max_len)
        val_pairs = encode_pairs(val_records, tokenizer, max_len)
        if not train_pairs:
            raise SystemExit("error: the training comparisons contain no informative (non-tied) pair")
        t0 = time.time()
        with autocast_context(device, cfg.dtype):   # the precision fit() computes π's log-probs in
            for pairs in (train_pairs, val_pairs):
                reference_logprobs(reference, pairs, pad_id, cfg.ref_batch_size, device,
                                   progress=cfg.progress and info.is_main)
        seconds_ref = time.time() - t0
        steps = cfg.max_iters if cfg.max_iters > 0 else max(1, math.ceil(cfg.epochs * len(train_pairs) / cfg.batch_size))
        all_val = max(1, math.ceil(len(val_pairs) / cfg.batch_size))     # micro-batches covering every val pair
        eval_iters = min(cfg.eval_iters, all_val) if cfg.eval_iters > 0 else all_val
        run_cfg = replace(cfg, max_iters=steps, eval_iters=eval_iters)
        if info.is_main:
            print(f"dpo: {len(train_pairs)} train pairs from {len(train_records)} comparisons, {len(val_pairs)} val "
                  f"pairs ({source}); reference log-probs in {seconds_ref:.1f}s; {steps} steps of {cfg.batch_size} "
                  f"pairs (~{steps * cfg.batch_size * cfg.grad_accum / len(train_pairs):.1f} epochs), β = {cfg.beta}; "
                  f"device {device}")
        batches = PairBatches(train_pairs, val_pairs, cfg.batch_size, pad_id, seed=cfg.seed)

        def loss_fn(model, batch):
            return dpo_loss_fn(model, batch, cfg.beta)

        torch.manual_seed(cfg.seed + info.rank)
        result = fit(policy, loss_fn, batches, run_cfg, run_dir=run_dir, device=device, dist_info=info, desc="dpo")
        val = result.get("val", {})
        if not result["interrupted"] and run_cfg.eval_iters < all_val:    # the final numbers: every held-out pair
            val = evaluate(policy, loss_fn, batches, all_val, device, autocast_context(device, cfg.dtype), info)
        summary: dict = {}
        if info.is_main and not result["interrupted"]:
            policy.eval()
            records = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
            plot_path = plot_panels(records, os.path.join(run_dir, "dpo.png"), DPO_PANELS,
                                    title=f"DPO (β = {cfg.beta}) — {run_dir}")
            init_val = next((r for r in records if r.get("split") == "val"), {})
            summary = {"stage": "dpo", "beta": cfg.beta, "steps": result["step"],
                       "train_pairs": len(train_pairs), "val_pairs": len(val_pairs), "comparisons": source,
                       "val_pairs_during_training": min(len(val_pairs), run_cfg.eval_iters * cfg.batch_size),
                       "val_loss": val.get("loss"), "val_loss_init": init_val.get("loss"),
                       "val_accuracy": val.get("accuracy"), "val_margin": val.get("margin"),
                       "val_chosen_reward": val.get("chosen_reward"), "val_rejected_reward": val.get("rejected_reward"),
                       "train_loss": result["train_loss"], "tokens_per_s": result["tokens_per_s"],
                       "seconds_data": seconds_data, "seconds_reference": seconds_ref,
                       "seconds_train": result["train_seconds"], "device": str(device),
                       "world_size": info.world_size, "loss_curve": result["loss_curve"], "plot": plot_path}
            if evaluator is not None:
                t0 = time.time()
                gold = evaluator.versus(policy, reference, tokenizer)
                summary.update({"gold_score": gold["greedy"]["gold"], "sft_gold_score": gold["greedy"]["sft_gold"],
                                "gold_score_sampled": gold["sampled"]["gold"],
                                "sft_gold_score_sampled": gold["sampled"]["sft_gold"],
                                "win_rate_vs_sft": gold["greedy"]["win_rate"], "kl": gold.get("kl"),
                                "gold": gold, "seconds_eval": time.time() - t0})
                print("\n" + evaluator.format_versus(gold, "DPO"))
            summary["seconds"] = time.time() - t_start
            ckpt_io.save_model(run_dir, policy, tokenizer, extra={"stage": "dpo", "step": result["step"]})
            ckpt_io.write_summary(run_dir, summary)
            print(f"dpo: val loss {summary['val_loss_init'] or float('nan'):.4f} -> {summary['val_loss']:.4f}, "
                  f"implicit-reward accuracy {summary['val_accuracy']:.3f}, margin {summary['val_margin']:+.3f}; "
                  f"{summary['seconds']:.0f}s -> {run_dir} ({plot_path})")
        barrier(info)
        if result["interrupted"]:  # Ctrl-C: ckpt.pt is saved; the command exits 130, the pipeline does not go on
            raise KeyboardInterrupt
        return summary or result
    finally:
        teardown_distributed()


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(DPOConfig, argv, PRESETS, prog="python -m rlhf.dpo")
    # local import: the command line is the caller that hands the gold judge to the training code
    from rlhf.gold import GoldEvaluator
    evaluator = gold_evaluator(cfg, GoldEvaluator)
    return run_entry_point(lambda c: train_dpo(c, evaluator), cfg, errors=(D.DataError, FileNotFoundError))


def gold_evaluator(cfg: DPOConfig, evaluator_class):
    """The evaluator this stage's settings ask for (n_eval val prompts, eval_seed, max_new_tokens), built
    from the class the caller passes in (rlhf.gold.GoldEvaluator), or None when n_eval is 0."""
    if cfg.n_eval <= 0:
        return None
    return evaluator_class(cfg.n_eval, seed=cfg.eval_seed, max_new_tokens=cfg.max_new_tokens,
                           batch_size=cfg.eval_batch_size)


if __name__ == "__main__":
    utf8_console()
    main()
