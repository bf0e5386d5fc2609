"""The run's records: metrics.jsonl (one JSON object per line) and the PNG plots drawn from it.

    from minigpt.metrics import plot_panels, read_metrics
    plot_panels(read_metrics("runs/default/pretrain/metrics.jsonl"), "runs/default/pretrain/panels.png", [("loss", "loss"), ("lr", "lr")])

    MetricsLogger                   append-only metrics.jsonl; truncate(step) on resume, rank 0 only
    read_metrics                    every record of a metrics.jsonl ([] when there is none)
    plot_metrics                    loss.png: train curve, its moving average, val points, the lr below
    plot_panels                     a grid of small plots, one per metric, train lines and val dots

The training loop (minigpt.trainer.fit) and the RL stages write the log; minigpt.trainer re-exports these
names, so `from minigpt.trainer import read_metrics` keeps working. Plots use matplotlib's Agg canvas
directly (no pyplot, no global backend change) and are written atomically.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minigpt import checkpoint as ckpt_io
from minigpt.files import atomic_write

__all__ = ["MetricsLogger", "read_metrics", "plot_metrics", "plot_panels"]


class MetricsLogger:
    """Append-only metrics.jsonl: one JSON object per line, e.g. {"step": 10, "split": "train", "loss": 2.3}.

    On resume from step s, truncate(s) drops the lines of steps >= s (they are about to be recomputed),
    so the file describes one continuous run. Only rank 0 should hold a logger (others pass enabled=False).
    """

    def __init__(self, path: str, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def reset(self) -> None:
        if self.enabled:
            ckpt_io.atomic_write_text(self.path, "")

    def truncate(self, step: int) -> None:
        if not self.enabled:
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) < step]
        ckpt_io.atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in clean.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")


def read_metrics(path: str) -> list[dict]:
    """All records of a metrics.jsonl file ([] when it does not exist)."""
    return ckpt_io.read_json_lines(path) if os.path.exists(path) else []


def plot_metrics(records: list[dict] | str, path: str, title: str = "", key: str = "loss") -> str:
    """Loss curve PNG: the train `key` per step (faint), its moving average, and validation points;
    the learning rate below. Uses the Agg canvas directly (no global matplotlib backend change)."""
    if isinstance(records, str):
        records = read_metrics(records)
    train = [r for r in records if r.get("split") == "train" and r.get(key) is not None]
    val = [r for r in records if r.get("split") == "val" and r.get(key) is not None]
    fig = Figure(figsize=(7, 5.5))
    FigureCanvasAgg(fig)
    ax, ax_lr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if train:
        steps = [r["step"] for r in train]
        ys = [r[key] for r in train]
        ax.plot(steps, ys, color="tab:blue", alpha=0.25, lw=0.8)
        window = max(1, len(ys) // 25)
        smooth = np.convolve(ys, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="tab:blue", label=f"train {key} (mean of {window})")
        if train[0].get("lr") is not None:
            ax_lr.plot(steps, [r["lr"] for r in train], color="tab:gray")
    if val:
        ax.plot([r["step"] for r in val], [r[key] for r in val], "o-", color="tab:orange", label=f"val {key}")
    ax.set_ylabel(key)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_panels(records: list[dict] | str, path: str, panels: list[tuple], x: str = "step",
                title: str = "") -> str:
    """One small plot per (metric key, label) against `x`: train records as lines, records with
    split == "val" as dots; a tuple of keys draws one line per key in the same panel. A PNG written
    atomically (Agg canvas, no pyplot state)."""
    if isinstance(records, str):
        records = read_metrics(records)
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.9 * rows))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (key, label) in zip(axes, panels):
        keys = key if isinstance(key, tuple) else (key,)
        for k in keys:
            for split, style in (("train", "-"), ("val", "o-")):
                pts = [(r[x], r[k]) for r in records if r.get(k) is not None and x in r
                       and (r.get("split") == "val") == (split == "val")]
                if pts:
                    name = split if len(keys) == 1 else (k if split == "train" else f"{k} ({split})")
                    ax.plot(*zip(*pts), style, ms=3, lw=1.0, alpha=0.85, label=name)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Write a matplotlib Figure to `path` as PNG atomically (a temporary file, then a rename), creating
    the directory; returns the path."""
    atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format="png"))
    return path
