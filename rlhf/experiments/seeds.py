"""The headline table over seeds: base, SFT, best-of-N, PPO, GRPO and DPO, trained again with other seeds,
so that "PPO beats SFT" rests on more than one run.

    python -m rlhf.experiments seeds --run=runs/default                # 3 seeds: 1 h 45 min on 2 CPU cores
    python -m rlhf.experiments seeds --run=runs/default --dpo=false    # ~45 min: the pipeline and GRPO only

(Measured with seeds 1 and 2 trained side by side, one core each: per seed, the pipeline 20 min, GRPO 100 s,
DPO 80 min, most of it DPO's validation on every held-out pair every 50 steps.)
    python -m rlhf.experiments seeds --preset tiny --run=runs/tiny     # a minute (numbers mean nothing)

Seed 0 is the run itself. Seed k = 1, 2, ... repeats its recipe (the preset and stage overrides in
RUN/pipeline_config.json) in OUT/seedK with every stage's training seed moved by k: pretraining, SFT, the
reward model, PPO (their `seed`: initialisation, batch order, dropout, sampling), then GRPO and DPO
(`python -m rlhf.grpo` / `rlhf.dpo` at --method_preset, on that seed's SFT model and RM comparisons). What
stays fixed is the world (corpus, demonstrations, prompts, labelers: their data seeds) and the evaluation
(the same held-out prompts and per-prompt sampling streams), so the spread between seeds is the spread of
training alone, and every seed is judged on the same questions. A seed's GRPO or DPO found finished in the
run (RUN/grpo, RUN/dpo) with the same settings is used as it is.

Per seed, rlhf.evaluate.evaluate_run judges every model on the run's test prompts (its caches, RUN/eval and
OUT/seedK/eval, are reused, and seed 0's GRPO and DPO answers are added to RUN/eval):
gold score greedy and sampled, each method's paired gain over that seed's SFT model with its 95% CI, the
share of non-tied pairs it wins, and KL to SFT. Across seeds: mean, standard deviation, range, how many
seeds' CIs exclude 0, and a pooled gain (each prompt's gain averaged over the seeds, its 95% CI resampling
prompts: the evaluation noise of the mean over these seeds, not the spread a new seed could bring).

Outputs (OUT = --out, default RUN/experiments/seeds): metrics.json, seeds.png (each method's gain over SFT
per seed, greedy and sampled), report.md (the table and its reading), seed1/, seed2/, ... (full pipeline
runs, each with its own report.md). A finished part is reused when the command is run again with the
same settings, an interrupted one resumes; a seed directory trained with another recipe is an error.

Simplifications: 3 seeds give a range, not a distribution (a standard deviation of 3 values is itself
uncertain by about ±50%); the larger model of --preset headline is not repeated.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minigpt import checkpoint as ckpt_io
from minigpt.configurator import parse_config, replace_checked, utf8_console
from minigpt.files import make_dir
from minigpt.metrics import save_figure
from minigpt.trainer import run_entry_point
from rlhf import dpo, evaluate as ev, grpo, pipeline
from rlhf.data import DataError
from rlhf.experiments.common import config_matches, finished_with, output_dir, read_json, run_paths, write_text
from rlhf.gold import GoldEvaluator
from rlhf.stats import bootstrap_ci


@dataclass
class SeedsConfig:
    """The pipeline's headline table (and GRPO, DPO) over several training seeds, on the same test prompts."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"n_seeds": ">= 1"}
    run: str = "runs/default"        # the finished pipeline run: seed 0, and the recipe the other seeds repeat
    out: str = ""                    # output directory ("" = RUN/experiments/seeds); seed k runs in OUT/seedK
    n_seeds: int = 3                 # seeds in the table: the run itself and n_seeds - 1 repeats
    grpo: bool = True                # also train and judge GRPO per seed (rlhf.grpo)
    dpo: bool = True                 # also train and judge DPO per seed (rlhf.dpo; the slowest part on CPU)
    method_preset: str = "default"   # rlhf.grpo / rlhf.dpo preset (their default follows the default pipeline)
    device: str = "auto"             # auto = cuda, else mps, else cpu
    progress: bool = True            # progress bars


