"""Statistics of evaluation, as pure functions of numbers (tested on synthetic inputs with known answers).

    bootstrap_ci(values)            mean and percentile-bootstrap 95% interval (Efron)
    paired_bootstrap_ci(a, b)       the same for the paired difference a[i] - b[i] (resampling prompts)
    win_rates(a, b)                 wins / ties / losses of A against B, two win rates, a CI
    summarize(rows), compare_rows   one model's cached answers; two models on the same prompts

InstructGPT (Ouyang et al. 2022, §4) reports win rates against its SFT baseline with 95% intervals; so
do we, and every comparison is paired by prompt: both models answered the same prompts, and resampling
prompts (not the two lists independently) removes the prompt-to-prompt variance they share.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np


def format_number(x, digits: int = 3) -> str:
    """A number for a closing line: "n/a" for None, else `digits` decimals (-0.000 shows as 0.000)."""
    return "n/a" if x is None else f"{round(x, digits) + 0.0:.{digits}f}"


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
                 ) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of `values` and its percentile-bootstrap (1 - alpha) interval.

    Resample the n values with replacement n_boot times, take the mean of each resample, and report
    the alpha/2 and 1 - alpha/2 quantiles of those means (Efron's percentile interval).

        >>> bootstrap_ci([1.0, 1.0, 1.0])
        (1.0, 1.0, 1.0)

    No values -> (nan, nan, nan); one value -> (x, x, x). Seeded: same input, same interval.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    n = x.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return (mean, mean, mean)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))      # (n_boot, n) resampled positions
    means = x[idx].mean(axis=1)                     # (n_boot,)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (mean, float(lo), float(hi))


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, alpha: float = 0.05,
                        seed: int = 0) -> tuple[float, float, float]:
    """(mean(a - b), lo, hi) for paired scores a[i], b[i] of the same prompt i.

    Resampling *prompts* (pairs), not the two lists independently, removes the prompt-to-prompt
    variance both models share, so the interval of the difference is much narrower than the two
    separate intervals suggest. The difference is significant at level alpha when 0 is outside.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    return bootstrap_ci(a - b, n_boot=n_boot, alpha=alpha, seed=seed)


def win_rates(a: Sequence[float], b: Sequence[float], tol: float = 1e-9, n_boot: int = 2000,
              seed: int = 0) -> dict:
    """Pairwise comparison of A against B on the same prompts: wins, ties, losses and two win rates.

    A wins prompt i when a[i] > b[i] + tol, loses when a[i] < b[i] - tol, ties otherwise.
      win_rate       = wins / (wins + losses)        over the non-tied prompts (None: all tie, n/a)
      win_rate_half  = (wins + ties / 2) / n         ties count half (InstructGPT's convention)
    plus a bootstrap CI of win_rate_half (each prompt's outcome is 1, 0.5 or 0).

        >>> r = win_rates([1, 0.5, 0, 1], [0, 0.5, 1, 0.5])
        >>> (r["wins"], r["ties"], r["losses"], r["win_rate"], r["win_rate_half"])
        (2, 1, 1, 0.6666666666666666, 0.625)
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    d = a - b
    wins = int((d > tol).sum())
    losses = int((d < -tol).sum())
    n = int(d.size)
    ties = n - wins - losses
    outcome = np.where(d > tol, 1.0, np.where(d < -tol, 0.0, 0.5))  # (n,) per-prompt outcome
    half, lo, hi = bootstrap_ci(outcome, n_boot=n_boot, seed=seed)
    return {
        "n": n, "wins": wins, "ties": ties, "losses": losses,
        "win_rate": wins / (wins + losses) if wins + losses else None,   # no non-tied pair: undefined
        "win_rate_half": half if n else math.nan,
        "win_rate_half_ci": [lo, hi],
        "tie_rate": ties / n if n else math.nan,
    }


def mean_ci_dict(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """{"mean", "ci": [lo, hi], "n"}: the JSON shape every CI takes in metrics.json."""
    mean, lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"mean": mean, "ci": [lo, hi], "n": len(values)}


def group_means(values: Sequence[float], keys: Sequence[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean and bootstrap CI of `values` within each group: {key: {"mean", "ci", "n"}}, keys sorted.

        >>> g = group_means([1.0, 0.0, 0.5], ["a", "b", "a"])
        >>> g["a"]["mean"], g["b"]["n"]
        (0.75, 1)
    """
    if len(values) != len(keys):
        raise ValueError(f"{len(values)} values but {len(keys)} keys")
    buckets: dict[str, list[float]] = defaultdict(list)
    for v, k in zip(values, keys):
        buckets[k].append(float(v))
    return {k: mean_ci_dict(buckets[k], n_boot=n_boot, seed=seed) for k in sorted(buckets)}


