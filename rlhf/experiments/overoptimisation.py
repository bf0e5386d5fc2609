"""Reward-model over-optimisation in miniature (Gao, Schulman & Hilton 2022, "Scaling Laws for Reward
Model Overoptimization"): optimise the run's reward model (the *proxy*) harder and harder, and watch the
gold oracle (the *gold* reward, which nothing here trains on) against the distance travelled.

    python -m rlhf.experiments overoptimisation --run=runs/default        # ~20 min on 2 (shared) CPU cores
    python -m rlhf.experiments overoptimisation --preset tiny --run=runs/tiny   # seconds (numbers mean nothing)

Gao et al. measure both rewards as functions of d = sqrt(KL(π || π_init)) for two optimisers, and find
that the proxy keeps rising while the gold score rises, peaks and falls (Goodhart's law). They fit

    best-of-N:  R_gold(d) - R_gold(0) = d (α_bon - β_bon d)                         (their eq. 1)
    RL:         R_gold(d) - R_gold(0) = d (α_RL - β_RL log d)                        (their eq. 2)

Here, on the same val prompts of the instruction world:
  PPO        rlhf.ppo.train_ppo from the run's SFT model against its reward model, with a weak FIXED β
             (kl_target = None: no adaptive controller reins the KL in) for longer than the default; every
             eval_interval iterations: the proxy's score, the gold score (sampled, T = 1) and KL(π || π_SFT)
             in nats per response, exact per token on the same answers (common.TrackingEvaluator)
  best-of-N  N = 1, 2, 4, ..., 64 SFT samples per prompt, the proxy's favourite kept (rlhf.best_of_n):
             its proxy and gold scores, at KL <= log N - (N - 1)/N (an upper bound; exact only for
             distinct samples, so best-of-N's points may lie further right than they should)

Outputs (OUT = --out, default RUN/experiments/overoptimisation): metrics.json, overoptimisation.png (proxy
and gold against sqrt(KL), both optimisers on the same axes, with the fits), report.md (the reading:
the measured peak), ppo/ (the PPO run: metrics.jsonl, dashboard.png, model.pt, evaluations.json) and
best_of_n.json. A finished part is reused when the command is run again with the same settings.

Simplifications relative to Gao et al.: one proxy reward model and one policy size (they vary both, and
fit how α and β scale with the RM's size); the gold reward is the world's exact oracle, not a 6B RM
trained on human labels; the proxy is trained on simulated labelers who rank by that oracle; one seed;
128 prompts, so each gold point carries a bootstrap CI of about ±0.06-0.08.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from minigpt import checkpoint as ckpt_io
from minigpt.configurator import parse_config, utf8_console
from minigpt.files import make_dir
from minigpt.metrics import save_figure
from minigpt.trainer import pick_device, run_entry_point
from rlhf.best_of_n import best_of_n_kl, pick_best, sample_candidates
from rlhf.data import DataError
from rlhf.experiments.common import output_dir, ppo_config, read_json, run_paths, tracked_ppo, write_text
from rlhf.reward import RewardModel
from rlhf.stats import bootstrap_ci, format_number, paired_bootstrap_ci
from rlhf.world import make_prompts, score


@dataclass
class OveroptimisationConfig:
    """Proxy and gold reward against sqrt(KL) for PPO with a weak fixed β and for best-of-N (Gao et al. 2022)."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"ppo_iters": ">= 1", "kl_coef": ">= 0", "learning_rate": "> 0", "eval_interval": ">= 1",
              "n_prompts": ">= 1", "ns": ">= 1", "bon_prompts_per_batch": ">= 1", "bon_batch_size": ">= 1",
              "n_boot": ">= 100"}
    run: str = "runs/default"        # the finished pipeline run: its sft/ (the start) and reward_model/ (the proxy)
    out: str = ""                    # output directory ("" = RUN/experiments/overoptimisation)
    ppo_preset: str = "default"      # rlhf.ppo preset the PPO settings start from (the fields below override it)
    ppo_iters: int = 150             # PPO iterations (the default PPO runs 80, at a KL target of 0.5 nats)
    kl_coef: float = 0.01            # the fixed β of the KL penalty (no adaptive controller; the default PPO's
                                     # controller starts at 0.3 and aims at 0.5 nats)
    learning_rate: float = 3e-5      # PPO's Adam learning rate, decayed linearly to 0 over ppo_iters (default PPO:
                                     # 1e-4, with which KL reached 2.5 nats within 10 iterations at this β)
    eval_interval: int = 10          # evaluate the PPO policy every this many iterations (and at the end)
    n_prompts: int = 128             # val prompts: every PPO evaluation and best-of-N answer the same ones
    eval_seed: int = 0               # seed of those prompts and of PPO's evaluation samples
    ns: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])  # best-of-N's N (max(ns) samples
                                     # per prompt, each N judged on the first N of them)
    bon_prompts_per_batch: int = 16  # prompts whose max(ns) samples are drawn together (one progress step)
    bon_batch_size: int = 256        # sequences per generation batch of best-of-N
    seed: int = 1337                 # PPO's seed (sampling, shuffling)
    n_boot: int = 1000               # bootstrap resamples per 95% CI
    device: str = "auto"             # auto = cuda, else mps, else cpu
    progress: bool = True            # tqdm progress bars