PRESETS: dict[str, dict] = {
    # on a `python -m rlhf.pipeline --preset tiny` run: the plumbing, not a result
    "tiny": dict(run="runs/tiny", n_seeds=2, method_preset="tiny"),
    # on a `python -m rlhf.pipeline` (default preset) run
    "default": dict(),
}

METHODS = ("best_of_n", "ppo", "grpo", "dpo")        # judged against SFT
TIE = 1e-9                                           # |gold difference| below this is a tie
TABLE = ("base", "sft") + METHODS                    # the rows of the table


# -----------------------------------------------------------------------------
# the runs


WIRED = ("device", "resume", "out_dir", "init_from", "sft_dir", "rm_dir", "base_dir")   # set by rlhf.pipeline


def seed_overrides(recipe: dict, k: int) -> dict[str, dict[str, str]]:
    """The --STAGE.KEY=VALUE overrides of seed k: the run's own (recipe["stage_overrides"]) with every
    stage's training `seed` moved by k (recipe["stages"][stage]["seed"] + k). Data seeds stay as they are."""
    raw = copy.deepcopy(recipe.get("stage_overrides") or {})
    for stage, keys in raw.items():     # what the pipeline sets itself: older versions recorded and ignored
        for key in [k for k in keys if k in WIRED or (k == "data" and stage.startswith("pretrain"))]:
            del keys[key]               # such overrides; the pipeline now refuses them
    for stage, cfg in recipe["stages"].items():
        if "seed" in cfg:
            raw.setdefault(stage, {})["seed"] = str(int(cfg["seed"]) + k)
    return raw


def read_recipe(run: str) -> dict:
    """RUN/pipeline_config.json (what `python -m rlhf.pipeline` wrote), or a one-line error."""
    recipe = read_json(os.path.join(run, "pipeline_config.json"))
    if not recipe or "stages" not in recipe:
        raise SystemExit(f"error: {run}/pipeline_config.json: missing or not a pipeline run's; run "
                         f"`python -m rlhf.pipeline --out {run}` first")
    return recipe


def pipeline_config(recipe: dict, cfg: SeedsConfig, out: str) -> pipeline.PipelineConfig:
    """The run's pipeline settings (evaluation prompts, seed, best-of-N, ...) writing into `out`."""
    kept = {k: v for k, v in recipe["pipeline"].items() if k not in ("out", "progress", "device", "headline", "stop_after")}
    return replace_checked(pipeline.PipelineConfig(), {**kept, "out": out, "progress": cfg.progress,
                                                        "device": cfg.device, "headline": False, "stop_after": ""},
                           where=f"{cfg.run}/pipeline_config.json:")


LARGE_STAGES = ("pretrain_large", "sft_large")     # --headline only; the repeats leave them out


def recipe_differences(recipe: dict, seed_recipe: dict, k: int) -> list[str]:
    """What seed k's pipeline_config.json (seed_recipe) trained differently from the run's recipe, beyond
    the seed + k and the run directory: ["ppo.learning_rate: 0.0001 vs 0.0002", ...] (fields both know)."""
    def local(value, run_dir: str):   # a path inside a run directory, relative to it
        return value.replace(run_dir, "RUN") if isinstance(value, str) and run_dir else value

    diffs = [f"preset: {seed_recipe.get('preset')} vs {recipe['preset']}"] if seed_recipe.get("preset") != recipe["preset"] else []
    run_a, run_b = recipe.get("pipeline", {}).get("out", ""), seed_recipe.get("pipeline", {}).get("out", "")
    for stage, base in recipe["stages"].items():
        mine = seed_recipe.get("stages", {}).get(stage)
        if stage in LARGE_STAGES or mine is None:
            continue
        for key, value in base.items():
            if key not in mine or key in ("progress", "resume", "device"):
                continue
            expected = value + k if key == "seed" else local(value, run_a)
            if local(mine[key], run_b) != expected:
                diffs.append(f"{stage}.{key}: {mine[key]} vs {expected}")
    return diffs


