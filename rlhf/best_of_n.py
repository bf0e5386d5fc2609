"""Best-of-N: sample N responses from the SFT policy and keep the one the reward model likes best.

    python -m rlhf.best_of_n --sft_dir=runs/default/sft --rm_dir=runs/default/reward_model --ns=1,2,4,8,16
    python -m rlhf.best_of_n --preset tiny --sft_dir=runs/tiny/sft --rm_dir=runs/tiny/reward_model

The cheapest way to optimise a reward model: no training at all, only N times the sampling (Stiennon et
al. 2020; Nakano et al. 2021, "WebGPT"). It is the baseline PPO has to beat *per unit of KL*: both move
the policy away from π_SFT, and the KL is what that costs. Best-of-N's KL to the policy it samples
from is bounded by a closed form (Stiennon et al. 2020 appendix; Hilton & Gao 2022; Beirami et al. 2024):

    KL(π_best-of-N || π) <= log N - (N - 1) / N                          (nats per response)

    N:   1      2      4      8      16     32     64
    KL:  0      0.19   0.64   1.20   1.84   2.50   3.17     (upper bounds)

The bound is exact when the N samples are distinct with probability 1 (a continuous space); a language
model often samples the same short reply twice, and then the true KL is smaller, sometimes much
smaller. Every "KL" of best-of-N in this project (json, report, plots) is this upper bound, so best-of-N
is charged at most as much KL as it spends: a comparison "PPO beats best-of-N at the same KL" is
conservative for PPO only when PPO's own KL is measured, as it is (rlhf.gold.kl_to_reference).
So a PPO policy at KL = 4 nats should be compared with best-of-~150 or more. Here N runs over --ns on one
fixed set of prompts (the world's val split by default: never the test split, which the pipeline's
final evaluation uses); each N reuses the first N of the same samples, so the curve is smooth. The
gold oracle scores the picks: the evaluation the reward model never sees.

Outputs (out_dir): best_of_n.json (gold mean and 95% CI, RM score, stop rate, KL per N) and
best_of_n.png (gold score against KL). With --ppo_dir, the PPO policy answers the same prompts (one
sample each) and its gold score and KL to the SFT policy are added: PPO against best-of-N at matched KL.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minigpt import checkpoint as ckpt_io
from minigpt.configurator import parse_config, utf8_console
from minigpt.files import make_dir
from minigpt.metrics import save_figure
from minigpt.trainer import pick_device, run_entry_point
from rlhf.evaluate import DECODINGS, EvalConfig, example_row
from rlhf.gold import gold_scores, kl_to_reference
from rlhf.reward import RewardModel
from rlhf.rollout import generate_responses, sample_batches, sampling_generator, score_responses, score_samples
from rlhf.stats import bootstrap_ci
from rlhf.world import make_prompts, score


def best_of_n_kl(n: int) -> float:
    """The upper bound log n - (n - 1) / n on KL(best-of-n || π), in nats (exact for distinct samples).
    best_of_n_kl(1) = 0; best_of_n_kl(4) ≈ 0.636."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    # BEGIN SOLUTION a5.best_of_n_kl
    return math.log(n) - (n - 1) / n
    # END SOLUTION


def n_for_kl(kl: float) -> float:
    """The (real-valued) N whose best-of-N KL bound equals `kl`: the inverse of best_of_n_kl, by bisection."""
    lo, hi = 1.0, 2.0
    while math.log(hi) - (hi - 1) / hi < kl:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.log(mid) - (mid - 1) / mid < kl else (lo, mid)
    return (lo + hi) / 2


def gold_at_kl(curve: list[dict], kl: float) -> float | None:
    """Best-of-N's gold score at a given KL, linearly interpolated between the N of `curve`.

    curve: [{"kl": ..., "gold": ...}, ...] sorted by KL (best_of_n_kl(1) = 0 first). None when `kl` lies
    beyond the largest N (no extrapolation). Example: curve [(0, 0.2), (0.19, 0.3), (0.64, 0.4)] at
    kl = 0.415 -> 0.35 (halfway between N = 2 and N = 4).
    """
    for a, b in zip(curve, curve[1:]):
        if a["kl"] <= kl <= b["kl"]:
            w = (kl - a["kl"]) / (b["kl"] - a["kl"]) if b["kl"] > a["kl"] else 0.0
            return a["gold"] + w * (b["gold"] - a["gold"])
    return curve[0]["gold"] if curve and kl <= curve[0]["kl"] else None