PRESETS: dict[str, dict] = {
    # seconds, on a `python -m rlhf.pipeline --preset tiny` run: the plumbing, not a result
    "tiny": dict(run="runs/tiny", ppo_preset="tiny", ppo_iters=4, kl_coef=0.02, eval_interval=2, n_prompts=8,
                 ns=[1, 2, 4], bon_prompts_per_batch=4, bon_batch_size=32, n_boot=100),
    # on a `python -m rlhf.pipeline` (default preset) run: 19.5 minutes measured on 2 shared CPU cores
    "default": dict(),
}


# -----------------------------------------------------------------------------
# the two optimisers


def run_ppo(cfg: OveroptimisationConfig, paths: dict, out: str) -> tuple[dict, list[dict]]:
    """PPO with a weak fixed β, judged every eval_interval iterations (common.tracked_ppo)."""
    pcfg = ppo_config(cfg.ppo_preset, out_dir=os.path.join(out, "ppo"), sft_dir=paths["sft"],
                      rm_dir=paths["reward_model"], max_iters=cfg.ppo_iters, init_kl_coef=cfg.kl_coef,
                      kl_target=None, learning_rate=cfg.learning_rate, eval_interval=cfg.eval_interval,
                      n_eval_prompts=cfg.n_prompts, eval_seed=cfg.eval_seed, seed=cfg.seed, n_print_samples=1,
                      device=cfg.device, progress=cfg.progress, resume=False)
    summary, evals = tracked_ppo(pcfg)
    points = []
    for e in evals:
        g, lo, hi = bootstrap_ci(e["gold_per_prompt"], n_boot=cfg.n_boot, seed=cfg.eval_seed)
        points.append({"iter": e["iter"], "kl": e["kl"], "sqrt_kl": math.sqrt(e["kl"]), "rm": e["rm"], "gold": g,
                       "gold_ci": [lo, hi], "gold_greedy": e["gold_greedy"], "stop_rate": e["stop_rate"],
                       "mean_chars": e["mean_chars"], "samples": e["samples"][:2]})
    per_prompt = [e["gold_per_prompt"] for e in evals]
    greedy = None
    if "gold_greedy_per_prompt" in evals[0]:          # greedy answers: SFT's against the last policy's, paired
        m, lo, hi = paired_bootstrap_ci(evals[-1]["gold_greedy_per_prompt"], evals[0]["gold_greedy_per_prompt"],
                                        n_boot=cfg.n_boot, seed=cfg.eval_seed)
        greedy = {"start": evals[0]["gold_greedy"], "end": evals[-1]["gold_greedy"], "end_minus_start": {
            "mean": m, "ci": [lo, hi]}, "max": max(e["gold_greedy"] for e in evals)}
    return {"config": asdict(pcfg), "points": points, "seconds_ppo": summary.get("seconds"), "greedy": greedy,
            **shape(points, per_prompt, cfg, "iter")}, evals