def seed_run(recipe: dict, cfg: SeedsConfig, k: int, out: str) -> str:
    """Seed k's pipeline run directory: the run itself for k = 0, else OUT/seedK (trained, resumed, or
    reused when finished with the run's recipe and seed + k; a one-line error when it holds another recipe)."""
    if k == 0:
        return cfg.run
    run_dir = os.path.join(out, f"seed{k}")
    seed_recipe = read_json(os.path.join(run_dir, "pipeline_config.json"))
    if seed_recipe:
        diffs = recipe_differences(recipe, seed_recipe, k)
        if diffs:
            raise SystemExit(f"error: {run_dir} was trained with another recipe than {cfg.run}'s with seed + {k} "
                             f"({'; '.join(diffs[:3])}); delete it (or choose another --out) to train it again")
    if not os.path.exists(os.path.join(run_dir, "metrics.json")):
        print(f"\n== seed {k}: the pipeline ({recipe['preset']} preset) -> {run_dir}")
        pipeline.run_pipeline(pipeline_config(recipe, cfg, run_dir), recipe["preset"], seed_overrides(recipe, k))
    return run_dir


def method_config(name: str, cfg: SeedsConfig, run_dir: str, k: int, stage_dir: str):
    """rlhf.grpo's / rlhf.dpo's config for seed k: --method_preset, on run_dir's SFT model and reward model,
    the preset's seed + k, written to stage_dir."""
    module, config_class = {"grpo": (grpo, grpo.GRPOConfig), "dpo": (dpo, dpo.DPOConfig)}[name]
    if cfg.method_preset not in module.PRESETS:
        raise SystemExit(f"error: --method_preset={cfg.method_preset}: not a preset of rlhf.{name} "
                         f"({', '.join(module.PRESETS)})")
    base = replace_checked(config_class(), module.PRESETS[cfg.method_preset], where=f"rlhf.{name} preset:")
    return replace_checked(base, dict(out_dir=stage_dir, sft_dir=os.path.join(run_dir, "sft"),
                                      rm_dir=os.path.join(run_dir, "reward_model"), seed=base.seed + k,
                                      device=cfg.device, progress=cfg.progress), where="seeds:")


def method_run(name: str, cfg: SeedsConfig, run_dir: str, k: int, out: str) -> str:
    """GRPO or DPO of seed k (method_config), trained from run_dir's SFT model and reward model (its
    comparisons, for DPO). Reused when finished with the same settings: in run_dir/NAME (for seed 0, a
    `python -m rlhf.NAME` run in the run itself) or in OUT/seedK/NAME. Else trained in OUT/seedK/NAME,
    resuming an interrupted run of the same settings. Returns the checkpoint directory."""
    own = os.path.join(run_dir, name)
    stage_dir = own if run_dir != cfg.run else os.path.join(out, f"seed{k}", name)
    for d in dict.fromkeys([own, stage_dir]):
        c = method_config(name, cfg, run_dir, k, d)
        if finished_with(d, c, pipeline.derived_fields(c)) and os.path.exists(os.path.join(d, ckpt_io.MODEL_FILE)):
            return d
    mcfg = method_config(name, cfg, run_dir, k, stage_dir)
    if (config_matches(stage_dir, mcfg, pipeline.derived_fields(mcfg))
            and os.path.exists(os.path.join(stage_dir, ckpt_io.RESUME_FILE))):
        mcfg = replace(mcfg, resume=True)      # an interrupted run of the same settings continues
    else:                                      # a part trained with other settings (or none) starts over
        for f in (ckpt_io.SUMMARY_FILE, ckpt_io.MODEL_FILE, ckpt_io.RESUME_FILE):
            if os.path.exists(os.path.join(stage_dir, f)):
                os.remove(os.path.join(stage_dir, f))
    print(f"\n== seed {k}: {name} -> {stage_dir}")
    if name == "grpo":                               # (a Ctrl-C raises KeyboardInterrupt: exit 130)
        grpo.train_grpo(mcfg, *grpo.gold_evaluators(mcfg, GoldEvaluator))
    else:
        dpo.train_dpo(mcfg, dpo.gold_evaluator(mcfg, GoldEvaluator))
    if not ckpt_io.is_finished(stage_dir):
        raise SystemExit(f"error: {name} in {stage_dir} stopped before finishing; run the same command again")
    return stage_dir