def pick_best(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Index of the highest score among the first n candidates of each row. scores (P, N_max) -> (P,).
    pick_best(tensor([[0., 2., 5.], [3., 1., 9.]]), 2) -> [1, 0] (the third column is not a candidate)."""
    # BEGIN SOLUTION a5.best_of_n
    return scores[:, :n].argmax(dim=1)
    # END SOLUTION


@torch.no_grad()
def sample_candidates(policy, reward_model, tokenizer, conversations: list, n: int, max_new_tokens: int,
                      temperature: float = 1.0, seed: int = 0, batch_size: int = 64,
                      no_stop_reward: float | None = -2.0, progress: str | None = None) -> dict:
    """n samples per conversation and the RM's score of each, as PPO would score them (progress: the
    description of a tqdm bar over the batches, None = no bar).

    Returns {"responses": [[str] * n] * P, "stopped": bool tensor (P, n), "scores": (P, n)} where a
    response without <|end|> scores no_stop_reward (as in rlhf.ppo), else the RM's score of its text
    (rlhf.rollout.score_samples). Both tensors are on the CPU, whatever the models' device: callers index
    CPU tables (the oracle's scores) with picks made from them, which CUDA indices cannot do.
    """
    flat = [c for c in conversations for _ in range(n)]                # prompt i at rows i*n .. i*n+n-1
    g = sampling_generator(policy, seed, "best_of_n")
    texts, stopped, scores = [], [], []
    for convs, s in sample_batches(policy, tokenizer, flat, max_new_tokens, temperature, batch_size, generator=g,
                                   progress=progress):
        r = score_samples(reward_model, tokenizer, convs, s, batch_size)     # (b,)
        if no_stop_reward is not None:
            r = torch.where(s.stopped, r, torch.full_like(r, no_stop_reward))
        scores.append(r)
        stopped.append(s.stopped)
        texts += [t for t, _, _ in s.texts(tokenizer)]
    P = len(conversations)
    return {"responses": [texts[i * n:(i + 1) * n] for i in range(P)],
            "stopped": torch.cat(stopped).view(P, n).cpu(), "scores": torch.cat(scores).view(P, n).cpu()}


def best_of_n_rows(policy, tokenizer, rm, rm_tokenizer, examples: list, n: int, cfg: EvalConfig,
                   progress: str | None = None, no_stop_reward: float | None = -2.0) -> list[dict]:
    """Best-of-N: for each prompt, N samples of `policy` (at cfg.temperature) and the one the reward model
    scores highest. It optimises the RM without any training (Nakano et al., 2021; Stiennon et al., 2020)
    and is the baseline RL should beat at equal KL (KL <= log N - (N-1)/N, best_of_n_kl). A response
    without <|end|> scores no_stop_reward, as in PPO's rollouts (None = the RM's score of the text).
    Rows as evaluate_model's, with the RM's pick under both decodings (there is no greedy best-of-N),
    plus "oracle_gold": the best gold score among the N (what a perfect reward model would pick) and
    "gold_by_n": for k = 1..N the gold of the RM's pick among the first k samples, i.e. best-of-k for every
    k from the same samples (gold_by_n[0] is one plain SFT sample, gold_by_n[-1] is "gold")."""
    convs = [ex.conversation for ex in examples]
    rep = [c for c in convs for _ in range(n)]                      # prompt i at positions i*n .. i*n+n-1
    gens = generate_responses(policy, tokenizer, rep, cfg.max_new_tokens, temperature=cfg.temperature,
                              batch_size=cfg.batch_size, seed=cfg.seed + 1, progress=progress)
    rewards = score_responses(rm, rm_tokenizer, rep, [g["response"] for g in gens], [g["stopped"] for g in gens],
                        cfg.batch_size)
    if no_stop_reward is not None:
        rewards = [r if g["stopped"] else no_stop_reward for r, g in zip(rewards, gens)]
    cand_rows = [{"prompt": c, "response": g["response"], "stopped": g["stopped"]} for c, g in zip(rep, gens)]
    golds = gold_scores(cand_rows)
    scores = torch.tensor(rewards, dtype=torch.float64).view(len(examples), n)            # (P, n)
    picks = torch.stack([pick_best(scores, k) for k in range(1, n + 1)], dim=1).tolist()  # (P, n): best of first k
    rows = []
    for i, ex in enumerate(examples):
        js = range(i * n, (i + 1) * n)
        by_k = [golds[i * n + p] for p in picks[i]]                  # gold of best-of-k, k = 1..n
        best = i * n + picks[i][-1]                                  # the RM's choice (first of equals)
        for decoding in DECODINGS:
            rows.append({**example_row(ex), "decoding": decoding, "response": gens[best]["response"],
                         "stopped": gens[best]["stopped"], "n_tokens": gens[best]["n_tokens"],
                         "gold": golds[best], "rm": rewards[best], "oracle_gold": max(golds[j] for j in js),
                         "mean_gold_of_n": float(np.mean([golds[j] for j in js])), "gold_by_n": by_k})
    return rows


@dataclass
class BestOfNConfig:
    """Best-of-N on the SFT policy: gold score against the KL bound log N - (N-1)/N, for several N."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"ns": ">= 1", "batch_size": ">= 1", "n_prompts": ">= 1", "temperature": "> 0", "n_boot": ">= 100"}
    out_dir: str = "runs/default/best_of_n"  # where best_of_n.json and best_of_n.png go
    sft_dir: str = "runs/default/sft"  # the policy that is sampled
    rm_dir: str = "runs/default/reward_model"  # the reward model that picks
    ppo_dir: str = ""                 # optional PPO run: its gold and KL to SFT on the same prompts, for the comparison
    ns: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])  # the N values (the largest is sampled)
    split: str = "val"                # world prompts to use ("val": tune on these; "test" is the final evaluation's)
    n_prompts: int = 128              # prompts
    seed: int = 0                     # prompt set and sampling seed
    max_new_tokens: int = 40          # response budget (as PPO's)
    temperature: float = 1.0          # sampling temperature (1.0: the policy itself, which the KL formula assumes)
    batch_size: int = 128             # sequences per generation batch
    no_stop_reward: float | None = -2.0  # score of a response without <|end|> (as PPO's); None = the RM's
    n_boot: int = 1000                # bootstrap resamples of the gold CI
    device: str = "auto"              # auto = cuda, else mps, else cpu
    progress: bool = True             # a progress bar over the sampling batches


