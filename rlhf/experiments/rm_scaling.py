"""What the reward model needs: its quality against the number of comparisons and its size, and what
that buys PPO.

    python -m rlhf.experiments rm_scaling --run=runs/default             # ~35 min on 2 (shared) CPU cores
    python -m rlhf.experiments rm_scaling --preset tiny --run=runs/tiny  # seconds (numbers mean nothing)

The default run's reward model reaches about 64% held-out accuracy against the labelers' 78% agreement
and tells a right answer from a one-edit near miss on barely more than half of the helpful prompts
(README, "Results"). Is that a matter of data or of capacity? InstructGPT (Ouyang et al. 2022, §3.5)
trained one 6B RM on ~33k prompts' rankings; Gao et al. (2022) find RM quality rising about linearly in
the log of its data and parameters. Here, with everything else held fixed:

  comparisons  RMs trained like the run's (RUN/reward_model/config.json) on fractions of its ranked
               prompts: the first f x n of RUN/reward_model/data/rm_train.jsonl for f <= 1 (nested
               subsets), all of them plus freshly simulated ones (same labelers and candidate recipe,
               another data seed) for f > 1; the 1x point is the run's own RM. The same epochs, so fewer
               comparisons also mean fewer steps.
  size         the same 1x comparisons, the RM's backbone started from a smaller SFT model ("LAYERSxWIDTH":
               pretrained and fine-tuned like the run's models, with the run's tokenizer, only the shape changed)
  read-outs    held-out accuracy on RUN/reward_model/data/rm_val.jsonl (the same pairs for every RM) against
               the labelers' agreement there (the ceiling), accuracy against the oracle's order, and the
               one-factor probes of rlhf.rm_probes (right vs near miss, concise vs chatty, ...)
  PPO          a shortened PPO (the rlhf.ppo preset, ppo_iters iterations) against some of those RMs: its gold
               score against the SFT model's on the same val prompts (sampled, paired 95% CI)

Outputs (OUT = --out, default RUN/experiments/rm_scaling): metrics.json, rm_scaling.png (accuracy with the
ceiling, probes and PPO's gain against the number of comparisons), report.md (the reading), one directory
per trained part (rm_0.25x/, size_2x64/{pretrain,sft,reward_model}/, ppo_2x/, ...) and data/ (the
comparison files). A finished part is reused when the command is run again with the same settings.

Simplifications: one seed per point (accuracy on ~6.5k held-out pairs varies by about ±1 point between
seeds; the probe, on ~250 prompts, by about ±3); no learning-rate retuning per data size or model size;
a larger RM than the policy is not tried (it would need a larger pretrained model: rlhf.pipeline's
`--preset headline` trains one, `--init_dir` then starts an RM from it).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minigpt import checkpoint as ckpt_io
from minigpt.configurator import config_from_dict, parse_config, utf8_console
from minigpt.files import make_dir
from minigpt.metrics import save_figure
from minigpt.trainer import pick_device, run_entry_point
from rlhf import pretrain, reward_model, sft
from rlhf.comparisons import simulate_rankings
from rlhf.data import DataError, load_rankings, write_jsonl
from rlhf.experiments.common import (finished_with, output_dir, ppo_config, read_json, run_paths, tracked_ppo,
                                     write_text)
from rlhf.gold import score
from rlhf.pipeline import derived_fields
from rlhf.reward import RewardModel
from rlhf.rm_probes import PROBES, probe_reward_model
from rlhf.stats import format_number, paired_bootstrap_ci


@dataclass
class RMScalingConfig:
    """Reward-model accuracy and probes against comparisons and RM size; PPO's gold gain with some of the RMs."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"fractions": "> 0", "ppo_fractions": "> 0", "ppo_iters": ">= 1", "n_eval_prompts": ">= 1",
              "n_probe_prompts": ">= 0", "n_boot": ">= 100"}
    run: str = "runs/default"        # the finished pipeline run: sft/, reward_model/ (config, comparisons, model),
                                     # pretrain/, tokenizer/
    out: str = ""                    # output directory ("" = RUN/experiments/rm_scaling)
    fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0])  # ranked prompts as multiples of
                                     # the run's RM's (1 = the run's RM itself; > 1 simulates more)
    extra_seed: int = 1              # data seed of the comparisons simulated beyond the run's (fractions > 1)
    sizes: list[str] = field(default_factory=lambda: ["2x64"])  # smaller RM backbones, "LAYERSxWIDTH" (heads:
                                     # WIDTH / 32), trained on the 1x comparisons; empty = no size axis
    ppo_fractions: list[float] = field(default_factory=lambda: [0.25, 1.0, 2.0])  # fractions whose RM also trains
                                     # a shortened PPO (each must be in fractions); empty = no PPO
    ppo_preset: str = "default"      # rlhf.ppo preset of that PPO (its adaptive KL target included)
    ppo_iters: int = 40              # its iterations (the default PPO runs 80)
    n_eval_prompts: int = 128        # val prompts PPO and its SFT start are judged on (sampled, T = 1)
    eval_seed: int = 0               # seed of those prompts and of their sampled answers
    n_probe_prompts: int = 0         # prompts drawn for the probes (the helpful ones are probed); 0 = the RM
                                     # stage's n_val_prompts, as in its summary
    n_boot: int = 1000               # bootstrap resamples per 95% CI
    device: str = "auto"             # auto = cuda, else mps, else cpu
    progress: bool = True            # tqdm progress bars