def judge(recipe: dict, cfg: SeedsConfig, run_dir: str, extra: dict[str, str]) -> tuple[dict, dict]:
    """(evaluate_run's results, {stage: rows}) for one seed, on the run's evaluation settings; the
    pipeline's eval/ caches are reused, GRPO and DPO are judged there too, with KL to SFT."""
    ecfg = pipeline.eval_config(pipeline_config(recipe, cfg, run_dir))
    eval_dir = os.path.join(run_dir, "eval")
    pairs = tuple((m, "sft") for m in ("ppo", "grpo", "dpo"))
    skip = tuple(m for m in ("grpo", "dpo") if not getattr(cfg, m))   # one in the run dir but not asked for
    res = ev.evaluate_run(run_dir, ecfg, kl_pairs=pairs, progress=cfg.progress, eval_dir=eval_dir, extra_dirs=extra,
                          skip=skip)
    rows = {s: ev.read_rows(os.path.join(eval_dir, f"{s}.jsonl")) for s in res["stages"]}
    return res, rows


# -----------------------------------------------------------------------------
# the numbers


def seed_numbers(res: dict) -> dict:
    """One seed's row of the table from evaluate_run's results: per stage, gold greedy / sampled with CIs,
    KL to SFT, and each method's paired gain over SFT (diff, CI, non-tied win rate, W/T/L)."""
    out: dict = {"stages": {}, "vs_sft": {}, "reward_model": res.get("reward_model", {})}
    for s, st in res["stages"].items():
        out["stages"][s] = {d: {"gold": st[d]["gold_score"], "ci": st[d]["gold_ci"]} for d in ev.DECODINGS if d in st}
        if "kl" in st:
            out["stages"][s]["kl"] = st["kl"]["mean"]
    for m in METHODS:
        c = res["comparisons"].get(f"{m}_vs_sft")
        if c:
            out["vs_sft"][m] = {d: {"diff": x["gold_diff"]["mean"], "ci": x["gold_diff"]["ci"],
                                    "non_tied": x["gold"]["win_rate"],
                                    "wtl": [x["gold"]["wins"], x["gold"]["ties"], x["gold"]["losses"]]}
                                for d, x in c.items()}
    return out