PRESETS: dict[str, dict] = {
    "tiny": dict(out_dir="runs/tiny/best_of_n", sft_dir="runs/tiny/sft", rm_dir="runs/tiny/reward_model",
                 ns=[1, 2, 4], n_prompts=8, max_new_tokens=12, n_boot=100),
    # The course's student-scale run (after `python -m rlhf.pipeline --preset small`).
    "small": dict(out_dir="runs/small/best_of_n", sft_dir="runs/small/sft", rm_dir="runs/small/reward_model",
                  ns=[1, 2, 4, 8], n_prompts=64),
    "default": dict(),
}


def run_best_of_n(cfg: BestOfNConfig) -> dict:
    """Sample max(ns) per prompt once, then for each N: the RM's pick among the first N, judged by the oracle."""
    device = pick_device(cfg.device)
    policy, tokenizer = ckpt_io.load_model(cfg.sft_dir, device)
    rm = RewardModel.load(cfg.rm_dir, device)
    examples = make_prompts(cfg.split, cfg.n_prompts, seed=cfg.seed)
    n_max = max(cfg.ns)
    cand = sample_candidates(policy, rm, tokenizer, [ex.conversation for ex in examples], n_max,
                             cfg.max_new_tokens, cfg.temperature, cfg.seed, cfg.batch_size, cfg.no_stop_reward,
                             progress=f"best-of-{n_max} samples" if cfg.progress else None)
    gold = torch.tensor([[score(ex.conversation, r, stopped=bool(s)) for r, s in zip(rs, ss)]
                         for ex, rs, ss in zip(examples, cand["responses"], cand["stopped"].tolist())])  # (P, n_max)
    rows = []
    rows_idx = torch.arange(len(examples))
    for n in sorted(cfg.ns):
        best = pick_best(cand["scores"], n)                                   # (P,)
        g = gold[rows_idx, best].tolist()
        mean, lo, hi = bootstrap_ci(g, n_boot=cfg.n_boot, seed=cfg.seed)
        rows.append({"n": n, "kl": best_of_n_kl(n), "gold": mean, "gold_lo": lo, "gold_hi": hi,
                     "rm": cand["scores"][rows_idx, best].mean().item(),
                     "stop_rate": cand["stopped"][rows_idx, best].float().mean().item(),
                     "oracle_gold": gold[:, :n].max(1).values.mean().item()})   # what a perfect RM would pick
    result = {"config": asdict(cfg), "rows": rows}
    if cfg.ppo_dir:  # the PPO policy on the same prompts: one sample each, its gold score and its KL to SFT
        ppo_policy, _ = ckpt_io.load_model(cfg.ppo_dir, device)
        convs = [ex.conversation for ex in examples]
        one = sample_candidates(ppo_policy, rm, tokenizer, convs, 1, cfg.max_new_tokens, cfg.temperature,
                                cfg.seed + 1, cfg.batch_size, cfg.no_stop_reward,
                                progress="PPO samples" if cfg.progress else None)
        g = [score(c, r[0], stopped=bool(s[0])) for c, r, s in zip(convs, one["responses"], one["stopped"].tolist())]
        mean, lo, hi = bootstrap_ci(g, n_boot=cfg.n_boot, seed=cfg.seed)
        kl = kl_to_reference(ppo_policy, policy, tokenizer, convs, cfg.max_new_tokens, cfg.batch_size,
                             cfg.seed + 2, cfg.temperature)
        result["ppo"] = {"gold": mean, "gold_lo": lo, "gold_hi": hi, "kl": kl["mean"], "kl_ci": kl["ci"],
                         "rm": one["scores"].mean().item(), "matched_n": n_for_kl(max(kl["mean"], 0.0))}
    make_dir(cfg.out_dir, "--out_dir")
    ckpt_io.atomic_write_json(os.path.join(cfg.out_dir, "best_of_n.json"), result)
    result["plot"] = plot_best_of_n(result, os.path.join(cfg.out_dir, "best_of_n.png"))
    for r in rows:
        print(f"best-of-{r['n']:<3d} KL {r['kl']:.2f}  gold {r['gold']:.3f} [{r['gold_lo']:.3f}, {r['gold_hi']:.3f}]"
              f"  rm {r['rm']:+.2f}  stop {r['stop_rate']:.2f}  (perfect-RM pick: {r['oracle_gold']:.3f})")
    if "ppo" in result:
        p = result["ppo"]
        print(f"PPO         KL {p['kl']:.2f}  gold {p['gold']:.3f} [{p['gold_lo']:.3f}, {p['gold_hi']:.3f}]"
              f"  rm {p['rm']:+.2f}  (best-of-N at the same KL: N = {p['matched_n']:.1f})")
    return result