def run_best_of_n(cfg: OveroptimisationConfig, paths: dict, out: str, conversations: list) -> dict:
    """For each N of cfg.ns the proxy's pick among the first N of max(ns) SFT samples per prompt: its
    proxy score, its gold score, and what a perfect judge would pick among the same N (bon_scores)."""
    proxy, gold, seconds = bon_scores(cfg, paths, out, conversations)                 # (P, n_max) each
    rows = torch.arange(len(conversations))
    points, per_prompt = [], []
    for n in sorted(cfg.ns):
        if n > proxy.shape[1]:
            raise RuntimeError(f"N = {n} but only {proxy.shape[1]} samples per prompt")
        best = pick_best(proxy, n)                                           # (P,)
        g_rows = gold[rows, best].tolist()
        g, lo, hi = bootstrap_ci(g_rows, n_boot=cfg.n_boot, seed=cfg.eval_seed)
        kl = best_of_n_kl(n)
        points.append({"n": n, "kl": kl, "sqrt_kl": math.sqrt(kl), "rm": proxy[rows, best].mean().item(), "gold": g,
                       "gold_ci": [lo, hi], "perfect_rm_gold": gold[:, :n].max(1).values.mean().item()})
        per_prompt.append(g_rows)
    return {"points": points, "seconds_sampling": seconds, **shape(points, per_prompt, cfg, "n")}


def bon_scores(cfg: OveroptimisationConfig, paths: dict, out: str, conversations: list) -> tuple:
    """(proxy, gold, seconds): max(ns) SFT samples per prompt (PPO's response budget and temperature),
    scored by the proxy (no_stop_reward for a reply without <|end|>, as in PPO) and by the oracle, both
    (P, max(ns)) float64. Cached in OUT/best_of_n.json and read back when made with the same settings."""
    path = os.path.join(out, "best_of_n.json")
    n_max, chunk = max(cfg.ns), cfg.bon_prompts_per_batch
    key = {"run": os.path.abspath(cfg.run), "n_max": n_max, "n_prompts": cfg.n_prompts, "eval_seed": cfg.eval_seed,
           "ppo_preset": cfg.ppo_preset, "chunk": chunk}
    cached = read_json(path)
    if cached and cached.get("key") == key and "proxy" in cached:
        return (torch.tensor(cached["proxy"], dtype=torch.float64), torch.tensor(cached["gold"], dtype=torch.float64),
                cached["seconds"])
    t0 = time.time()
    pcfg = ppo_config(cfg.ppo_preset)
    device = pick_device(cfg.device)
    policy, tokenizer = ckpt_io.load_model(paths["sft"], device)
    rm = RewardModel.load(paths["reward_model"], device)
    proxy, gold = [], []
    for i in tqdm(range(0, len(conversations), chunk), desc=f"best-of-{n_max}", disable=not cfg.progress,
                  dynamic_ncols=True):
        convs = conversations[i:i + chunk]
        c = sample_candidates(policy, rm, tokenizer, convs, n_max, pcfg.max_new_tokens, pcfg.temperature,
                              seed=cfg.eval_seed * 100_000 + i, batch_size=cfg.bon_batch_size,
                              no_stop_reward=pcfg.no_stop_reward)
        proxy.append(c["scores"].double())                                   # (chunk, n_max)
        gold.append(torch.tensor([[score(conv, r, stopped=bool(s)) for r, s in zip(rs, ss)] for conv, rs, ss
                                  in zip(convs, c["responses"], c["stopped"].tolist())], dtype=torch.float64))
    proxy, gold = torch.cat(proxy), torch.cat(gold)                          # (P, n_max)
    seconds = time.time() - t0
    ckpt_io.atomic_write_json(path, {"key": key, "seconds": seconds, "proxy": proxy.tolist(), "gold": gold.tolist()})
    return proxy, gold, seconds


