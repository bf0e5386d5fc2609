"""The pipeline's PNG plots: loss curves, reward-model accuracy and calibration, the PPO dashboard,
gold score per stage (overall, per task family, per H), PPO against best-of-N per nat of KL, and
PPO / GRPO / DPO / best-of-N against SFT (plot_methods_vs_sft).

    python -m rlhf.plots runs/default          # (re)draw every plot of a finished run into runs/default/plots/

Every function reads what the stages already wrote (metrics.jsonl, summary.json, the evaluation's
results) and writes one PNG atomically; nothing here computes a number the report does not show.
Matplotlib is used through its object API (Figure + Agg canvas), so no global backend state changes.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minigpt.checkpoint import one_line_errors, read_json_file, read_summary
from minigpt.configurator import CommandParser, utf8_console
from minigpt.metrics import read_metrics, save_figure
from rlhf.best_of_n import plot_best_of_n
from rlhf.ppo import plot_dashboard

# Stage colours, the same in every plot.
COLORS = {"base": "tab:gray", "sft": "tab:blue", "sft_large": "tab:cyan", "best_of_n": "tab:orange",
          "ppo": "tab:green", "dpo": "tab:purple", "grpo": "tab:brown"}
LABELS = {"base": "base (pretrained)", "sft": "SFT", "sft_large": "SFT, larger model", "best_of_n": "best-of-N",
          "ppo": "PPO", "dpo": "DPO", "grpo": "GRPO"}


def _figure(w: float, h: float):
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str, dpi: int = 100) -> str:
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def plot_loss_curves(stage_dirs: dict[str, str], path: str) -> str | None:
    """One panel per supervised stage (pretrain, SFT, reward model...): train loss (faint + smoothed)
    and validation loss against the optimizer step."""
    panels = [(name, read_metrics(os.path.join(d, "metrics.jsonl"))) for name, d in stage_dirs.items()]
    panels = [(n, r) for n, r in panels if any(x.get("loss") is not None for x in r)]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = _figure(4.2 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (name, recs) in zip(axes, panels):
        train = [(r["step"], r["loss"]) for r in recs if r.get("split") == "train" and r.get("loss") is not None]
        val = [(r["step"], r["loss"]) for r in recs if r.get("split") == "val" and r.get("loss") is not None]
        if train:
            s, y = map(np.asarray, zip(*train))
            ax.plot(s, y, color="tab:blue", alpha=0.25, lw=0.8)
            w = max(1, len(y) // 20)
            ax.plot(s[w - 1:], np.convolve(y, np.ones(w) / w, mode="valid"), color="tab:blue", label="train")
        if val:
            ax.plot(*zip(*val), "o-", color="tab:orange", ms=3, label="val")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reward_model(rm_dir: str, path: str) -> str | None:
    """Left: held-out pairwise accuracy during training against the labelers' agreement (the ceiling).
    Right: calibration, predicted P(i beats j) = σ(r_i − r_j) vs the share the labeler preferred."""
    summary = read_summary(rm_dir) or {}
    recs = read_metrics(os.path.join(rm_dir, "metrics.jsonl"))
    if not summary and not recs:
        return None
    fig = _figure(9, 3.8)
    ax, ax_cal = fig.subplots(1, 2)
    for split, style in (("train", "-"), ("val", "o-")):
        pts = [(r["step"], r["accuracy"]) for r in recs if r.get("split") == split and r.get("accuracy") is not None]
        if pts:
            ax.plot(*zip(*pts), style, ms=3, alpha=0.5 if split == "train" else 1.0, label=f"{split} accuracy")
    if summary.get("val_accuracy") is not None:
        ax.axhline(summary["val_accuracy"], color="tab:green", ls=":", label=f"final held-out {summary['val_accuracy']:.2f}")
    if summary.get("label_agreement") is not None:
        ax.axhline(summary["label_agreement"], color="tab:red", ls="--",
                   label=f"labeler agreement {summary['label_agreement']:.2f}")
    ax.axhline(0.5, color="gray", lw=0.8)
    ax.set_ylim(0.3, 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("pairwise accuracy")
    ax.set_title("reward model accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax_cal.plot([0, 1], [0, 1], "--", color="gray", lw=1)
    bins = (summary.get("calibration") or {}).get("bins") or []
    if bins:
        ece = summary["calibration"].get("ece")
        ax_cal.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-",
                    label=f"ECE {ece:.3f}" if ece is not None else None)
        ax_cal.legend(fontsize=8, loc="upper left")
    ax_cal.set_xlim(0, 1)
    ax_cal.set_ylim(0, 1)
    ax_cal.set_xlabel("predicted P(first preferred)")
    ax_cal.set_ylabel("observed share")
    ax_cal.set_title("calibration (held-out pairs)")
    ax_cal.grid(alpha=0.3)
    return _save(fig, path)


def plot_ppo_dashboard(ppo_dir: str, path: str) -> str | None:
    """The PPO stage's own dashboard (rlhf.ppo.plot_dashboard) of its metrics.jsonl."""
    metrics = os.path.join(ppo_dir, "metrics.jsonl")
    if not read_metrics(metrics):
        return None
    return plot_dashboard(metrics, path, title="PPO")