def plot_best_of_n(result: dict, path: str) -> str:
    """Gold score against KL: the best-of-N curve and PPO's point when known, each with its 95% CIs and the
    perfect-RM ceiling where `result` has them (rows' gold_lo/gold_hi/oracle_gold, ppo's gold_lo/gold_hi/kl_ci).
    The pipeline draws its plots/best_of_n_vs_ppo.png with this too, from metrics.json (no CIs per N there)."""
    rows = result["rows"]
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    kl, gold = [r["kl"] for r in rows], [r["gold"] for r in rows]
    if all("gold_lo" in r for r in rows):
        ax.errorbar(kl, gold, yerr=[[r["gold"] - r["gold_lo"] for r in rows], [r["gold_hi"] - r["gold"] for r in rows]],
                    fmt="o-", capsize=3, color="tab:orange", label="best-of-N (RM picks)")
    else:
        ax.plot(kl, gold, "o-", color="tab:orange", label="best-of-N (SFT samples, RM picks)")
    if all("oracle_gold" in r for r in rows):
        ax.plot(kl, [r["oracle_gold"] for r in rows], "s:", alpha=0.6, label="best-of-N (gold picks: ceiling)")
    for r in rows:
        ax.annotate(f"N={r['n']}", (r["kl"], r["gold"]), fontsize=7, xytext=(3, -10), textcoords="offset points")
    ppo = result.get("ppo")
    if ppo:
        g, k = ppo["gold"], ppo["kl"]
        lo, hi = ppo.get("gold_lo", g), ppo.get("gold_hi", g)
        klo, khi = ppo.get("kl_ci") or [k, k]
        ax.errorbar([k], [g], xerr=[[k - klo], [khi - k]], yerr=[[g - lo], [hi - g]], fmt="*", ms=12, capsize=3,
                    color="tab:green", label="PPO (one sample per prompt)")
    ax.set_xlabel("KL to SFT, nats per response (best-of-N: the bound log N - (N-1)/N)", fontsize=9)
    ax.set_ylabel("gold score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.95)
    return save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(BestOfNConfig, argv, PRESETS, prog="python -m rlhf.best_of_n")
    if not cfg.ns:
        raise SystemExit("error: --ns is empty: give the N values to compare, e.g. --ns=1,2,4,8")
    return run_entry_point(run_best_of_n, cfg, errors=(FileNotFoundError, ValueError))


if __name__ == "__main__":
    utf8_console()
    main()