# -----------------------------------------------------------------------------
# the shape of a curve: start, peak, end, their paired differences, and Gao et al.'s fit


def fit_gold(points: list[dict], form: str) -> dict | None:
    """Least squares of Δgold = gold(d) - gold(0) on d = sqrt(KL) in Gao et al.'s forms:
    "bon": Δ = d (α - β d); "rl": Δ = d (α - β ln d). Returns {"alpha", "beta", "d_peak" (the fitted
    curve's maximum, None if it has none), "form"}, or None with fewer than 2 points beyond d = 0.
    Example: points at d = 1, 2 with Δ = 0.5, 0 give the "bon" fit α = 1, β = 0.5, d_peak = 1."""
    d = np.array([p["sqrt_kl"] for p in points])
    y = np.array([p["gold"] for p in points]) - points[0]["gold"]
    keep = d > 1e-9
    if keep.sum() < 2:
        return None
    d, y = d[keep], y[keep]
    second = d * d if form == "bon" else d * np.log(d)
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([d, -second], 1), y, rcond=None)
    if beta <= 0:
        d_peak = None
    elif form == "bon":
        d_peak = alpha / (2 * beta)                      # d/dd [α d - β d²] = 0
    else:
        d_peak = math.exp(alpha / beta - 1)              # d/dd [α d - β d ln d] = α - β (ln d + 1) = 0
    return {"form": form, "alpha": float(alpha), "beta": float(beta), "d_peak": d_peak}


def fitted_curve(fit: dict, d: np.ndarray) -> np.ndarray:
    """Δgold of a fit_gold result at the distances d (d = 0 gives 0)."""
    d = np.maximum(d, 1e-12)
    second = d * d if fit["form"] == "bon" else d * np.log(d)
    return fit["alpha"] * d - fit["beta"] * second


def shape(points: list[dict], per_prompt: list[list[float]], cfg: OveroptimisationConfig, label: str) -> dict:
    """Where the gold curve peaks and how far it rose and fell: paired differences on the same prompts
    (peak - start, end - peak, end - start) with 95% CIs, the proxy's rise, and the fit."""
    peak = int(np.argmax([p["gold"] for p in points]))

    def diff(a: int, b: int) -> dict:
        m, lo, hi = paired_bootstrap_ci(per_prompt[a], per_prompt[b], n_boot=cfg.n_boot, seed=cfg.eval_seed)
        return {"mean": m, "ci": [lo, hi]}

    def at(i: int) -> dict:
        p = points[i]
        return {label: p[label], "kl": p["kl"], "sqrt_kl": p["sqrt_kl"], "gold": p["gold"], "rm": p["rm"]}

    return {"start": at(0), "peak": at(peak), "end": at(len(points) - 1), "peak_index": peak,
            "peak_is_last": peak == len(points) - 1,
            "peak_minus_start": diff(peak, 0), "end_minus_peak": diff(len(points) - 1, peak),
            "end_minus_start": diff(len(points) - 1, 0),
            "rm_rise": points[-1]["rm"] - points[0]["rm"], "rm_max": max(p["rm"] for p in points),
            "fit": fit_gold(points, "bon" if label == "n" else "rl")}


# -----------------------------------------------------------------------------
# plot and report