def plot_gold_by_stage(stages: dict[str, dict], path: str) -> str | None:
    """Bar charts of the mean gold score of each stage: overall with 95% CIs (greedy and sampled
    decoding), per task family, and per H. `stages` is evaluate_run(...)["stages"]."""
    names = [s for s in COLORS if s in stages] + \
            [s for s in stages if s not in COLORS]
    if not names:
        return None
    greedy = {s: stages[s].get("greedy") or {} for s in names}
    fams = sorted({f for s in names for f in greedy[s].get("per_family", {})})
    hs = sorted({h for s in names for h in greedy[s].get("per_h", {})})
    fig = _figure(15, 4.2)
    ax0, ax1, ax2 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.2, 3, 1.2]})
    width = 0.8 / len(names)

    x = np.arange(2)
    for i, s in enumerate(names):
        means, errs = [], [[], []]
        for d in ("greedy", "sampled"):
            r = stages[s].get(d) or {}
            m = r.get("gold_score", np.nan)
            lo, hi = r.get("gold_ci") or [m, m]
            means.append(m)
            errs[0].append(max(m - lo, 0) if lo is not None else 0)
            errs[1].append(max(hi - m, 0) if hi is not None else 0)
        ax0.bar(x + (i - (len(names) - 1) / 2) * width, means, width, yerr=errs, capsize=2,
                color=COLORS.get(s), label=LABELS.get(s, s))
    ax0.set_xticks(x, ["greedy", "sampled"])
    ax0.set_ylabel("mean gold score (95% CI)")
    ax0.set_title("gold score per stage")
    ax0.set_ylim(0, 1)
    ax0.legend(fontsize=7)

    for ax, keys, field, title in ((ax1, fams, "per_family", "per task family (greedy)"),
                                   (ax2, hs, "per_h", "per H (greedy)")):
        xs = np.arange(len(keys))
        for i, s in enumerate(names):
            vals = [greedy[s].get(field, {}).get(k, np.nan) for k in keys]
            ax.bar(xs + (i - (len(names) - 1) / 2) * width, vals, width, color=COLORS.get(s), label=LABELS.get(s, s))
        ax.set_xticks(xs, keys, rotation=30 if len(keys) > 4 else 0, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(title)
    for ax in (ax0, ax1, ax2):
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_best_of_n_vs_ppo(metrics: dict, path: str) -> str | None:
    """Gold score against KL to SFT: the best-of-k curve (k = 1..N, the RM picks among the same N SFT samples;
    KL <= log k - (k-1)/k, the upper bound) and PPO's sampled policy at its measured KL with its 95% CIs, drawn by
    rlhf.best_of_n.plot_best_of_n from metrics.json's best_of_n.curve and ppo blocks; None when either is missing."""
    curve = (metrics.get("best_of_n") or {}).get("curve")
    ppo = metrics.get("ppo") or {}
    if not curve or ppo.get("kl") is None or ppo.get("gold_score_sampled") is None:
        return None
    g = ppo["gold_score_sampled"]
    lo, hi = ppo.get("gold_ci_sampled") or [g, g]
    return plot_best_of_n({"rows": curve, "ppo": {"gold": g, "gold_lo": lo, "gold_hi": hi, "kl": ppo["kl"],
                                                  "kl_ci": ppo.get("kl_ci")}}, path)


def plot_methods_vs_sft(results: dict, path: str, title: str = "") -> str | None:
    """PPO, GRPO, DPO and best-of-N against the SFT model they all start from, from evaluate_run's result:
    left, the paired gold difference to SFT with its 95% CI (greedy and sampled decoding); right, the
    sampled gold score against KL(policy || SFT) in nats per response. None when no method was evaluated."""
    names = [s for s in ("best_of_n", "ppo", "grpo", "dpo") if f"{s}_vs_sft" in results.get("comparisons", {})]
    if not names:
        return None
    fig = _figure(11, 3.8)
    ax0, ax1 = fig.subplots(1, 2)
    width = 0.8 / len(names)
    for i, s in enumerate(names):
        c = results["comparisons"][f"{s}_vs_sft"]
        for j, d in enumerate(("greedy", "sampled")):
            if s == "best_of_n" and d == "greedy":
                continue                           # best-of-N re-ranks samples: it has no greedy answer
            diff = c[d]["gold_diff"]
            m, (lo, hi) = diff["mean"], diff["ci"]
            ax0.bar(j + (i - (len(names) - 1) / 2) * width, m, width, yerr=[[m - lo], [hi - m]], capsize=3,
                    color=COLORS[s], label=LABELS[s] if j == 0 else None)
    ax0.axhline(0, c="k", lw=0.8)
    ax0.set_xticks([0, 1], ["greedy", "sampled"])
    ax0.set_ylabel("gold score minus SFT's (paired, 95% CI)")
    ax0.set_title("gain over the SFT model")
    ax0.legend(fontsize=8)
    sft = results["stages"]["sft"]["sampled"]
    ax1.axhline(sft["gold_score"], c=COLORS["sft"], ls=":", label="SFT (KL 0)")
    for s in names:
        st = results["stages"][s]
        kl = st.get("kl", {}).get("mean")
        if kl is None and s == "best_of_n":
            kl = results.get("best_of_n_kl")      # the analytic bound log N - (N-1)/N, if the caller gave it
        if kl is None:
            continue
        g = st["sampled"]
        lo, hi = g["gold_ci"]
        ax1.errorbar([kl], [g["gold_score"]], yerr=[[g["gold_score"] - lo], [hi - g["gold_score"]]], fmt="o",
                     capsize=3, color=COLORS[s], label=LABELS[s])
    ax1.set_xscale("symlog", linthresh=0.1)
    ax1.set_xlabel("KL(policy || SFT), nats per response")
    ax1.set_ylabel("gold score, sampled (95% CI)")
    ax1.set_title("what each method paid in KL")
    ax1.legend(fontsize=8)
    for ax in (ax0, ax1):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_all(run_dir: str, stages: dict[str, dict] | None = None, metrics: dict | None = None) -> dict[str, str]:
    """Every plot of a pipeline run into run_dir/plots/; returns {name: path} of those drawn.
    stages: eval/results.json's "stages", metrics: metrics.json's content (both read from run_dir if None)."""
    out = os.path.join(run_dir, "plots")
    if stages is None:
        path = os.path.join(run_dir, "eval", "results.json")
        stages = (read_json_file(path) or {}).get("stages", {})
    if metrics is None:
        path = os.path.join(run_dir, "metrics.json")
        metrics = read_json_file(path) or {}
    loss_dirs = {name: os.path.join(run_dir, d) for name, d in
                 (("pretrain", "pretrain"), ("SFT", "sft"), ("reward model", "reward_model"),
                  ("pretrain (large)", "pretrain_large"), ("SFT (large)", "sft_large"))
                 if os.path.isdir(os.path.join(run_dir, d))}
    drawn = {
        "loss_curves": plot_loss_curves(loss_dirs, os.path.join(out, "loss_curves.png")),
        "reward_model": plot_reward_model(os.path.join(run_dir, "reward_model"), os.path.join(out, "reward_model.png")),
        "ppo_dashboard": plot_ppo_dashboard(os.path.join(run_dir, "ppo"), os.path.join(out, "ppo_dashboard.png")),
        "gold_by_stage": plot_gold_by_stage(stages, os.path.join(out, "gold_by_stage.png")),
        "best_of_n_vs_ppo": plot_best_of_n_vs_ppo(metrics, os.path.join(out, "best_of_n_vs_ppo.png")),
    }
    return {k: v for k, v in drawn.items() if v}


def main(argv: list[str] | None = None) -> dict:
    ap = CommandParser(prog="python -m rlhf.plots", description="Draw a pipeline run's plots into RUN_DIR/plots/ "
                       "(loss curves, reward model, PPO dashboard, gold by stage, best-of-N against PPO).")
    ap.add_argument("run_dir", metavar="RUN_DIR", help="a pipeline run directory (python -m rlhf.pipeline --out)")
    run_dir = ap.parse_args(argv).run_dir
    if not os.path.isdir(run_dir):
        raise SystemExit(f"error: {run_dir}: no such run directory")
    with one_line_errors():                         # a run file that does not load: one line naming it
        paths = plot_all(run_dir)
    if not paths:
        raise SystemExit(f"error: {run_dir}: nothing to plot (no stage directory or evaluation of a pipeline run; "
                         f"`python -m rlhf.pipeline --out {run_dir}` makes them)")
    for name, p in paths.items():
        print(f"{name}: {p}")
    return paths


if __name__ == "__main__":
    utf8_console()
    main()