PRESETS: dict[str, dict] = {
    # seconds, on a `python -m rlhf.pipeline --preset tiny` run: the plumbing, not a result
    "tiny": dict(run="runs/tiny", fractions=[0.5, 1.0, 2.0], sizes=["1x16"], ppo_fractions=[0.5, 2.0],
                 ppo_preset="tiny", ppo_iters=2, n_eval_prompts=4, n_boot=100),
    # on a `python -m rlhf.pipeline` (default preset) run: 35 minutes measured on 2 shared CPU cores (the 2x RM
    # alone 12.5, the three PPO runs 10.5); --ppo_fractions=0.25,2 --sizes= saves about 8
    "default": dict(),
}


def label_of(fraction: float) -> str:
    """0.25 -> "0.25x", 2.0 -> "2x"."""
    return f"{fraction:g}x"


def parse_size(spec: str) -> tuple[int, int, int]:
    """"2x64" -> (n_layer 2, n_embd 64, n_head 2): one head per 32 channels, at least one."""
    try:
        n_layer, n_embd = (int(x) for x in spec.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: --sizes: {spec!r} is not LAYERSxWIDTH (e.g. 2x64)") from None
    n_head = max(1, n_embd // 32)
    if n_layer < 1 or n_embd < 1 or n_embd % n_head:
        raise SystemExit(f"error: --sizes: {spec!r}: need >= 1 layer and a positive width divisible by {n_head} heads")
    return n_layer, n_embd, n_head


def load_config(cls, run_dir: str):
    """The config a finished stage of the run was trained with (its config.json)."""
    return config_from_dict(cls, read_json(os.path.join(run_dir, ckpt_io.CONFIG_FILE)))


# -----------------------------------------------------------------------------
# comparisons


def comparison_files(cfg: RMScalingConfig, paths: dict, rm_cfg: reward_model.RMConfig, out: str) -> dict[float, str]:
    """{fraction: rankings JSONL}: nested prefixes of the run's comparisons, extended for fractions > 1
    by comparisons simulated exactly as the RM stage does (SFT samples at rm_cfg.temperatures, the
    labeler's demonstration, a flawed world answer, chatter twins), with data seed extra_seed."""
    source = os.path.join(paths["reward_model"], "data", "rm_train.jsonl")
    load_rankings(source)               # a damaged line is named here, not in the copies made of its prefixes
    with open(source, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    n = len(lines)
    extra_path = os.path.join(out, "data", f"rm_train_extra_seed{cfg.extra_seed}.jsonl")
    n_extra = max(round(f * n) for f in cfg.fractions) - n
    if n_extra > 0:
        have = 0
        if os.path.exists(extra_path):
            with open(extra_path, encoding="utf-8") as f:
                have = sum(1 for line in f if line.strip())
        if have < n_extra:
            print(f"rm_scaling: simulating {n_extra} more ranked prompts (data seed {cfg.extra_seed}) ...", flush=True)
            device = pick_device(cfg.device)
            policy, tokenizer = ckpt_io.load_model(paths["sft"], device)
            policies = [("sft", policy, list(rm_cfg.temperatures))]
            if rm_cfg.base_dir and rm_cfg.base_temperatures:
                base_model = ckpt_io.load_model(paths["pretrain"], device)[0]
                policies.append(("base", base_model, list(rm_cfg.base_temperatures)))
            rows = simulate_rankings("train", n_extra, policies, tokenizer,
                                     replace(rm_cfg, data_seed=cfg.extra_seed, progress=cfg.progress), gold=score)
            write_jsonl(extra_path, rows)
        with open(extra_path, encoding="utf-8") as f:
            lines += [line for line in f if line.strip()][:n_extra]
    files = {}
    for frac in cfg.fractions:
        k = round(frac * n)
        if k < 1:
            raise SystemExit(f"error: --fractions: {frac} x {n} ranked prompts is none")
        if frac == 1.0:
            files[frac] = source
            continue
        files[frac] = os.path.join(out, "data", f"rm_train_{label_of(frac)}.jsonl")
        ckpt_io.atomic_write_text(files[frac], "".join(lines[:k]))
    return files


# -----------------------------------------------------------------------------
# reward models


def train_rm(rm_cfg: reward_model.RMConfig) -> None:
    """rlhf.reward_model.train_reward_model on a comparison file, unless finished with the same config
    (max_iters = 0 aside: the stage writes the steps it derived from the epochs into its config.json)."""
    if not finished_with(rm_cfg.out_dir, rm_cfg, ignore=derived_fields(rm_cfg)):
        reward_model.train_reward_model(rm_cfg, gold=score)


def read_out(rm_dir: str, rm_cfg: reward_model.RMConfig, n_probe: int, device) -> dict:
    """What one RM measures: held-out accuracy, the labelers' ceiling on the same pairs, accuracy against
    the oracle's order, the probes (recomputed here for every RM alike), its size and training data."""
    s = ckpt_io.read_summary(rm_dir)
    rm = RewardModel.load(rm_dir, device)
    tok = ckpt_io.load_tokenizer(rm_dir)
    probes = probe_reward_model(rm, tok, n_probe, "val", rm_cfg.data_seed)
    params = sum(v.numel() for k, v in rm.state_dict().items() if "wpe" not in k)
    return {"dir": rm_dir, "val_accuracy": s["val_accuracy"], "label_agreement": s["label_agreement"],
            "gap_to_ceiling": s["gap_to_ceiling"], "gold_accuracy": s.get("gold_accuracy"),
            "rm_gold_pearson": s.get("rm_gold_pearson"), "val_pairs": s.get("pairs"),
            "train_prompts": s["train_prompts"], "train_pairs": s["train_pairs"], "steps": s["steps"],
            "params": int(params), "n_layer": rm.config.n_layer, "n_embd": rm.config.n_embd,
            "probes": probes, "seconds": s.get("seconds"),
            "by_h": {h: g["accuracy"] for h, g in (s.get("by_h") or {}).items()}}


def rm_on(base: reward_model.RMConfig, cfg: RMScalingConfig, paths: dict, out_dir: str, data: str,
          init_dir: str = "") -> reward_model.RMConfig:
    """The run's RM config trained on `data` (held-out: the run's val comparisons) into out_dir, for the
    run's number of epochs (max_iters = 0: config.json holds the steps the run's data size gave)."""
    return replace(base, out_dir=out_dir, data=data, max_iters=0,
                   val_data=os.path.join(paths["reward_model"], "data", "rm_val.jsonl"), sft_dir=paths["sft"],
                   init_dir=init_dir, base_dir="", resume=False, device=cfg.device, progress=cfg.progress)


def smaller_sft(spec: str, cfg: RMScalingConfig, paths: dict, out: str) -> str:
    """Pretrain + SFT of an LAYERSxWIDTH model exactly like the run's (its configs, corpus and tokenizer;
    no in-training gold evaluation); returns the SFT directory."""
    n_layer, n_embd, n_head = parse_size(spec)
    root = os.path.join(out, f"size_{spec}")
    pre_cfg = replace(load_config(pretrain.WorldPretrainConfig, paths["pretrain"]),
                      out_dir=os.path.join(root, "pretrain"), n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                      resume=False, device=cfg.device, progress=cfg.progress)
    if not finished_with(pre_cfg.out_dir, pre_cfg):
        os.makedirs(pre_cfg.out_dir, exist_ok=True)             # the run's tokenizer, so the RM reads the same ids
        shutil.copyfile(os.path.join(paths["tokenizer"], ckpt_io.TOKENIZER_FILE),
                        os.path.join(pre_cfg.out_dir, ckpt_io.TOKENIZER_FILE))
        pretrain.train_world_pretrain(pre_cfg)
    sft_cfg = replace(load_config(sft.SFTConfig, paths["sft"]), out_dir=os.path.join(root, "sft"),
                      init_from=pre_cfg.out_dir, resume=False, device=cfg.device, progress=cfg.progress)
    if not finished_with(sft_cfg.out_dir, sft_cfg):
        sft.train_sft(sft_cfg, None)
    return sft_cfg.out_dir


# -----------------------------------------------------------------------------
# PPO with a given RM


def ppo_outcome(cfg: RMScalingConfig, paths: dict, rm_dir: str, out_dir: str) -> dict:
    """A shortened PPO against the RM in rm_dir; its gold against the SFT start on the same prompts."""
    pcfg = ppo_config(cfg.ppo_preset, out_dir=out_dir, sft_dir=paths["sft"], rm_dir=rm_dir, max_iters=cfg.ppo_iters,
                      eval_interval=cfg.ppo_iters, n_eval_prompts=cfg.n_eval_prompts, eval_seed=cfg.eval_seed,
                      n_print_samples=0, device=cfg.device, progress=cfg.progress, resume=False)
    summary, evals = tracked_ppo(pcfg)
    start, end = evals[0], evals[-1]
    diff, lo, hi = paired_bootstrap_ci(end["gold_per_prompt"], start["gold_per_prompt"], n_boot=cfg.n_boot,
                                       seed=cfg.eval_seed)
    return {"dir": out_dir, "iters": end["iter"], "sft_gold": start["gold"], "gold": end["gold"],
            "gold_diff": diff, "gold_diff_ci": [lo, hi], "sft_gold_greedy": start["gold_greedy"],
            "gold_greedy": end["gold_greedy"], "kl": end["kl"], "rm_start": start["rm"], "rm_end": end["rm"],
            "seconds": summary.get("seconds")}


# -----------------------------------------------------------------------------
# plot and report


def plot(result: dict, path: str) -> str:
    """Three panels against the number of ranked train prompts (log scale): held-out accuracy with the
    labelers' ceiling, the probes (right vs near miss bold), PPO's sampled gold gain over SFT."""
    pts = result["comparisons"]
    x = [p["train_prompts"] for p in pts]
    fig = Figure(figsize=(13, 4.8))
    FigureCanvasAgg(fig)
    ax_acc, ax_probe, ax_ppo = fig.subplots(1, 3)
    ax_acc.plot(x, [p["val_accuracy"] for p in pts], "o-", color="tab:blue", label="RM (the run's shape)")
    ax_acc.plot(x, [p["gold_accuracy"] for p in pts], "o--", color="tab:blue", alpha=0.4,
                label="RM vs the oracle's order")
    ceiling = pts[0]["label_agreement"]
    ax_acc.axhline(ceiling, color="black", ls=":", label=f"labelers' agreement (ceiling) {ceiling:.3f}")
    for s in result["sizes"]:
        ax_acc.plot([s["train_prompts"]], [s["val_accuracy"]], "D", color="tab:red", ms=7,
                    label=f"RM {s['spec']} ({s['params'] / 1e6:.2f}M vs {pts[0]['params'] / 1e6:.2f}M)")
    ax_acc.set_ylabel("held-out pairwise accuracy")
    ax_acc.set_title("accuracy vs the labelers' ceiling", fontsize=10)
    for name in PROBES:
        ys = [p["probes"][name] for p in pts]
        if name == "correct_vs_near_miss":          # the probe that matters, with its binomial 95% interval
            err = [1.96 * probe_se(y, p["probes"]["prompts"]) for y, p in zip(ys, pts)]
            ax_probe.errorbar(x, ys, yerr=err, fmt="o-", lw=2, capsize=3, label="correct vs near miss (95%)")
        else:
            ax_probe.plot(x, ys, ".--", lw=1, alpha=0.5, label=name.replace("_", " "))
    for s in result["sizes"]:
        ax_probe.plot([s["train_prompts"]], [s["probes"]["correct_vs_near_miss"]], "D", color="tab:red", ms=7,
                      label=f"RM {s['spec']}: right vs near miss")
    ax_probe.axhline(0.5, color="gray", ls=":", label="chance")
    ax_probe.set_ylabel("share ordered as the oracle (helpful val prompts)")
    ax_probe.set_title("one-factor probes", fontsize=10)
    ppo = result["ppo"]
    if ppo:
        xs = [p["train_prompts"] for p in ppo]
        ys = [p["gold_diff"] for p in ppo]
        ax_ppo.errorbar(xs, ys, yerr=[[y - p["gold_diff_ci"][0] for y, p in zip(ys, ppo)],
                                      [p["gold_diff_ci"][1] - y for y, p in zip(ys, ppo)]],
                        fmt="o-", color="tab:green", capsize=3)
        for p in ppo:
            ax_ppo.annotate(f"KL {p['kl']:.2f}", (p["train_prompts"], p["gold_diff"]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
    ax_ppo.axhline(0, color="gray", ls=":")
    ax_ppo.set_ylabel("PPO gold − SFT gold (sampled, paired 95% CI)")
    ax_ppo.set_title(f"PPO ({result['config']['ppo_iters']} iterations) with that RM", fontsize=10)
    for ax in (ax_acc, ax_probe, ax_ppo):
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(v) for v in x])
        ax.minorticks_off()
        ax.set_xlabel("ranked train prompts (each with K candidates; log scale)", fontsize=9)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 0.95))
    ax_probe.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)   # below: no point hidden
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def log_slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of y against log2(x): the change per doubling. log_slope([1, 2, 4], [0, 1, 2]) = 1."""
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log2(xs), ys, 1)[0])


def probe_se(p: float, n: int) -> float:
    """Binomial standard error of a share p over n prompts (ties, counted ½, make it a slight overestimate)."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def probe_reading(pts: list[dict]) -> str:
    """The right-vs-near-miss probe along the comparisons: its ends, whether it rose monotonically, and
    whether the last point differs from the first beyond noise (unpaired two-proportion z; the probes use
    the same prompts for every RM, so the test is conservative)."""
    near = "correct_vs_near_miss"
    vals = [p["probes"][near] for p in pts]
    n = pts[0]["probes"]["prompts"]
    se_first, se_last = probe_se(vals[0], n), probe_se(vals[-1], n)
    z = (vals[-1] - vals[0]) / max(math.hypot(se_first, se_last), 1e-12)
    monotone = all(b >= a for a, b in zip(vals, vals[1:]))
    path = "" if monotone else " not monotonically (" + ", ".join(f"{v:.3f}" for v in vals) + ");"
    verdict = ("the most comparisons order a right answer above its near miss more often than the fewest, beyond "
               "the noise: more data does teach the RM some checking of content, slowly." if z > 1.96 else
               "within the noise of the fewest-comparisons point: no measurable gain in checking content.")
    return (f"**Right vs near miss** goes from {vals[0]:.3f} to {vals[-1]:.3f},{path} each point ± about "
            f"{1.96 * se_last:.3f} (95%, {n} prompts); {log_slope([p['train_prompts'] for p in pts], vals):+.3f} "
            f"per doubling; 0.5 = chance: {verdict}")