def plot(result: dict, path: str) -> str:
    """Two panels against sqrt(KL): the proxy RM's score and the gold score, PPO and best-of-N on the same
    axes; gold with 95% CIs, the SFT start as a dotted line, Gao et al.'s fits dashed."""
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax_rm, ax_gold = fig.subplots(1, 2)
    styles = {"ppo": ("tab:green", "o-", "PPO, fixed β = {b:g}"), "best_of_n": ("tab:orange", "s-", "best-of-N")}
    for key, (color, fmt, label) in styles.items():
        pts = result[key]["points"]
        d = [p["sqrt_kl"] for p in pts]
        label = label.format(b=result["config"]["kl_coef"])
        ax_rm.plot(d, [p["rm"] for p in pts], fmt, color=color, label=label, ms=4)
        ax_gold.errorbar(d, [p["gold"] for p in pts], yerr=[[p["gold"] - p["gold_ci"][0] for p in pts],
                                                            [p["gold_ci"][1] - p["gold"] for p in pts]],
                         fmt=fmt, color=color, capsize=2, ms=4, label=label)
        fit = result[key].get("fit")
        if fit:
            grid = np.linspace(0, max(d) * 1.02, 100)
            ax_gold.plot(grid, pts[0]["gold"] + fitted_curve(fit, grid), "--", color=color, alpha=0.6, lw=1,
                         label=f"fit: d(α − β{' d' if fit['form'] == 'bon' else ' ln d'}), α={fit['alpha']:.3f}, "
                               f"β={fit['beta']:.3f}")
        for p in pts:
            tag = f"N={p['n']}" if key == "best_of_n" else (f"{p['iter']}" if p is pts[-1] or p["iter"] % (
                2 * result["config"]["eval_interval"]) == 0 else "")
            if tag:
                ax_gold.annotate(tag, (p["sqrt_kl"], p["gold"]), fontsize=7, xytext=(3, -9), textcoords="offset points",
                                 color=color)
    start = result["ppo"]["points"][0]
    for ax, k in ((ax_rm, "rm"), (ax_gold, "gold")):
        ax.axhline(start[k], ls=":", color="gray", lw=1, label="SFT (start)")
        ax.set_xlabel("sqrt(KL to SFT), sqrt(nats)  (best-of-N: the bound log N − (N−1)/N)", fontsize=8)
        top = ax.secondary_xaxis("top", functions=(np.square, lambda k: np.sqrt(np.maximum(k, 0))))
        top.set_xlabel("KL (nats)", fontsize=8)
        ax.grid(alpha=0.3)
    ax_rm.set_ylabel("proxy: the run's reward model")
    ax_gold.set_ylabel("gold: the oracle's score (sampled, T = 1)")
    ax_rm.set_title("proxy reward (what is optimised)", fontsize=10)
    ax_gold.set_title("gold reward (PPO points labelled by iteration)", fontsize=10)
    ax_rm.legend(fontsize=7, loc="best")
    ax_gold.legend(fontsize=6.5, loc="best")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _ci(d: dict) -> str:
    return f"{d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"


def reading(name: str, r: dict, unit: str) -> str:
    """One paragraph on one optimiser's curve, from the numbers only: where gold peaked, whether the rise
    to the peak and the fall after it are outside the noise (paired 95% CIs), and the proxy's rise."""
    s, p, e = r["start"], r["peak"], r["end"]

    def where(x: dict) -> str:
        return f"{'N =' if unit == 'n' else 'iteration'} {x[unit]} (KL {x['kl']:.2f} nats, sqrt {x['sqrt_kl']:.2f})"

    rise_sig = r["peak_minus_start"]["ci"][0] > 0
    fall_sig = r["end_minus_peak"]["ci"][1] < 0
    text = f"**{name}**: the proxy went from {s['rm']:+.2f} to {e['rm']:+.2f} (highest {r['rm_max']:+.2f}); "
    if r["peak_index"] == 0:
        return text + (f"gold never rose above the start ({s['gold']:.3f}); at {where(e)} it was {e['gold']:.3f}, "
                       f"{_ci(r['end_minus_start'])} from the start.")
    text += (f"gold went from {s['gold']:.3f} at the start to a peak of **{p['gold']:.3f} at {where(p)}**")
    if r["peak_is_last"]:
        text += (f", the last point measured: within this range gold had not turned down "
                 f"(gain over the start {_ci(r['peak_minus_start'])}).")
        return text
    text += (f" ({'a gain outside the noise' if rise_sig else 'a gain within the noise'}: "
             f"{_ci(r['peak_minus_start'])}), then {e['gold']:.3f} at {where(e)}: "
             f"{'a fall outside the noise' if fall_sig else 'a fall within the noise'}, "
             f"{_ci(r['end_minus_peak'])} from the peak, {_ci(r['end_minus_start'])} from the start.")
    if rise_sig and fall_sig and r["rm_rise"] > 0:
        text += " Proxy up, gold up then down: over-optimisation, as Gao et al. describe."
    return text