def response_stats(n_tokens: Sequence[int], stopped: Sequence[bool]) -> dict:
    """Mean response length in tokens and the share of responses that ended their turn."""
    n = len(n_tokens)
    if n != len(stopped):
        raise ValueError(f"{n} lengths but {len(stopped)} stop flags")
    if n == 0:
        return {"mean_tokens": math.nan, "stop_rate": math.nan}
    return {"mean_tokens": float(np.mean(n_tokens)), "stop_rate": float(np.mean(np.asarray(stopped, dtype=bool)))}


def summarize(rows: Iterable[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """Everything about one model's answers to one prompt set (rows as cached in eval/STAGE.jsonl).

    Each row has "gold" (float), "family", "h", "n_tokens", "stopped" and optionally "rm".
    Returns {"gold_score", "gold_ci", "n", "per_family", "per_h", "mean_tokens", "stop_rate"[, "rm_score"]}.
    """
    rows = list(rows)
    gold = [r["gold"] for r in rows]
    mean, lo, hi = bootstrap_ci(gold, n_boot=n_boot, seed=seed)
    out = {
        "gold_score": mean, "gold_ci": [lo, hi], "n": len(rows),
        "per_family": {k: v["mean"] for k, v in group_means(gold, [r["family"] for r in rows], 1, seed).items()},
        "per_h": {k: v["mean"] for k, v in group_means(gold, [r["h"] for r in rows], 1, seed).items()},
        **response_stats([r["n_tokens"] for r in rows], [r["stopped"] for r in rows]),
    }
    if rows and all(r.get("rm") is not None for r in rows):
        out["rm_score"] = float(np.mean([r["rm"] for r in rows]))
    return out


def _keyed(rows: Sequence[dict]) -> list[tuple[tuple, dict]]:
    """[((id, k), row)]: k counts the earlier rows with the same id, so repeated prompts stay distinct."""
    seen: dict = {}
    out = []
    for r in rows:
        k = seen.get(r["id"], 0)
        seen[r["id"]] = k + 1
        out.append(((r["id"], k), r))
    return out


def compare_rows(rows_a: Sequence[dict], rows_b: Sequence[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """A vs B on the same prompts (matched by "id", repeats in order): gold win rates, paired gold difference,
    RM win rates.

    Returns {"gold": win_rates(...), "gold_diff": {"mean", "ci"}, "rm": win_rates(...) or None, "n"}.
    """
    # A prompt may occur more than once in an evaluation set (the world can draw the same prompt twice), and
    # its sampled answers then differ: pair the k-th row of an id in A with the k-th row of that id in B.
    by_key = {key: r for key, r in _keyed(rows_b)}
    pairs = [(r, by_key[key]) for key, r in _keyed(rows_a) if key in by_key]
    if not pairs:
        raise ValueError("the two sets of rows share no prompt id")
    ga = [p[0]["gold"] for p in pairs]
    gb = [p[1]["gold"] for p in pairs]
    diff, lo, hi = paired_bootstrap_ci(ga, gb, n_boot=n_boot, seed=seed)
    out = {"n": len(pairs), "gold": win_rates(ga, gb, n_boot=n_boot, seed=seed),
           "gold_diff": {"mean": diff, "ci": [lo, hi]}, "rm": None}
    if all(p[0].get("rm") is not None and p[1].get("rm") is not None for p in pairs):
        out["rm"] = win_rates([p[0]["rm"] for p in pairs], [p[1]["rm"] for p in pairs], n_boot=n_boot, seed=seed)
    return out