def spread(values: list[float]) -> dict | None:
    """{"mean", "sd" (n - 1; None for one value), "min", "max", "values"} of one number across seeds
    (None for no values: e.g. the non-tied win rate where every pair tied)."""
    if not values:
        return None
    return {"mean": sum(values) / len(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "values": list(values)}


def pooled_gain(rows_by_seed: list[dict], method: str, decoding: str, n_boot: int = 2000) -> dict | None:
    """Each prompt's gold gain of `method` over SFT averaged over the seeds, then its mean with a 95%
    bootstrap CI over prompts, and the non-tied win rate over all (seed, prompt) pairs. Every seed answered
    the same prompts in the same order (the same evaluation set), which is checked."""
    diffs, ids, wins, losses = [], None, 0, 0
    for rows in rows_by_seed:
        if method not in rows or "sft" not in rows:
            return None
        a, b = ev.by_decoding(rows[method], decoding), ev.by_decoding(rows["sft"], decoding)
        if not a:
            return None
        ids = ids or [r["id"] for r in a]
        if [r["id"] for r in a] != ids or [r["id"] for r in b] != ids:
            raise ValueError(f"{method} vs sft ({decoding}): the seeds' evaluation prompts differ")
        d = [x["gold"] - y["gold"] for x, y in zip(a, b)]
        wins += sum(v > TIE for v in d)           # rlhf.stats.win_rates' tie tolerance
        losses += sum(v < -TIE for v in d)
        diffs.append(d)
    per_prompt = np.mean(np.array(diffs), axis=0)
    mean, lo, hi = bootstrap_ci(per_prompt.tolist(), n_boot=n_boot)
    return {"diff": mean, "ci": [lo, hi], "non_tied": wins / (wins + losses) if wins + losses else None,
            "wins": wins, "losses": losses, "seeds": len(diffs)}


def aggregate(per_seed: list[dict], rows_by_seed: list[dict], n_boot: int = 2000) -> dict:
    """Across seeds: every stage's gold (greedy, sampled) and KL, and every method's gain over SFT, as
    spread(); plus how many seeds' CIs are above / below 0, and the pooled gain."""
    out: dict = {"stages": {}, "vs_sft": {}}
    for s in TABLE:
        have = [p["stages"][s] for p in per_seed if s in p["stages"]]
        if len(have) != len(per_seed):
            continue
        out["stages"][s] = {d: spread([h[d]["gold"] for h in have]) for d in ev.DECODINGS if all(d in h for h in have)}
        if all("kl" in h for h in have):
            out["stages"][s]["kl"] = spread([h["kl"] for h in have])
    for m in METHODS:
        have = [p["vs_sft"][m] for p in per_seed if m in p["vs_sft"]]
        if len(have) != len(per_seed):
            continue
        out["vs_sft"][m] = {}
        for d in ev.DECODINGS:
            if not all(d in h for h in have):
                continue
            out["vs_sft"][m][d] = {**spread([h[d]["diff"] for h in have]),
                                   "non_tied": spread([h[d]["non_tied"] for h in have if h[d]["non_tied"] is not None]),
                                   "seeds_above_0": sum(h[d]["ci"][0] > 0 for h in have),
                                   "seeds_below_0": sum(h[d]["ci"][1] < 0 for h in have),
                                   "pooled": pooled_gain(rows_by_seed, m, d, n_boot)}
    rm = [p["reward_model"] for p in per_seed]
    for key in ("val_accuracy", "label_agreement"):
        if all(key in r for r in rm):
            out.setdefault("reward_model", {})[key] = spread([r[key] for r in rm])
    return out


# -----------------------------------------------------------------------------
# plot and report

NAMES = {"base": "base (pretrained)", "sft": "SFT", "best_of_n": "best-of-N", "ppo": "PPO", "grpo": "GRPO",
         "dpo": "DPO"}


def plot(result: dict, path: str) -> str:
    """Two panels (greedy, sampled): each method's gold gain over SFT, one point per seed with its paired
    95% CI, the mean over seeds as a bar and the pooled CI beside it."""
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    methods = [m for m in METHODS if m in result["aggregate"]["vs_sft"]]
    colors = ["tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink"]
    for ax, d in zip(axes, ev.DECODINGS):
        for i, m in enumerate(methods):
            a = result["aggregate"]["vs_sft"][m].get(d)
            if not a:
                continue
            n = len(result["per_seed"])
            for j, p in enumerate(result["per_seed"]):
                x = p["vs_sft"][m][d]
                off = i + (j - (n - 1) / 2) * 0.12
                ax.errorbar(off, x["diff"], yerr=[[x["diff"] - x["ci"][0]], [x["ci"][1] - x["diff"]]], fmt="o",
                            color=colors[j % len(colors)], capsize=2, ms=4,
                            label=f"seed {p['seed']}" if i == 0 else None)
            ax.hlines(a["mean"], i - 0.3, i + 0.3, color="black", lw=2, label="mean over seeds" if i == 0 else None)
            pooled = a.get("pooled")
            if pooled:
                ax.vlines(i + 0.36, *pooled["ci"], color="black", lw=4, alpha=0.35,
                          label="pooled 95% CI (prompts)" if i == 0 else None)
        ax.axhline(0, color="gray", lw=1, ls=":")
        ax.set_xticks(range(len(methods)), [NAMES[m] for m in methods])
        ax.set_title(f"{d} decoding", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("gold gain over the seed's SFT model")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{len(result['per_seed'])} seeds, {result['prompts']['n']} {result['prompts']['split']} prompts "
                 f"(paired 95% CIs per seed)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _pm(s: dict, signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    sd = "" if s["sd"] is None else f" ± {s['sd']:.3f}"
    return f"{s['mean']:{f}}{sd} [{s['min']:{f}}, {s['max']:{f}}]"


def _ci(x: dict) -> str:
    return f"{x['diff']:+.3f} [{x['ci'][0]:+.3f}, {x['ci'][1]:+.3f}]"


def reading(result: dict) -> list[str]:
    """The reading, from the numbers only: per method and decoding, in how many seeds the gain over SFT is
    outside the noise, the pooled gain, and where seed 0 (the documented run) sits among the seeds."""
    n = len(result["per_seed"])
    lines = []
    for m, by_d in result["aggregate"]["vs_sft"].items():
        parts = []
        for d, a in by_d.items():
            pooled = a.get("pooled")
            verdict = (f"above 0 in {a['seeds_above_0']} of {n} seeds" if a["seeds_below_0"] == 0 else
                       f"above 0 in {a['seeds_above_0']}, below 0 in {a['seeds_below_0']} of {n} seeds")
            rank = sorted(a["values"], reverse=True).index(a["values"][0]) + 1
            text = (f"{d}: mean gain {a['mean']:+.3f} (range {a['min']:+.3f} to {a['max']:+.3f}), its CI {verdict}; "
                    f"seed 0 ranks {rank} of {n}")
            if pooled:
                where = "excludes 0" if pooled["ci"][0] > 0 or pooled["ci"][1] < 0 else "includes 0"
                n_pairs = pooled["wins"] + pooled["losses"]
                won = (f"{pooled['non_tied']:.0%} of {n_pairs} non-tied pairs won" if n_pairs
                       else "every pair tied")
                text += f"; pooled {_ci(pooled)} ({where}), {won}"
            parts.append(text)
        lines.append(f"- **{NAMES[m]} vs SFT** — " + "; ".join(parts) + ".")
    return lines


def command(cfg: dict) -> str:
    """The command line that repeats this experiment: every setting that differs from SeedsConfig's defaults."""
    default = asdict(SeedsConfig())
    flags = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in cfg.items()
             if k not in ("progress", "device") and v != default.get(k)]
    return " ".join(["python -m rlhf.experiments seeds"] + flags)


def write_report(result: dict, path: str) -> str:
    agg, cfg, n = result["aggregate"], result["config"], len(result["per_seed"])
    p = result["prompts"]
    lines = [f"# The headline table over {n} seeds", "",
             f"Command: `{command(cfg)}`. Seed 0 is the run itself; seed k repeats its "
             f"recipe ({result['preset']} preset) with every stage's training seed + k. The world and the "
             f"evaluation are the same for all: {p['n']} {p['split']} prompts (seed {p['seed']}), gold oracle. "
             "Each cell: mean ± standard deviation over seeds [min, max].", "",
             "| model | gold, greedy | gold, sampled | KL to SFT (nats) |", "|---|---|---|---|"]
    for s in TABLE:
        st = agg["stages"].get(s)
        if st:
            kl = _pm(st["kl"]) if "kl" in st else "—"
            sampled = "(the same answers)" if s == "best_of_n" else _pm(st["sampled"])
            lines.append(f"| {NAMES[s]} | {_pm(st['greedy'])} | {sampled} | {kl} |")
    lines += ["", "Gain over SFT (paired, on the same prompts): mean ± sd [min, max]; seeds whose 95% CI is "
              "above 0; pooled = each prompt's gain averaged over the seeds, 95% CI over prompts; non-tied = "
              "share of non-tied pairs won, mean over seeds. Best-of-N picks one of the SFT model's samples, so "
              "its greedy and sampled gains compare the same answers with SFT's greedy and sampled ones.", "",
              "| method | greedy gain | seeds, CI > 0 | pooled | non-tied | sampled gain | seeds, CI > 0 | pooled | non-tied |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m, by_d in agg["vs_sft"].items():
        cells = []
        for d in ev.DECODINGS:
            a = by_d.get(d)
            if not a:
                cells += ["—"] * 4
                continue
            pooled = _ci(a["pooled"]) if a.get("pooled") else "—"
            won = f"{a['non_tied']['mean']:.0%}" if a["non_tied"] else "—"
            cells += [_pm(a, signed=True), f"{a['seeds_above_0']} of {n}", pooled, won]
        lines.append(f"| {NAMES[m]} | " + " | ".join(cells) + " |")
    rm = agg.get("reward_model")
    if rm:
        lines += ["", f"Reward model held-out accuracy {_pm(rm['val_accuracy'])}"
                  + (f" (labelers' agreement {_pm(rm['label_agreement'])})" if "label_agreement" in rm else "") + "."]
    lines += ["", "![gain over SFT per seed](seeds.png)", "", "## Reading", ""] + reading(result)
    lines += [f"- {n} seeds give a range, not a distribution; the pooled CI is the evaluation noise of the mean "
              "over these seeds (prompts resampled), not the spread another seed could bring.", "",
              "## Per seed", "", "| seed | run | " + " | ".join(f"{NAMES[m]} greedy / sampled" for m in agg["vs_sft"]) + " |",
              "|---|---|" + "---|" * len(agg["vs_sft"])]
    for ps in result["per_seed"]:
        cells = [" / ".join(_ci(x[d]) if d in x else "—" for d in ev.DECODINGS)
                 for x in (ps["vs_sft"].get(m, {}) for m in agg["vs_sft"])]
        lines.append(f"| {ps['seed']} | `{ps['run']}` | " + " | ".join(cells) + " |")
    lines += ["", f"This invocation took {result['seconds']:.0f} s (finished parts are read back)."]
    return write_text(path, "\n".join(lines) + "\n")


# -----------------------------------------------------------------------------
# the experiment


def run(cfg: SeedsConfig) -> dict:
    """Seeds 0 .. n_seeds-1 of the run's recipe -> OUT/metrics.json, OUT/seeds.png, OUT/report.md."""
    t0 = time.time()
    if cfg.n_seeds < 1:
        raise SystemExit(f"error: --n_seeds must be >= 1, got {cfg.n_seeds}")
    run_paths(cfg.run, ("sft", "reward_model", "ppo"))
    recipe = read_recipe(cfg.run)
    if not os.path.exists(os.path.join(cfg.run, "metrics.json")):
        raise SystemExit(f"error: {cfg.run}: the pipeline has not finished (no metrics.json); run "
                         f"`python -m rlhf.pipeline --out {cfg.run}` again")
    out = output_dir(cfg.run, cfg.out, "seeds")
    make_dir(out, "--out")
    per_seed, rows_by_seed, prompts = [], [], None
    for k in range(cfg.n_seeds):
        run_dir = seed_run(recipe, cfg, k, out)
        extra = {m: method_run(m, cfg, run_dir, k, out) for m in ("grpo", "dpo") if getattr(cfg, m)}
        res, rows = judge(recipe, cfg, run_dir, extra)
        per_seed.append({"seed": k, "run": run_dir, "dirs": extra, **seed_numbers(res)})
        rows_by_seed.append(rows)
        prompts = prompts or res["prompts"]
    result = {"experiment": "seeds", "config": asdict(cfg), "out": out, "preset": recipe["preset"],
              "prompts": prompts, "per_seed": per_seed,
              "aggregate": aggregate(per_seed, rows_by_seed, pipeline_config(recipe, cfg, out).n_boot)}
    result["plot"] = plot(result, os.path.join(out, "seeds.png"))
    result["seconds"] = time.time() - t0
    result["report"] = write_report(result, os.path.join(out, "report.md"))
    ckpt_io.atomic_write_json(os.path.join(out, "metrics.json"), result)
    for m, by_d in result["aggregate"]["vs_sft"].items():
        print(f"{NAMES[m]:<10} vs SFT: " + "; ".join(
            f"{d} {_pm(a, signed=True)}, CI > 0 in {a['seeds_above_0']} of {cfg.n_seeds}" for d, a in by_d.items()))
    print(f"seeds: {out}/report.md, {result['plot']} ({result['seconds']:.0f}s)")
    return result


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(SeedsConfig, argv, PRESETS, prog="python -m rlhf.experiments seeds")
    return run_entry_point(run, cfg, errors=(DataError, FileNotFoundError))


if __name__ == "__main__":
    utf8_console()
    main()