def write_report(result: dict, path: str) -> str:
    cfg, pts, r = result["config"], result["comparisons"], result["reading"]
    first, last = pts[0], pts[-1]
    near = "correct_vs_near_miss"
    lines = [
        "# What the reward model needs: comparisons and size", "",
        f"Run: `{cfg['run']}`; command: `python -m rlhf.experiments rm_scaling --run={cfg['run']}"
        f"{' --out=' + cfg['out'] if cfg['out'] else ''}`. Every RM is trained like the run's "
        f"(RUN/reward_model/config.json) and judged on the run's held-out comparisons "
        f"({first['val_pairs']} pairs) and probes ({first['probes']['prompts']} helpful val prompts).", "",
        "![accuracy, probes and PPO against comparisons](rm_scaling.png)", "", "## Reading", "",
        f"- **Accuracy** goes from {first['val_accuracy']:.3f} ({first['train_prompts']} ranked prompts) to "
        f"{last['val_accuracy']:.3f} ({last['train_prompts']}), {r['acc_per_doubling']:+.3f} per doubling "
        f"(least squares on log2 of the prompts); the labelers' ceiling is {first['label_agreement']:.3f}, so "
        f"the gap at the most data is {last['label_agreement'] - last['val_accuracy']:.3f}."
        + (f" At that rate, reaching 3 points below the ceiling would take about {r['prompts_to_go']:,.0f} ranked "
           f"prompts (an extrapolation of {len(pts)} points, indicative only)." if r["prompts_to_go"] else
           " The accuracy does not rise with more comparisons here."),
        "- " + probe_reading(pts),
    ]
    one = next((p for p in pts if p["fraction"] == 1.0), None)
    for s in result["sizes"]:
        ref = ""
        if one:
            n = one["probes"]["prompts"]
            noise = 1.96 * math.hypot(probe_se(s["probes"][near], n), probe_se(one["probes"][near], n))
            d = s["probes"][near] - one["probes"][near]
            ref = (f" against {one['val_accuracy']:.3f} / {one['probes'][near]:.3f} for the run's "
                   f"{one['n_layer']}x{one['n_embd']} RM ({one['params'] / 1e6:.2f}M): accuracy "
                   f"{s['val_accuracy'] - one['val_accuracy']:+.3f}, probe {d:+.3f} "
                   f"({'within' if abs(d) <= noise else 'beyond'} its noise of ±{noise:.3f})")
        lines.append(f"- **Size**: an RM of shape {s['spec']} ({s['params'] / 1e6:.2f}M parameters, from its own SFT "
                     f"model) on the same {s['train_prompts']} prompts: accuracy {s['val_accuracy']:.3f}, right vs "
                     f"near miss {s['probes'][near]:.3f}{ref}.")
    if not result["sizes"]:
        lines.append(f"- **Size**: not measured ({result['size_note']}).")
    for p in result["ppo"]:
        sig = "outside" if p["gold_diff_ci"][0] > 0 or p["gold_diff_ci"][1] < 0 else "within"
        lines.append(f"- **PPO with the {p['label']} RM** ({p['iters']} iterations, KL {p['kl']:.2f} nats): gold "
                     f"(sampled) {p['sft_gold']:.3f} → {p['gold']:.3f}, {p['gold_diff']:+.3f} "
                     f"[{p['gold_diff_ci'][0]:+.3f}, {p['gold_diff_ci'][1]:+.3f}] ({sig} the noise); greedy "
                     f"{p['sft_gold_greedy']:.3f} → {p['gold_greedy']:.3f}.")
    if len(result["ppo"]) > 1:
        cis = [p["gold_diff_ci"] for p in result["ppo"]]
        overlap = max(lo for lo, _ in cis) <= min(hi for _, hi in cis)
        lines.append("- **PPO across RMs**: " + (
            "the gains' 95% CIs all overlap, so this run cannot rank the RMs by what PPO gets from them; their "
            "differences in held-out accuracy did not show as measurably different gains." if overlap else
            "not every pair of gains' CIs overlaps: the RMs differ in what PPO gets from them (see the numbers)."))
    lines += ["", "## Reward models", "",
              "| RM | ranked prompts | pairs | steps | params | accuracy | ceiling | vs oracle | right vs near miss "
              "| concise vs chatty | correct vs chatty wrong | seconds |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pts + result["sizes"]:
        name = p.get("label") or p["spec"]
        lines.append(f"| {name} | {p['train_prompts']} | {p['train_pairs']} | {p['steps']} | "
                     f"{p['params'] / 1e6:.2f}M | {p['val_accuracy']:.3f} | {p['label_agreement']:.3f} | "
                     f"{format_number(p['gold_accuracy'])} | {p['probes'][near]:.3f} | "
                     f"{p['probes']['concise_vs_chatty']:.3f} | {p['probes']['correct_vs_chatty_wrong']:.3f} | "
                     f"{format_number(p['seconds'], 0)} |")
    lines += ["", "Seconds: each RM stage's own (the run's 1x RM's include sampling its comparisons; the others "
              "read them from files)"
              + "".join(f"; the {s['spec']} model's pretraining + SFT took {s['seconds_pretrain_sft']:.0f} s"
                        for s in result["sizes"])
              + "".join(f"; PPO with the {p['label']} RM {format_number(p['seconds'], 0)} s" for p in result["ppo"])
              + f". This invocation took {result['seconds']['total']:.0f} s (finished parts are read back: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items() if k != "total") + ")."]
    return write_text(path, "\n".join(lines) + "\n")


# -----------------------------------------------------------------------------
# the experiment


def run(cfg: RMScalingConfig) -> dict:
    """RMs over comparisons (and sizes), their read-outs, PPO with some -> metrics.json, rm_scaling.png, report.md."""
    t0 = time.time()
    if not all(map(math.isfinite, cfg.fractions + cfg.ppo_fractions)):   # (BOUNDS checked each one is > 0)
        raise SystemExit(f"error: --fractions / --ppo_fractions: {cfg.fractions} / {cfg.ppo_fractions}: "
                         f"each must be a finite multiple of the run's comparisons")
    if len(set(cfg.fractions)) < 2:
        raise SystemExit(f"error: --fractions={','.join(map(str, cfg.fractions))}: a scaling curve needs at least "
                         f"two amounts of comparisons, e.g. --fractions=0.5,1")
    missing = [f for f in cfg.ppo_fractions if f not in cfg.fractions]
    if missing:
        raise SystemExit(f"error: --ppo_fractions {missing} are not in --fractions {cfg.fractions}")
    for spec in cfg.sizes:
        parse_size(spec)                                   # a malformed size fails before anything runs
    if cfg.ppo_fractions:
        ppo_config(cfg.ppo_preset)                         # an unknown PPO preset too (not after the RMs trained)
    paths = run_paths(cfg.run, ("sft", "reward_model", "tokenizer", "pretrain"))
    base = load_config(reward_model.RMConfig, paths["reward_model"])
    if base.data or not os.path.exists(os.path.join(paths["reward_model"], "data", "rm_val.jsonl")):
        raise SystemExit(f"error: {paths['reward_model']} was not trained on simulated comparisons "
                         f"(data/rm_train.jsonl, rm_val.jsonl); rm_scaling varies those")
    out = output_dir(cfg.run, cfg.out, "rm_scaling")
    make_dir(out, "--out")
    device = pick_device(cfg.device)
    n_probe = cfg.n_probe_prompts or base.n_val_prompts
    seconds = {}

    t = time.time()
    files = comparison_files(cfg, paths, base, out)
    seconds["comparisons"] = time.time() - t
    t = time.time()
    points, rm_dirs = [], {}
    for frac in sorted(cfg.fractions):
        label = label_of(frac)
        if frac == 1.0:
            rm_dirs[frac] = paths["reward_model"]
        else:
            rm_cfg = rm_on(base, cfg, paths, os.path.join(out, f"rm_{label}"), files[frac])
            print(f"rm_scaling: reward model on {label} the comparisons -> {rm_cfg.out_dir}", flush=True)
            train_rm(rm_cfg)
            rm_dirs[frac] = rm_cfg.out_dir
        points.append({"fraction": frac, "label": label, **read_out(rm_dirs[frac], base, n_probe, device)})
    seconds["reward_models"] = time.time() - t

    t = time.time()
    sizes = []
    for spec in cfg.sizes:
        print(f"rm_scaling: a {spec} model (pretrain + SFT, the run's tokenizer) to start an RM", flush=True)
        init = smaller_sft(spec, cfg, paths, out)
        rm_cfg = rm_on(base, cfg, paths, os.path.join(out, f"size_{spec}", "reward_model"),
                       os.path.join(paths["reward_model"], "data", "rm_train.jsonl"), init)
        train_rm(rm_cfg)
        made = [ckpt_io.read_summary(os.path.join(out, f"size_{spec}", d)) for d in ("pretrain", "sft")]
        sizes.append({"spec": spec, **read_out(rm_cfg.out_dir, base, n_probe, device),
                      "seconds_pretrain_sft": sum(s.get("seconds") or 0.0 for s in made)})
    seconds["sizes"] = time.time() - t

    t = time.time()
    ppo = []
    by_frac = {p["fraction"]: p for p in points}
    for frac in sorted(cfg.ppo_fractions):
        label = label_of(frac)
        print(f"rm_scaling: PPO ({cfg.ppo_iters} iterations) against the {label} RM", flush=True)
        res = ppo_outcome(cfg, paths, rm_dirs[frac], os.path.join(out, f"ppo_{label}"))
        ppo.append({"fraction": frac, "label": label, "train_prompts": by_frac[frac]["train_prompts"], **res})
    seconds["ppo"] = time.time() - t

    xs = [p["train_prompts"] for p in points]
    acc_slope = log_slope(xs, [p["val_accuracy"] for p in points])
    goal = points[-1]["label_agreement"] - 0.03
    to_go = None
    if acc_slope and acc_slope > 0:
        to_go = xs[-1] * 2 ** max(0.0, (goal - points[-1]["val_accuracy"]) / acc_slope)
    result = {"experiment": "rm_scaling", "config": asdict(cfg), "out": out, "comparisons": points, "sizes": sizes,
              "size_note": "no --sizes given" if not cfg.sizes else "",
              "ppo": ppo, "reading": {"acc_per_doubling": acc_slope or 0.0, "prompts_to_go": to_go,
                                      "probe_per_doubling": log_slope(xs, [p["probes"]["correct_vs_near_miss"]
                                                                           for p in points]) or 0.0},
              "seconds": seconds}
    result["plot"] = plot(result, os.path.join(out, "rm_scaling.png"))
    seconds["total"] = time.time() - t0
    result["report"] = write_report(result, os.path.join(out, "report.md"))
    ckpt_io.atomic_write_json(os.path.join(out, "metrics.json"), result)
    for p in points + sizes:
        print(f"  {p.get('label') or p['spec']:>6}  {p['train_prompts']:>5} prompts  accuracy {p['val_accuracy']:.3f} "
              f"(ceiling {p['label_agreement']:.3f})  right vs near miss {p['probes']['correct_vs_near_miss']:.3f}")
    for p in ppo:
        print(f"  PPO with the {p['label']} RM: gold {p['sft_gold']:.3f} -> {p['gold']:.3f} ({p['gold_diff']:+.3f} "
              f"[{p['gold_diff_ci'][0]:+.3f}, {p['gold_diff_ci'][1]:+.3f}]), KL {p['kl']:.2f}")
    print(f"rm_scaling: {out}/report.md, {result['plot']} ({seconds['total']:.0f}s)")
    return result


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(RMScalingConfig, argv, PRESETS, prog="python -m rlhf.experiments rm_scaling")
    return run_entry_point(run, cfg, errors=(DataError, FileNotFoundError))


if __name__ == "__main__":
    utf8_console()
    main()
