"""How good is a reward model? Metrics of its scores on held-out ranked comparisons.

    from rlhf.rm_metrics import evaluate_rankings
    m = evaluate_rankings(items, rewards)    # items: RankedItem-like (.ids, .ranks, .meta); rewards: [[r_1..r_K]]

- pairwise accuracy against the labeler's ranking, and the *ceiling*: how often a second, independent
  labeler agrees with the first (InstructGPT's labelers agreed ~73% of the time);
- accuracy against the gold oracle's order, and the RM-gold Pearson / Spearman correlations;
- accuracy per task family, per H and per pair of candidate sources;
- calibration: predicted P(first preferred) = σ(r₁ − r₂) against the share a labeler preferred, with
  its expected calibration error (plot_calibration draws it).

The reward model stage (rlhf/reward_model.py) calls these after training; rlhf/rm_probes.py asks
one-factor questions (right vs near miss, concise vs chatty) instead.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minigpt.metrics import save_figure

if TYPE_CHECKING:
    from rlhf.reward_model import RankedItem


def agree(a: float, b: float) -> float:
    """1 if a > b, 0.5 if equal, 0 if a < b: credit for ordering the first of a pair above the second."""
    return 1.0 if a > b else (0.5 if a == b else 0.0)


def _pearson(x, y) -> float | None:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(x) -> np.ndarray:
    """Average ranks (ties share the mean rank), for the Spearman correlation."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks


def evaluate_rankings(items: list[RankedItem], rewards: list[list[float]], n_bins: int = 10, seed: int = 0) -> dict:
    """Held-out metrics of a reward model from its rewards on ranked items.

    Pairs are the labeler's strict preferences (ties and identical texts excluded), as in training:
      accuracy         share the RM orders like the labeler (equal rewards count 1/2)
      label_agreement  share a second labeler (meta ranks_2) orders like the first: the ceiling
      gold_accuracy    on pairs whose gold scores differ: the RM vs the oracle (labeler_gold_accuracy alike)
      by_family, by_h  accuracy and ceiling per task family and per H
      by_pair_sources  the same per kind of pair (demo-sft, sft-sft, ...; from meta "source")
      rm_gold_pearson / _spearman over all responses, and _within_prompt (per-prompt means removed)
      calibration      predicted P(i beats j) = σ(r_i - r_j) vs the observed share, in n_bins bins; ECE
    """
    rng = random.Random(seed)
    acc, ceil, groups = [], [], {}
    gold_rm, gold_lab = [], []
    cal_p, cal_y = [], []
    all_r, all_g, within_r, within_g = [], [], [], []
    n_pairs_total = n_informative = 0
    for it, r in zip(items, rewards):
        K = len(it.ids)
        gold, ranks_2, sources = it.meta.get("gold"), it.meta.get("ranks_2"), it.meta.get("source")
        if gold is not None:
            all_r += r
            all_g += gold
            within_r += [v - float(np.mean(r)) for v in r]
            within_g += [v - float(np.mean(gold)) for v in gold]
        for i in range(K):
            for j in range(i + 1, K):
                n_pairs_total += 1
                if gold is not None and gold[i] != gold[j]:
                    better, worse = (i, j) if gold[i] > gold[j] else (j, i)
                    gold_rm.append(agree(r[better], r[worse]))
                    gold_lab.append(agree(-it.ranks[better], -it.ranks[worse]))
                if not (it.ranks[i] < it.ranks[j] and it.texts[i] != it.texts[j]):
                    continue
                n_informative += 1
                a = agree(r[i], r[j])
                acc.append(a)
                c = agree(-ranks_2[i], -ranks_2[j]) if ranks_2 is not None else None
                if c is not None:
                    ceil.append(c)
                keys = [f"{k}/{it.meta[k]}" for k in ("family", "h") if k in it.meta]   # world data only
                if sources is not None:  # which kinds of candidate were compared: demo-sft, sft-sft, ...
                    keys.append("pair/" + "-".join(sorted(str(sources[k]).split("@")[0] for k in (i, j))))
                for key in keys:
                    g = groups.setdefault(key, {"acc": [], "ceil": []})
                    g["acc"].append(a)
                    if c is not None:
                        g["ceil"].append(c)
                a_first = rng.random() < 0.5                                     # random orientation
                d = r[i] - r[j] if a_first else r[j] - r[i]
                cal_p.append(1.0 / (1.0 + math.exp(-max(min(d, 50.0), -50.0))))
                cal_y.append(1.0 if a_first else 0.0)

    def mean(xs):
        return float(np.mean(xs)) if xs else None

    def group(prefix):
        return {k.split("/", 1)[1]: {"accuracy": mean(v["acc"]), "ceiling": mean(v["ceil"]), "pairs": len(v["acc"])}
                for k, v in sorted(groups.items()) if k.startswith(prefix + "/")}

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    p, y = np.asarray(cal_p), np.asarray(cal_y)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = (p >= edges[b]) & ((p < edges[b + 1]) if b < n_bins - 1 else (p <= edges[b + 1]))
        if sel.any():
            bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(sel.sum()),
                         "predicted": float(p[sel].mean()), "observed": float(y[sel].mean())})
            ece += sel.sum() / len(p) * abs(p[sel].mean() - y[sel].mean())
    return {
        "accuracy": mean(acc), "label_agreement": mean(ceil), "pairs": len(acc),
        "informative_share": n_informative / n_pairs_total if n_pairs_total else None,
        "gold_accuracy": mean(gold_rm), "labeler_gold_accuracy": mean(gold_lab), "gold_pairs": len(gold_rm),
        "by_family": group("family"), "by_h": group("h"), "by_pair_sources": group("pair"),
        "rm_gold_pearson": _pearson(all_r, all_g),
        "rm_gold_spearman": _pearson(_ranks(all_r), _ranks(all_g)) if len(all_r) > 1 else None,
        "rm_gold_pearson_within_prompt": _pearson(within_r, within_g),
        "calibration": {"bins": bins, "ece": float(ece) if len(p) else None},
    }


def by_source(items: list[RankedItem], rewards: list[list[float]]) -> dict:
    """Mean reward (and gold, when known) per candidate source: demo, sft@1, sft@1.6, ..."""
    acc: dict[str, dict[str, list]] = {}
    for it, r in zip(items, rewards):
        sources = it.meta.get("source")
        if sources is None:
            continue
        gold = it.meta.get("gold") or [None] * len(r)
        for s, v, g in zip(sources, r, gold):
            d = acc.setdefault(s, {"reward": [], "gold": []})
            d["reward"].append(v)
            if g is not None:
                d["gold"].append(g)
    return {s: {"reward": float(np.mean(d["reward"])), "gold": float(np.mean(d["gold"])) if d["gold"] else None,
                "n": len(d["reward"])} for s, d in sorted(acc.items())}


def plot_calibration(calibration: dict, path: str, title: str = "reward model calibration") -> str:
    """PNG: predicted P(chosen) = σ(r_i - r_j) per bin vs the share the labeler chose; the diagonal is perfect."""

    fig = Figure(figsize=(4.8, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfectly calibrated")
    bins = calibration["bins"]
    if bins:
        ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-", color="tab:blue",
                label=f"reward model (ECE {calibration['ece']:.3f})")
        for b in bins:
            ax.annotate(str(b["n"]), (b["predicted"], b["observed"]), fontsize=7, textcoords="offset points",
                        xytext=(3, -9), color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(first preferred) = σ(r₁ − r₂)")
    ax.set_ylabel("observed share preferred by the labeler")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