def greedy_reading(g: dict | None) -> str:
    """A sentence on PPO's greedy answers (what the pipeline's greedy evaluation sees), SFT vs the end."""
    if not g:
        return ""
    d = g["end_minus_start"]
    sig = "outside" if d["ci"][0] > 0 or d["ci"][1] < 0 else "within"
    return (f" Greedy answers: gold {g['start']:.3f} (SFT) → {g['end']:.3f} at the end, {_ci(d)} ({sig} the "
            f"noise; highest along the way {g['max']:.3f}).")


def write_report(result: dict, path: str) -> str:
    cfg, ppo_r, bon = result["config"], result["ppo"], result["best_of_n"]
    lines = [
        "# Reward-model over-optimisation (Gao et al. 2022, in miniature)", "",
        f"Run: `{cfg['run']}`; command: `python -m rlhf.experiments overoptimisation --run={cfg['run']}"
        f"{' --out=' + cfg['out'] if cfg['out'] else ''}` (preset of rlhf.ppo: {cfg['ppo_preset']}). "
        f"{cfg['n_prompts']} val prompts, the same for every point; gold = the oracle's score of one sampled "
        f"(T = 1) answer per prompt; proxy = the run's reward model on the same answer.", "",
        "![proxy and gold reward against sqrt(KL)](overoptimisation.png)", "",
        "## Reading", "",
        "- " + reading(f"PPO, fixed β = {cfg['kl_coef']:g}, {cfg['ppo_iters']} iterations", ppo_r, "iter")
        + greedy_reading(ppo_r.get("greedy")),
        "- " + reading("best-of-N", bon, "n"),
    ]
    for name, r in (("PPO", ppo_r), ("best-of-N", bon)):
        f = r.get("fit")
        if f:
            peak = "no maximum" if f["d_peak"] is None else f"a maximum at sqrt(KL) = {f['d_peak']:.2f} " \
                                                            f"(KL {f['d_peak'] ** 2:.2f} nats)"
            lines.append(f"- Fit of Gao et al.'s form for {name}: α = {f['alpha']:.3f}, β = {f['beta']:.3f}, "
                         f"{peak}; a fit to {len(r['points']) - 1} noisy points, a summary, not a law.")
    lines += ["- The measured peaks above are what the experiment shows; KL for best-of-N is the upper bound "
              "log N − (N−1)/N (short replies repeat, so its true KL is smaller and its points belong further "
              "left); PPO's KL is measured (exact per-token KL on the judged answers).", "",
              "## PPO evaluations", "",
              "| iteration | KL (nats) | sqrt KL | proxy RM | gold, sampled [95% CI] | gold, greedy | stop rate |",
              "|---|---|---|---|---|---|---|"]
    for p in ppo_r["points"]:
        lines.append(f"| {p['iter']} | {p['kl']:.2f} | {p['sqrt_kl']:.2f} | {p['rm']:+.3f} | {p['gold']:.3f} "
                     f"[{p['gold_ci'][0]:.3f}, {p['gold_ci'][1]:.3f}] | {p['gold_greedy']:.3f} | "
                     f"{p['stop_rate']:.2f} |")
    lines += ["", "## Best-of-N", "", "| N | KL bound | sqrt KL | proxy RM | gold [95% CI] | perfect-RM pick |",
              "|---|---|---|---|---|---|"]
    for p in bon["points"]:
        lines.append(f"| {p['n']} | {p['kl']:.2f} | {p['sqrt_kl']:.2f} | {p['rm']:+.3f} | {p['gold']:.3f} "
                     f"[{p['gold_ci'][0]:.3f}, {p['gold_ci'][1]:.3f}] | {p['perfect_rm_gold']:.3f} |")
    last = ppo_r["points"][-1]
    if last.get("samples"):
        lines += ["", f"Answers of the last PPO policy (iteration {last['iter']}):", ""]
        lines += [f"- {s['prompt']!r} → {s['response']!r} (gold {s['gold']:.2f}, proxy {s['rm']:+.2f})"
                  for s in last["samples"]]
    lines += ["", f"Compute: PPO {format_number(ppo_r['seconds_ppo'], 0)} s of training (its evaluations included), "
              f"best-of-N {format_number(bon['seconds_sampling'], 0)} s of sampling and scoring; this invocation "
              f"took {format_number(result['seconds']['total'], 0)} s (finished parts are read back)."]
    return write_text(path, "\n".join(lines) + "\n")


# -----------------------------------------------------------------------------
# the experiment


def run(cfg: OveroptimisationConfig) -> dict:
    """PPO and best-of-N on the same prompts -> OUT/metrics.json, OUT/overoptimisation.png, OUT/report.md."""
    t0 = time.time()
    if not cfg.ns or list(cfg.ns) != sorted(set(cfg.ns)):       # the curve runs from the first N to the last
        raise SystemExit(f"error: --ns={','.join(map(str, cfg.ns))}: list the N values increasing, e.g. 1,2,4,8")
    paths = run_paths(cfg.run, ("sft", "reward_model"))
    out = output_dir(cfg.run, cfg.out, "overoptimisation")
    make_dir(out, "--out")
    t = time.time()
    ppo_result, _ = run_ppo(cfg, paths, out)
    seconds_ppo = time.time() - t
    t = time.time()
    conversations = [ex.conversation for ex in make_prompts("val", cfg.n_prompts, seed=cfg.eval_seed)]
    bon = run_best_of_n(cfg, paths, out, conversations)
    seconds_bon = time.time() - t
    result = {"experiment": "overoptimisation", "config": asdict(cfg), "out": out, "ppo": ppo_result,
              "best_of_n": bon, "seconds": {"ppo": seconds_ppo, "best_of_n": seconds_bon}}
    result["plot"] = plot(result, os.path.join(out, "overoptimisation.png"))
    result["seconds"]["total"] = time.time() - t0
    result["report"] = write_report(result, os.path.join(out, "report.md"))
    ckpt_io.atomic_write_json(os.path.join(out, "metrics.json"), result)
    for name, r, unit in (("PPO", ppo_result, "iter"), ("best-of-N", bon, "n")):
        s, p, e = r["start"], r["peak"], r["end"]
        print(f"{name:<10} gold {s['gold']:.3f} -> peak {p['gold']:.3f} at {unit} {p[unit]} (KL {p['kl']:.2f}) -> "
              f"{e['gold']:.3f} at KL {e['kl']:.2f}; proxy {s['rm']:+.2f} -> {e['rm']:+.2f}")
    print(f"overoptimisation: {out}/report.md, {result['plot']} ({result['seconds']['total']:.0f}s)")
    return result


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(OveroptimisationConfig, argv, PRESETS, prog="python -m rlhf.experiments overoptimisation")
    return run_entry_point(run, cfg, errors=(DataError, FileNotFoundError))


if __name__ == "__main__":
    utf8_console()
    main()
