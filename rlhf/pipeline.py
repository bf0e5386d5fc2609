"""The whole InstructGPT recipe in one command: world -> tokenizer -> pretrain -> SFT -> reward model
-> PPO -> best-of-N -> evaluation -> report.md + plots + metrics.json.

    python -m rlhf.pipeline                                  # --preset default (5-15 min on 2 CPU cores)
    python -m rlhf.pipeline --preset tiny --out runs/tiny    # ~15 s smoke run (CI runs it; models learn nothing)
    python -m rlhf.pipeline --preset headline                # default + a larger SFT-only model to beat
    python -m rlhf.pipeline --out runs/default               # re-run: finished stages are reused
    python -m rlhf.pipeline --sft.max_iters=600 --ppo.init_kl_coef=0.05 --out runs/tuned   # per-stage overrides

Ouyang et al. (2022), figure 2, in miniature; each step is one stage module, called through its public
`train_x(cfg)` function with a config built from that module's own preset (`tiny` or `default`), the
pipeline preset's overrides, and `--stage.key=value` overrides from the command line:

    data/            rlhf.world export: the corpus, demonstrations, prompts of each split (JSONL)
    tokenizer/       byte-level BPE trained on the corpus (minigpt.tokenizer.train_bpe)
    pretrain/        minigpt.train     next-token prediction on the corpus      (the "GPT-3" of the story)
    sft/             rlhf.sft          imitation of the labelers' demonstrations  (step 1 of figure 2)
    reward_model/    rlhf.reward_model Bradley-Terry on ranked SFT samples        (step 2)
    ppo/             rlhf.ppo          PPO against the RM with a KL penalty to SFT (step 3)
    pretrain_large/, sft_large/        (--headline) a larger model given SFT only
    eval/            rlhf.evaluate     every model on the same held-out test prompts, cached per stage
    metrics.json, report.md, plots/    the results

A stage whose directory has a summary.json is finished and is skipped on a re-run; an interrupted
stage resumes from its ckpt.pt. metrics.json holds (nested: metrics["ppo"]["kl"] is "ppo.kl") at least
base.gold_score, sft.gold_score, ppo.gold_score, ppo.win_rate_vs_sft, ppo.kl, reward_model.val_accuracy,
reward_model.label_agreement and seconds.total, with 95% bootstrap CIs, per-family / per-H breakdowns,
best-of-N and the headline comparison.

`--preset gpu` is sized for one modern GPU (a 16x larger model and 4x the comparisons; not yet run end to
end: see README). The `gpt2` preset is the GPU-scale recipe (a 92M-parameter, 12-layer, 768-wide GPT;
an estimated hour on one modern GPU, never run): `python -m rlhf.pipeline --preset gpt2 --out runs/gpt2`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch

from minigpt import checkpoint as ckpt_io
from minigpt.configurator import (_field_types, check_bounds, convert, format_help, parse_config, replace_checked,
                                  utf8_console)
from minigpt.files import make_dir
from minigpt.tokenizer import train_bpe
from minigpt.trainer import (NonFiniteLossError, ResumeError, autocast_context, check_dtype_name, compile_error,
                             compile_failed, compute_dtype, exercise_not_written, out_of_memory_error, pick_device,
                             smaller_step)
from rlhf import dpo, evaluate as ev, gold, ppo, pretrain, reward_model, sft
from rlhf.best_of_n import best_of_n_kl, best_of_n_rows, gold_at_kl, n_for_kl
from rlhf.formats import DataError
from rlhf.plots import plot_all
from rlhf.report import targets_met, write_report
from rlhf.rollout import MIN_PROMPT_TOKENS
from rlhf.world.__main__ import export


@dataclass
class PipelineConfig:
    """One command from the instruction world to report.md (see the module docstring)."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"eval_prompts": ">= 1", "eval_batch_size": ">= 1", "eval_max_new_tokens": ">= 1",
              "eval_temperature": ">= 0", "n_boot": ">= 100"}
    out: str = "runs/default"          # run directory; every stage writes a sub-directory of it
    seed: int = 0                      # seed of the evaluation prompts, sampled decoding and bootstrap
    device: str = "auto"               # auto = cuda, else mps, else cpu (passed to every stage)
    dtype: str = "auto"                # float32 / bfloat16: every stage's (over --STAGE.dtype); auto = each stage's own
    export_data: bool = True           # write the world's datasets to OUT/data (pretraining reads its corpus.txt)
    headline: bool = False             # also pretrain + SFT a larger model and compare it with the PPO model
    eval_prompts: int = 200            # held-out test prompts every model answers
    eval_split: Literal["test", "val"] = "test"  # "test" to report; "val" while tuning a preset (never tune on test)
    eval_max_new_tokens: int = 48      # response budget at evaluation
    eval_temperature: float = 1.0      # temperature of the sampled evaluation (greedy is evaluated too)
    eval_batch_size: int = 64          # prompts per generation batch at evaluation
    n_boot: int = 2000                 # bootstrap resamples per 95% CI
    best_of_n: int = 8                 # N of best-of-N (SFT samples re-ranked by the RM); 0 = skip
    n_samples_report: int = 6          # prompts in the report's sample table
    progress: bool = True              # progress bars
    stop_after: str = ""               # run the stages up to and including this one, then stop (e.g. "sft")


# The CPU default's own overrides of the stage modules' default presets (the modules' presets carry the
# tuning; e.g. rlhf.reward_model's default ranks each candidate next to its chatter-toggled twin,
# without which PPO learned to add "Sure! The answer is" instead of getting answers right).
DEFAULT_STAGES: dict[str, dict] = {
    "pretrain_large": dict(n_layer=6, n_head=5, n_embd=160),   # headline: ~2.3x the non-embedding parameters
}

# Which preset of every stage module a pipeline preset starts from, then its own overrides per stage.
# Keys of "stages": tokenizer, pretrain, sft, reward_model, ppo, pretrain_large, sft_large.
PIPELINE_PRESETS: dict[str, dict] = {
    "tiny": {
        "pipeline": dict(eval_prompts=24, eval_max_new_tokens=12, eval_batch_size=24, n_boot=500, best_of_n=4,
                         headline=True, n_samples_report=4),
        "stage_preset": "tiny",
        "stages": {   # the modules' tiny presets, with their in-stage evaluations cut (eval/ does that)
            "sft": dict(n_eval=8),
            "reward_model": dict(n_train_prompts=32, n_val_prompts=16),
            "ppo": dict(n_eval_prompts=4, eval_interval=0),
            "pretrain_large": dict(n_layer=2, n_head=2, n_embd=48),
        },
    },
    # The course's student-scale run (~1.5 minutes on 2 CPU cores): a 2-layer, 64-wide model; each stage still
    # does its job on the gold oracle (python tools/grade.py --e2e checks that it does).
    "small": {
        "pipeline": dict(eval_prompts=200, n_boot=1000, best_of_n=4, n_samples_report=4),
        "stage_preset": "small",
        "stages": {},
    },
    "default": {
        "pipeline": dict(),
        "stage_preset": "default",
        "stages": DEFAULT_STAGES,
    },
    # default + a larger model (6 layers, 160 wide: ~2.3x the non-embedding parameters) given SFT only
    "headline": {
        "pipeline": dict(headline=True),
        "stage_preset": "default",
        "stages": DEFAULT_STAGES,
    },
    # One modern GPU, aiming at <= 10 minutes: a 16x larger model than the CPU default (8 layers, 384 wide,
    # 2000 pretraining steps on 10M characters) and 4x the comparisons, so that the reward model can see
    # content; the headline's SFT-only model is 2.6x larger again. NOT YET RUN end to end: the sizes come
    # from single-stage measurements on an H200 (RM 66.8% -> 70.6% held-out accuracy with 4x comparisons).
    "gpu": {
        "pipeline": dict(eval_prompts=500, headline=True),
        "stage_preset": "default",
        "stages": {
            "pretrain": dict(n_layer=8, n_head=8, n_embd=384, corpus_chars=10_000_000, max_iters=2000),
            "reward_model": dict(n_train_prompts=8000),
            "pretrain_large": dict(n_layer=12, n_head=8, n_embd=512),     # 64-dim heads
        },
    },
    # The GPU recipe (documented, not run in CI): GPT-2 small's shape on a much larger world corpus.
    "gpt2": {
        "pipeline": dict(eval_prompts=1000, eval_max_new_tokens=64, eval_batch_size=256, best_of_n=16,
                         headline=True),
        "stage_preset": "default",
        "stages": {
            "pretrain": dict(n_layer=12, n_head=12, n_embd=768, block_size=512, vocab_size=8192,
                             corpus_chars=50_000_000, tokenizer_chars=2_000_000, max_iters=5000, batch_size=64,
                             learning_rate=6e-4, min_lr=6e-5, warmup_iters=200, eval_interval=500, dropout=0.0),
            "sft": dict(n_demos=13_000, max_iters=2000, batch_size=64, learning_rate=5e-5, min_lr=5e-6),
            "reward_model": dict(n_train_prompts=33_000, n_val_prompts=2000, batch_size=32, learning_rate=9e-6,
                                 min_lr=9e-7),
            "ppo": dict(max_iters=500, batch_size=256, micro_batch_size=32, learning_rate=1e-5, n_prompts=31_000,
                        ptx_coef=0.1),
            "pretrain_large": dict(n_layer=24, n_head=16, n_embd=1024),   # GPT-2 medium's shape (311M at this vocabulary)
        },
    },
}

STAGE_NAMES = ("data", "tokenizer", "pretrain", "sft", "reward_model", "ppo", "pretrain_large", "sft_large",
               "best_of_n", "eval")
STAGE_TITLES = {"data": "world datasets", "tokenizer": "BPE tokenizer", "pretrain": "pretraining",
                "sft": "supervised fine-tuning", "reward_model": "reward model", "ppo": "PPO",
                "pretrain_large": "pretraining (larger model)", "sft_large": "SFT (larger model)",
                "best_of_n": "best-of-N", "eval": "evaluation + report"}


# ----------------------------------------------------------------------------------------------------
# configs

def stage_classes() -> dict:
    """{stage: (config class, its PRESETS)} of the stage modules."""
    return {"pretrain": (pretrain.WorldPretrainConfig, pretrain.PRESETS), "sft": (sft.SFTConfig, sft.PRESETS),
            "reward_model": (reward_model.RMConfig, reward_model.PRESETS), "ppo": (ppo.PPOConfig, ppo.PRESETS),
            "pretrain_large": (pretrain.WorldPretrainConfig, pretrain.PRESETS),
            "sft_large": (sft.SFTConfig, sft.PRESETS)}


def parse_args(argv: list[str] | None) -> tuple[PipelineConfig, str, dict[str, dict[str, str]]]:
    """(pipeline config, preset name, {stage: {key: raw value}}) from the command line.

    `--stage.key=value` goes to one stage's config (checked against that config's fields later);
    everything else is parsed into PipelineConfig by minigpt.configurator.parse_config.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    own, stage_raw = [], {}
    preset = "default"
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "." in a.split("=", 1)[0]:
            key, eq, value = a[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise SystemExit(f"error: {a} needs a value ({a}=VALUE)")
                value, i = argv[i + 1], i + 1
            stage, _, field = key.partition(".")
            if stage not in stage_classes():
                raise SystemExit(f"error: unknown stage {stage!r} in {a}; stages: {', '.join(stage_classes())}")
            stage_raw.setdefault(stage, {})[field.replace("-", "_")] = value
        else:
            if a == "--preset" and i + 1 < len(argv):
                preset = argv[i + 1]
            elif a.startswith("--preset="):
                preset = a.split("=", 1)[1]
            own.append(a)
        i += 1
    presets = {name: p["pipeline"] for name, p in PIPELINE_PRESETS.items()}
    if preset not in presets:
        raise SystemExit(f"error: unknown preset {preset!r}; choose one of: {', '.join(presets)}")
    default_out = os.path.join("runs", preset) if preset != "default" else PipelineConfig.out   # runs/PRESET
    if any(a in ("-h", "--help") for a in own):
        shown = replace(PipelineConfig(), **presets[preset], out=default_out)
        print(format_help(PipelineConfig, presets, shown, prog="python -m rlhf.pipeline"))
        print("\nper-stage overrides: --STAGE.KEY=VALUE with STAGE in " + ", ".join(stage_classes()) +
              " (e.g. --ppo.init_kl_coef=0.05); python -m rlhf.ppo --help lists a stage's keys")
        raise SystemExit(0)
    cfg = parse_config(PipelineConfig, own, presets, prog="python -m rlhf.pipeline")
    if not any(a.startswith("--out") for a in own):
        cfg = replace(cfg, out=default_out)
    return cfg, preset, stage_raw


def build_stage_configs(cfg: PipelineConfig, preset: str, stage_raw: dict | None = None) -> dict:
    """Every stage's config: the module's preset, the pipeline preset's overrides, the command line's,
    and the wiring (directories inside cfg.out, resume, device) on top."""
    classes = stage_classes()
    p = PIPELINE_PRESETS[preset]
    out = cfg.out
    d = {s: os.path.join(out, s) for s in STAGE_NAMES}
    wiring = {
        "pretrain": dict(out_dir=d["pretrain"], data=os.path.join(d["data"], "corpus.txt") if cfg.export_data else ""),
        "sft": dict(out_dir=d["sft"], init_from=d["pretrain"]),
        "reward_model": dict(out_dir=d["reward_model"], sft_dir=d["sft"], base_dir=d["pretrain"]),
        "ppo": dict(out_dir=d["ppo"], sft_dir=d["sft"], rm_dir=d["reward_model"]),
        "pretrain_large": dict(out_dir=d["pretrain_large"],
                               data=os.path.join(d["data"], "corpus.txt") if cfg.export_data else ""),
        "sft_large": dict(out_dir=d["sft_large"], init_from=d["pretrain_large"]),
    }
    cfgs = {}
    for stage, (cls, presets) in classes.items():
        module_preset = presets.get(p["stage_preset"], {})
        c = replace_checked(cls(), module_preset, where=f"{stage} preset {p['stage_preset']!r}:")
        if stage == "pretrain_large":   # the larger model is the pretraining config, widened
            c = replace_checked(c, p["stages"].get("pretrain", {}), where=f"pipeline preset {preset!r} pretrain:")
        if stage == "sft_large":
            c = replace_checked(c, p["stages"].get("sft", {}), where=f"pipeline preset {preset!r} sft:")
        c = replace_checked(c, p["stages"].get(stage, {}), where=f"pipeline preset {preset!r} {stage}:")
        raw = (stage_raw or {}).get(stage, {})
        types_ = _field_types(cls)
        for key in raw:
            if key not in types_:
                raise SystemExit(f"error: --{stage}.{key}: {cls.__name__} has no field {key!r} "
                                 f"(python -m {cls.__module__} --help lists them)")
        try:
            c = replace(c, **{k: convert(v, types_[k], f"{stage}.{k}") for k, v in raw.items()})
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        check_bounds(c, flag=f"--{stage}.")             # e.g. --ppo.kl_target=0: one line naming it
        if hasattr(c, "dtype"):                         # before any stage trains, not when this one starts
            check_dtype_name(c.dtype, f"--{stage}.dtype")
        wire = dict(wiring[stage], device=cfg.device)
        if cfg.dtype != "auto":
            wire["dtype"] = cfg.dtype
        if hasattr(c, "resume"):   # an interrupted stage continues from its ckpt.pt; a fresh one starts fresh
            wire["resume"] = os.path.exists(os.path.join(wiring[stage]["out_dir"], ckpt_io.RESUME_FILE))
        check_not_wired(stage, sorted(set(raw) & set(wire)), wire, cfg, cls.__module__)
        if hasattr(c, "progress"):
            wire["progress"] = cfg.progress and c.progress   # (--STAGE.progress=false still quiets one stage)
        cfgs[stage] = replace(c, **wire)
    return cfgs


def check_not_wired(stage: str, wired: list[str], wire: dict, cfg: PipelineConfig, module: str) -> None:
    """A one-line error for a --STAGE.key the pipeline sets itself (it would be recorded, then ignored)."""
    if not wired:
        return
    key = wired[0]
    why = {"device": f"every stage of a run computes on the run's --device (now {cfg.device}); give --device",
           "dtype": f"--dtype={cfg.dtype} sets every stage's precision; give one of the two",
           "resume": "the pipeline resumes a stage by itself when its ckpt.pt is there"}.get(
        key, f"set by the pipeline ({wire[key]}, in the run's layout); run `python -m {module}` on its own "
             f"to choose it")
    raise SystemExit(f"error: --{stage}.{key}: {why}")


# ----------------------------------------------------------------------------------------------------
# the stages that live here (data, tokenizer, best-of-N, evaluation); the others are train_x(cfg) calls

def export_data(data_dir: str, pre_cfg, cfg: PipelineConfig, n_demos: int, demo_seed: int) -> dict:
    """OUT/data: the world's datasets as JSONL (and the pretraining corpus the pretrain stage reads);
    n_demos and demo_seed = the SFT stage's, so that OUT/data/demonstrations.jsonl is what SFT trained on."""
    manifest = export(data_dir, n_demos=n_demos, n_train=2000, n_val=300, n_test=cfg.eval_prompts,
                      n_rankings=200, k=4, corpus_chars=pre_cfg.corpus_chars, seed=pre_cfg.corpus_seed,
                      demo_seed=demo_seed, progress=cfg.progress)
    return {"stage": "data", **{k: v for k, v in manifest.items() if k != "bytes"},
            "settings": upstream_settings(pre_cfg)}


def train_tokenizer(tok_dir: str, pre_cfg) -> dict:
    """OUT/tokenizer: byte-level BPE on the start of the corpus; every model of the run shares it."""
    t0 = time.time()
    text = pretrain.world_text(pre_cfg)
    tok = train_bpe(text[:pre_cfg.tokenizer_chars], pre_cfg.vocab_size)
    ckpt_io.save_tokenizer(tok_dir, tok)
    sample = text[:2000]
    n = len(tok.encode(sample))
    return {"stage": "tokenizer", "vocab_size": tok.vocab_size, "trained_on_chars": min(len(text), pre_cfg.tokenizer_chars),
            "chars_per_token": len(sample) / max(n, 1), "seconds": time.time() - t0,
            "settings": upstream_settings(pre_cfg)}


def _best_of_n_fingerprint(run_dir: str, cfg: PipelineConfig, no_stop_reward: float | None) -> dict:
    ecfg = eval_config(cfg)
    rm_ckpt = ev._fingerprint(os.path.join(run_dir, "reward_model"), ecfg).get("checkpoint")
    return ev._fingerprint(os.path.join(run_dir, "sft"), ecfg,
                           {"n": cfg.best_of_n, "rm": rm_ckpt, "no_stop_reward": no_stop_reward,
                            "rows": 2})   # row format 2 added gold_by_n (older caches are re-sampled)


def best_of_n_cached(run_dir: str, cfg: PipelineConfig, no_stop_reward: float | None = -2.0) -> bool:
    fp = _best_of_n_fingerprint(run_dir, cfg, no_stop_reward)
    return ev.load_cached(os.path.join(run_dir, "eval"), "best_of_n", fp) is not None


def run_best_of_n(run_dir: str, cfg: PipelineConfig, no_stop_reward: float | None = -2.0) -> dict:
    """eval/best_of_n.jsonl: for each test prompt the RM's favourite of N SFT samples (no RL at all)."""
    ecfg = eval_config(cfg)
    sft_dir, rm_dir = os.path.join(run_dir, "sft"), os.path.join(run_dir, "reward_model")
    eval_dir = os.path.join(run_dir, "eval")
    fp = _best_of_n_fingerprint(run_dir, cfg, no_stop_reward)
    rows = ev.load_cached(eval_dir, "best_of_n", fp)
    cached = rows is not None
    if not cached:
        t0 = time.time()
        device = pick_device(cfg.device)
        policy, tok = ckpt_io.load_model(sft_dir, device=device)
        rm, rm_tok = ev.load_reward_model(rm_dir, device)
        examples = ev.eval_examples(ecfg.n_prompts, ecfg.seed, ecfg.split)
        rows = best_of_n_rows(policy, tok, rm, rm_tok, examples, cfg.best_of_n, ecfg,
                                 progress="best-of-N" if cfg.progress else None, no_stop_reward=no_stop_reward)
        ev.save_cached(eval_dir, "best_of_n", rows, fp, {"seconds": time.time() - t0, "n": cfg.best_of_n})
    return {"n": cfg.best_of_n, "rows": len(rows), "cached": cached}


def eval_config(cfg: PipelineConfig) -> ev.EvalConfig:
    return ev.EvalConfig(n_prompts=cfg.eval_prompts, split=cfg.eval_split, seed=cfg.seed, max_new_tokens=cfg.eval_max_new_tokens,
                      temperature=cfg.eval_temperature, batch_size=cfg.eval_batch_size, n_boot=cfg.n_boot,
                      n_samples_report=cfg.n_samples_report, device=cfg.device)


# ----------------------------------------------------------------------------------------------------
# metrics.json

def _params(stage_dir: str) -> int | None:
    """A saved model's parameters as GPT.num_params() counts them: without the position embedding, and the
    token embedding once (the LM head shares its tensor, so the state dict lists that tensor twice)."""
    path = os.path.join(stage_dir, "model.pt")
    if not os.path.exists(path):
        return None
    obj = ckpt_io.safe_load(path)
    seen, n = set(), 0
    for k, v in obj["model"].items():
        if not k.endswith("wpe.weight") and v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            n += v.numel()
    return n


def build_metrics(run_dir: str, results: dict, cfg: PipelineConfig, preset: str, seconds: dict) -> dict:
    """The flat-enough metrics.json: one block per stage (greedy numbers first, sampled in a sub-block),
    win rates against SFT, KL, reward model, best-of-N, headline, timings."""
    st, cmp_ = results["stages"], results.get("comparisons", {})
    m: dict = {"preset": preset, "out": run_dir, "device": str(pick_device(cfg.device)),
               "eval": {**results["prompts"], "max_new_tokens": cfg.eval_max_new_tokens,
                        "temperature_sampled": cfg.eval_temperature, "n_boot": cfg.n_boot}}
    for stage, s in st.items():
        g, sa = s.get("greedy", {}), s.get("sampled", {})
        block = {"gold_score": g.get("gold_score"), "gold_ci": g.get("gold_ci"),
                 "gold_score_sampled": sa.get("gold_score"), "gold_ci_sampled": sa.get("gold_ci"),
                 "stop_rate": g.get("stop_rate"), "mean_tokens": g.get("mean_tokens"), "rm_score": g.get("rm_score"),
                 "per_family": g.get("per_family"), "per_h": g.get("per_h"),
                 "sampled": {k: sa.get(k) for k in ("stop_rate", "mean_tokens", "rm_score", "per_family", "per_h")}}
        c = cmp_.get(f"{stage}_vs_sft")
        if c:
            cg, cs = c.get("greedy"), c.get("sampled")
            block.update({
                "win_rate_vs_sft": cg["gold"]["win_rate_half"], "win_rate_vs_sft_ci": cg["gold"]["win_rate_half_ci"],
                "win_rate_vs_sft_nontied": cg["gold"]["win_rate"],
                "wins_ties_losses_vs_sft": [cg["gold"]["wins"], cg["gold"]["ties"], cg["gold"]["losses"]],
                "gold_diff_vs_sft": cg["gold_diff"],
                "rm_win_rate_vs_sft": cg["rm"]["win_rate_half"] if cg.get("rm") else None,
            })
            if cs:
                block["sampled"].update({"win_rate_vs_sft": cs["gold"]["win_rate_half"],
                                         "win_rate_vs_sft_nontied": cs["gold"]["win_rate"],
                                         "wins_ties_losses_vs_sft": [cs["gold"]["wins"], cs["gold"]["ties"], cs["gold"]["losses"]],
                                         "gold_diff_vs_sft": cs["gold_diff"],
                                         "rm_win_rate_vs_sft": cs["rm"]["win_rate_half"] if cs.get("rm") else None})
        if "kl" in s:
            block["kl"], block["kl_ci"], block["kl_per_token"] = s["kl"]["mean"], s["kl"]["ci"], s["kl"]["per_token"]
        m[stage] = block
    for stage, d in (("base", "pretrain"), ("sft", "sft"), ("ppo", "ppo"), ("sft_large", "sft_large")):
        if stage in m:
            m[stage]["params"] = _params(os.path.join(run_dir, d))
            summ = ckpt_io.read_summary(os.path.join(run_dir, d)) or {}
            m[stage]["train"] = {k: summ[k] for k in ("val_loss", "train_loss", "steps", "iters", "kl_coef",
                                                      "gold_score", "initial") if k in summ}
    rm = ckpt_io.read_summary(os.path.join(run_dir, "reward_model")) or {}
    if rm:
        m["reward_model"] = {k: rm.get(k) for k in (
            "val_accuracy", "label_agreement", "gap_to_ceiling", "go", "gold_accuracy", "labeler_gold_accuracy",
            "pairs", "informative_share", "informative_share_train", "train_pairs", "rm_gold_pearson",
            "rm_gold_pearson_within_prompt", "by_family", "by_h", "val_loss", "steps", "demo_reward_mean", "probes")}
        m["reward_model"]["ece"] = (rm.get("calibration") or {}).get("ece")
    if "best_of_n" in m:
        rows = ev.by_decoding(ev.read_rows(os.path.join(run_dir, "eval", "best_of_n.jsonl")), "greedy")
        m["best_of_n"].update({"n": cfg.best_of_n, "kl": best_of_n_kl(cfg.best_of_n),
                               "oracle_gold": sum(r["oracle_gold"] for r in rows) / max(len(rows), 1),
                               "mean_gold_of_n": sum(r["mean_gold_of_n"] for r in rows) / max(len(rows), 1)})
        if rows and all("gold_by_n" in r for r in rows):   # best-of-k for k = 1..N, from the same samples
            curve = [{"n": k, "kl": best_of_n_kl(k),
                      "gold": sum(r["gold_by_n"][k - 1] for r in rows) / len(rows)} for k in range(1, cfg.best_of_n + 1)]
            m["best_of_n"]["curve"] = curve
            if m.get("ppo", {}).get("kl") is not None:    # PPO against best-of-N at PPO's own KL
                kl = max(m["ppo"]["kl"], 0.0)
                m["best_of_n"]["at_ppo_kl"] = {"kl": kl, "n": n_for_kl(kl), "gold": gold_at_kl(curve, kl),
                                               "ppo_gold_sampled": m["ppo"].get("gold_score_sampled")}
    c = cmp_.get("ppo_vs_sft_large") or {}
    if c.get("greedy") and "sft_large" in m and "ppo" in m:
        pp, pl = m["ppo"].get("params"), m["sft_large"].get("params")
        g = c["greedy"]
        m["headline"] = {"win_rate": g["gold"]["win_rate_half"], "win_rate_ci": g["gold"]["win_rate_half_ci"],
                         "wins_ties_losses": [g["gold"]["wins"], g["gold"]["ties"], g["gold"]["losses"]],
                         "gold_diff": g["gold_diff"], "ppo_gold": m["ppo"]["gold_score"],
                         "sft_large_gold": m["sft_large"]["gold_score"], "ppo_params": pp, "sft_large_params": pl,
                         "size_ratio": (pl / pp) if pp and pl else None}
        if c.get("sampled"):
            s = c["sampled"]
            m["headline"]["sampled"] = {
                "win_rate": s["gold"]["win_rate_half"], "win_rate_ci": s["gold"]["win_rate_half_ci"],
                "wins_ties_losses": [s["gold"]["wins"], s["gold"]["ties"], s["gold"]["losses"]],
                "gold_diff": s["gold_diff"], "ppo_gold": m["ppo"]["gold_score_sampled"],
                "sft_large_gold": m["sft_large"]["gold_score_sampled"]}
    m["seconds"] = seconds
    return m


# ----------------------------------------------------------------------------------------------------
# the run

class Progress:
    """One display across stages: a banner per stage with its number, what it is, and the time so far."""

    def __init__(self, stages: list[str]):
        self.stages, self.t0 = stages, time.time()

    def start(self, stage: str, skipped: bool = False) -> None:
        i = self.stages.index(stage) + 1
        el = time.time() - self.t0
        what = "finished earlier, reusing it" if skipped else "running"
        where = "eval/" if stage in ("best_of_n", "eval") else f"{stage}/"
        print(f"\n==== [{i}/{len(self.stages)}] {STAGE_TITLES[stage]} ({where}) - {what} "
              f"- {el // 60:.0f}m{el % 60:02.0f}s elapsed ====", flush=True)


class Timings:
    """Seconds per stage, kept in OUT/timings.json across re-runs: wall-clock, and CPU time of this process
    (time.process_time: what the stage would cost on an idle machine, roughly, when the CPU is shared).
    On a CUDA device also each stage's peak GPU memory (torch.cuda.max_memory_allocated), the precision it
    computed in (bf16 autocast, or float32 on a GPU without bf16 hardware) and the GPU's name, kept like the
    seconds, so a re-run elsewhere (the report regenerated on a laptop) still shows them. A stage stopped
    before finishing (Ctrl-C, out of memory, a time limit) keeps the time it spent as "partial", added to
    its seconds when a later run resumes it from its checkpoint, dropped when the stage starts afresh."""

    def __init__(self, run_dir: str, device: torch.device | None = None):
        self.path = os.path.join(run_dir, "timings.json")
        self.device = device if device is not None and device.type == "cuda" else None
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.gpu: dict = {}                  # {"name": ..., "peak_memory_gb": {stage: GiB}, "precision": {stage: ...}}
        self.partial: dict[str, list[float]] = {}   # {stage: [wall, cpu]} of earlier attempts it resumes from
        saved = ckpt_io.read_json_file(self.path)
        if saved is not None:
            if "wall" in saved:
                self.wall, self.cpu, self.gpu = saved["wall"], saved.get("cpu", {}), saved.get("gpu", {})
                self.partial = saved.get("partial", {})
            else:                        # an older flat {stage: seconds} file
                self.wall = saved

    def start(self, stage: str, resumes: bool = False) -> None:
        """resumes: the stage continues from an earlier attempt's checkpoint (else that attempt's time,
        spent on work now thrown away, is not counted)."""
        if not resumes:
            self.partial.pop(stage, None)
        self.t0, self.c0 = time.time(), time.process_time()
        if self.device is not None:
            torch.cuda.reset_peak_memory_stats(self.device)

    def stopped_early(self, stage: str) -> None:
        """`stage` stopped before finishing: keep its time for the run that resumes it."""
        wall, cpu = self.partial.get(stage, [0.0, 0.0])
        self.partial[stage] = [wall + time.time() - self.t0, cpu + time.process_time() - self.c0]
        self._save()

    def stop(self, stage: str, dtype: str | None = None) -> None:
        """End `stage`'s timing; dtype: the stage's --dtype, for the precision it computed in on CUDA (None:
        a stage that computes nothing on the GPU)."""
        wall, cpu = self.partial.pop(stage, [0.0, 0.0])
        self.wall[stage] = wall + time.time() - self.t0
        self.cpu[stage] = cpu + time.process_time() - self.c0
        if self.device is not None:
            self.gpu["name"] = torch.cuda.get_device_name(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**30
            self.gpu.setdefault("peak_memory_gb", {})[stage] = round(peak, 2)
            if dtype is not None:
                bf16 = compute_dtype(self.device, dtype) == torch.bfloat16
                self.gpu.setdefault("precision", {})[stage] = "bf16 autocast" if bf16 else "float32"
        self._save()

    def _save(self) -> None:
        ckpt_io.atomic_write_json(self.path, {"wall": self.wall, "cpu": self.cpu, "gpu": self.gpu,
                                              "partial": self.partial})

    def seconds(self, this_run: float) -> dict:
        """metrics.json's "seconds": wall per stage, total (all stages, this run or earlier), this run, CPU."""
        return {**{k: round(v, 1) for k, v in self.wall.items()}, "total": round(sum(self.wall.values()), 1),
                "this_run": round(this_run, 1),
                "cpu": {**{k: round(v, 1) for k, v in self.cpu.items()}, "total": round(sum(self.cpu.values()), 1)}}


def derived_fields(cfg) -> tuple[str, ...]:
    """The fields of a stage config that the stage rewrites itself before saving its config.json: the step
    count derived from `epochs` when max_iters is 0 (rlhf.reward_model, rlhf.dpo), and DPO's validation
    batches, fitted to the held-out set (they only say how many pairs the curve is measured on: the trained
    weights do not depend on them). Comparisons with a saved config leave them out."""
    if isinstance(cfg, dpo.DPOConfig):
        return ("eval_iters",) + (("max_iters",) if cfg.max_iters == 0 else ())
    if isinstance(cfg, reward_model.RMConfig):
        return ("max_iters",) if cfg.max_iters == 0 else ()
    return ()


def upstream_settings(pre_cfg) -> dict:
    """What OUT/data and OUT/tokenizer are made from (recorded in their summary.json as "settings")."""
    return {"corpus_chars": pre_cfg.corpus_chars, "corpus_seed": pre_cfg.corpus_seed,
            "tokenizer_chars": pre_cfg.tokenizer_chars, "vocab_size": pre_cfg.vocab_size}


# Settings a started or finished stage may be re-run with other values of: how it computes, not what it trains
# (the precision; PPO's micro-batches, which split the same update into other pieces).
HOW_IT_COMPUTES = ("dtype", "micro_batch_size")


def stage_differences(stage: str, scfg: dict, out: str) -> dict:
    """{field: (what the stage in OUT was trained or started with, what this run asks for)}: {} when the
    same, or when the stage has not started. data/ and tokenizer/ compare the pretraining settings they
    are made from (runs older than that record say nothing)."""
    stage_dir = os.path.join(out, stage)
    if stage in ("data", "tokenizer"):
        then = (ckpt_io.read_summary(stage_dir) or {}).get("settings") or {}
        now = upstream_settings(scfg["pretrain"])
        keys = ("corpus_chars", "corpus_seed") if stage == "data" else tuple(now)
        return {k: (then[k], now[k]) for k in keys if k in then and then[k] != now[k]}
    if stage not in scfg:
        return {}
    c = scfg[stage]
    return ckpt_io.config_differences(c.out_dir, c, ignore=HOW_IT_COMPUTES + derived_fields(c)) or {}


def check_reuse(scfg: dict, stages: list[str], out: str, preset: str, stage_raw: dict | None) -> None:
    """A finished stage is reused on a re-run (a started one resumes), so it must have been trained with
    the settings asked for now. When this command asks for other values (--STAGE.key=...) or another preset
    than the run was made with: stop with one line, before anything is written (reusing would report the
    old model under the new settings). When the differences come from elsewhere (a stage trained by its
    own command, whose preset wires it slightly differently): say so in one line and reuse it."""
    made_with = (ckpt_io.read_json_file(os.path.join(out, "pipeline_config.json")) or {}).get("preset")
    for stage in stages:
        diffs = stage_differences(stage, scfg, out)
        if not diffs:
            continue
        shown = "; ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in list(diffs.items())[:3])
        shown += f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        asked = set(diffs) & set((stage_raw or {}).get("pretrain" if stage in ("data", "tokenizer") else stage, {}))
        where = os.path.join(out, stage)
        if asked or made_with not in (None, preset):
            why = f"this run is preset {preset!r}, that one {made_with!r}" if not asked else "asked for now"
            raise SystemExit(f"error: {where} was made with other settings ({shown}; {why}), and a re-run reuses "
                             f"what is there: use another --out (or delete {out} to start over)")
        print(f"note: {where} was made with other settings than this preset gives ({shown}), e.g. by its "
              f"own stage command; reusing it", flush=True)


def oom_in_stage(e: BaseException, stage: str, out: str, stage_cfg, cfg: PipelineConfig) -> SystemExit:
    """Running out of GPU memory in `stage` as one line: torch's account and the pipeline flags that make the
    stage need less. PPO's micro-batch is how it computes (HOW_IT_COMPUTES): the re-run resumes the stage
    from its last checkpoint. Other flags change what a stage trains, and a re-run refuses to reuse a stage
    started with other settings (it records them at its start), so the line says to delete it first."""
    first = ""
    if stage_cfg is None:                                # best-of-N and evaluation generate in these batches
        b = cfg.eval_batch_size
        step = (f"--eval_batch_size={b // 2}", f"now {b}: fewer prompts per generation batch") if b > 1 else None
    else:
        step = smaller_step(stage_cfg, f"--{stage}.")
        fields = re.findall(r"--\w+\.(\w+)=", step[0]) if step else []
        if not set(fields) <= set(HOW_IT_COMPUTES):
            first = f"delete {os.path.join(out, stage)} and "
    return out_of_memory_error(e, step, where=f" in stage {stage}", first=first, smaller="preset")


def check_room_for_answers(scfg: dict, cfg: PipelineConfig, stages: list[str]) -> None:
    """Every stage of this run that generates puts a prompt and its answer in the pretrained model's
    block_size; one that leaves under MIN_PROMPT_TOKENS for the prompt is a one-line error now, before
    pretraining, rather than a traceback in the stage that generates (rlhf.rollout.render_prompts' rule)."""
    lengths = [(f"--{s}.max_new_tokens", scfg[s].max_new_tokens) for s in ("sft", "reward_model", "ppo")
               if s in stages]
    if "eval" in stages or "best_of_n" in stages:
        lengths.append(("--eval_max_new_tokens", cfg.eval_max_new_tokens))
    for model in ("pretrain", "pretrain_large") if "pretrain_large" in stages else ("pretrain",):
        block = scfg[model].block_size
        for flag, n in lengths:
            if block - n < MIN_PROMPT_TOKENS:
                raise SystemExit(f"error: {flag}={n} leaves no room for a prompt in --{model}.block_size={block} "
                                 f"(it needs at least {n + MIN_PROMPT_TOKENS})")


def stage_failure(e: Exception, stage: str, out: str, stage_cfg, cfg: PipelineConfig) -> SystemExit | None:
    """The one-line error for a stage that stopped in a way the user can act on, with the pipeline's own
    flags (--STAGE.key): out of GPU memory, a NaN loss, a bad data file, torch.compile failing under
    --STAGE.compile=True. None for anything else (a bug keeps its traceback)."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return oom_in_stage(e, stage, out, stage_cfg, cfg)
    if isinstance(e, NonFiniteLossError):            # its own advice names the stage command's flags
        knobs = " or ".join(f"--{stage}.{k}" + (f" (now {getattr(stage_cfg, k)})" if hasattr(stage_cfg, k) else "")
                            for k in ("learning_rate", "grad_clip"))
        return SystemExit(f"error: stage {stage}: the loss became {e.loss} at step {e.step}; delete "
                          f"{os.path.join(out, stage)} and run again with a lower {knobs}")
    if isinstance(e, (DataError, FileNotFoundError)):
        return SystemExit(f"error: stage {stage}: {e}")
    if getattr(stage_cfg, "compile", False) and compile_failed(e):
        return compile_error(e, f"--{stage}.compile=True")
    return None


def run_pipeline(cfg: PipelineConfig, preset: str = "default", stage_raw: dict | None = None) -> dict:
    """Run (or resume) every stage into cfg.out; returns metrics.json's content."""
    t_run = time.time()
    out = cfg.out
    device = pick_device(cfg.device)
    autocast_context(device, cfg.dtype)              # a bad --device or --dtype: one line, before any work
    if not out:
        raise SystemExit("error: --out is empty: name the run directory (e.g. --out runs/mine)")
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(f"error: --out={out} is a file; the run directory must be a directory (or not exist yet)")
    if ckpt_io.is_stage_dir(out):
        raise SystemExit(f"error: --out={out} is one stage's run directory (it has {ckpt_io.CONFIG_FILE} or "
                         f"{ckpt_io.MODEL_FILE}); a pipeline run is a new directory, or one this command made")
    scfg = build_stage_configs(cfg, preset, stage_raw)
    stages = [s for s in STAGE_NAMES if (s not in ("pretrain_large", "sft_large") or cfg.headline)
              and (s != "best_of_n" or cfg.best_of_n > 0) and (s != "data" or cfg.export_data)]
    if cfg.stop_after:
        if cfg.stop_after not in stages:
            raise SystemExit(f"error: --stop_after={cfg.stop_after}: not a stage of this run ({', '.join(stages)})")
        stages = stages[:stages.index(cfg.stop_after) + 1]
    check_room_for_answers(scfg, cfg, stages)
    check_reuse(scfg, stages, out, preset, stage_raw)
    make_dir(out, "--out")
    ckpt_io.atomic_write_json(os.path.join(out, "pipeline_config.json"),
                              {"preset": preset, "pipeline": asdict(cfg), "stage_overrides": stage_raw or {},
                               "stages": {k: asdict(v) for k, v in scfg.items()}})
    progress = Progress(stages)
    timings = Timings(out, device)

    def copy_tokenizer(dst: str) -> None:
        os.makedirs(dst, exist_ok=True)
        src = os.path.join(out, "tokenizer", ckpt_io.TOKENIZER_FILE)
        if not os.path.exists(os.path.join(dst, ckpt_io.TOKENIZER_FILE)):
            shutil.copyfile(src, os.path.join(dst, ckpt_io.TOKENIZER_FILE))

    def run_pretrain(stage):
        copy_tokenizer(scfg[stage].out_dir)
        return pretrain.train_world_pretrain(scfg[stage])

    def tokenizer(_):
        s = train_tokenizer(os.path.join(out, "tokenizer"), scfg["pretrain"])
        ckpt_io.write_summary(os.path.join(out, "tokenizer"), s)
        return s

    def data(_):
        s = export_data(os.path.join(out, "data"), scfg["pretrain"], cfg, scfg["sft"].n_demos,
                        scfg["sft"].demo_seed)
        ckpt_io.write_summary(os.path.join(out, "data"), s)
        return s

    def best_of_n(_):
        return run_best_of_n(out, cfg, scfg["ppo"].no_stop_reward)   # scored as PPO's rollouts are

    # The pipeline is the caller that hands the gold judge to the stages (they never import it): SFT and
    # PPO log gold scores on val prompts, the reward model annotates its comparisons for "vs gold" metrics.
    def run_sft(s):
        return sft.train_sft(scfg[s], sft.gold_evaluator(scfg[s], gold.GoldEvaluator))

    runners = {"data": data, "tokenizer": tokenizer, "pretrain": run_pretrain, "pretrain_large": run_pretrain,
               "sft": run_sft, "sft_large": run_sft,
               "reward_model": lambda s: reward_model.train_reward_model(scfg[s], gold=gold.score),
               "ppo": lambda s: ppo.train_ppo(scfg[s], ppo.gold_evaluator(scfg[s], gold.GoldEvaluator)),
               "best_of_n": best_of_n}

    for stage in stages:
        if stage == "eval":
            break
        stage_dir = os.path.join(out, stage)
        done = ckpt_io.is_finished(stage_dir) if stage != "best_of_n" else best_of_n_cached(out, cfg, scfg["ppo"].no_stop_reward)
        progress.start(stage, skipped=done)
        if done:
            continue
        timings.start(stage, resumes=getattr(scfg.get(stage), "resume", False))
        try:
            result = runners[stage](stage) or {}
        except BaseException as e:           # a second Ctrl-C, out of memory, a NaN, a bug: the time still counts
            timings.stopped_early(stage)     # if a later run resumes the stage from its checkpoint
            failure = stage_failure(e, stage, out, scfg.get(stage), cfg) if isinstance(e, Exception) else None
            if failure is None:              # a bug (or a blank exercise, which main() reports): as it is
                raise
            raise failure from None
        if stage != "best_of_n" and not ckpt_io.is_finished(stage_dir):
            timings.stopped_early(stage)     # returned unfinished (after a Ctrl-C every stage raises instead)
            raise SystemExit(f"error: stage {stage} stopped before finishing (interrupted?); "
                             f"re-run the same command to resume it")
        if not result.get("cached"):
            # best-of-N samples and scores in float32 (as evaluation); data and tokenizer use no GPU
            timings.stop(stage, scfg[stage].dtype if stage in scfg else "float32" if stage == "best_of_n" else None)

    if "eval" not in stages:
        print(f"\nstopped after {cfg.stop_after} (--stop_after); re-run without it to continue")
        return {}
    # ---- evaluation, plots, report
    progress.start("eval")
    timings.start("eval")
    ecfg = eval_config(cfg)
    try:
        results = ev.evaluate_run(out, ecfg, kl_pairs=(("ppo", "sft"),), progress=cfg.progress,
                                  skip=() if cfg.best_of_n > 0 else ("best_of_n",))   # --best_of_n=0: not judged
    except torch.cuda.OutOfMemoryError as e:
        raise oom_in_stage(e, "eval", out, None, cfg) from None
    ckpt_io.atomic_write_json(os.path.join(out, "eval", "results.json"), results)
    if results["fresh"] or "eval" not in timings.wall:   # a re-run that only read the caches keeps the old time
        timings.stop("eval", "float32")                  # evaluation samples and scores in float32
    metrics = build_metrics(out, results, cfg, preset, timings.seconds(time.time() - t_run))
    if timings.gpu:                                      # stages run on CUDA: which GPU, each one's peak memory
        metrics["gpu"] = timings.gpu
    plots = plot_all(out, results["stages"], metrics)
    rows = {s: ev.read_rows(os.path.join(out, "eval", f"{s}.jsonl")) for s in results["stages"]}
    ckpt_io.atomic_write_json(os.path.join(out, "metrics.json"), metrics)
    write_report(out, metrics, results, plots, rows, cfg.n_samples_report)
    print_summary(metrics, out)
    return metrics


def print_summary(m: dict, out: str) -> None:
    """The closing table: gold per stage with CIs, win rates against SFT, RM accuracy, KL, time."""
    def f(x, d=3):
        return "  n/a" if x is None else f"{x:.{d}f}"

    print(f"\n{'stage':<11} {'gold greedy [95% CI]':<26} {'gold sampled [95% CI]':<26} {'win vs SFT':>10} {'stop':>6}")
    for s in ("base", "sft", "sft_large", "best_of_n", "ppo"):
        if s not in m:
            continue
        b = m[s]
        ci, cs = b.get("gold_ci") or [None, None], b.get("gold_ci_sampled") or [None, None]
        print(f"{s:<11} {f(b['gold_score'])} [{f(ci[0])}, {f(ci[1])}]    "
              f"{f(b.get('gold_score_sampled'))} [{f(cs[0])}, {f(cs[1])}]    "
              f"{f(b.get('win_rate_vs_sft'), 2):>10} {f(b.get('stop_rate'), 2):>6}")
    rm = m.get("reward_model", {})
    if rm:
        print(f"reward model: held-out accuracy {f(rm.get('val_accuracy'))} (labeler agreement {f(rm.get('label_agreement'))})")
    if "ppo" in m and m["ppo"].get("kl") is not None:
        print(f"KL(PPO || SFT): {f(m['ppo']['kl'], 2)} nats per response")
    if "headline" in m:
        h = m["headline"]
        hs = h.get("sampled") or {}
        print(f"headline: PPO ({h['ppo_params']:,} params) vs SFT-only ({h['sft_large_params']:,} params): "
              f"PPO win rate {f(h['win_rate'], 2)} greedy, {f(hs.get('win_rate'), 2)} sampled (ties count half)")
    k, n = targets_met(m)
    print(f"targets: {k} of {n} met (report.md, 'Against the targets')")
    print(f"time: {m['seconds']['total']:.0f}s of stage compute ({m['seconds']['this_run']:.0f}s this run); "
          f"{out}/metrics.json, {out}/report.md")


def main(argv: list[str] | None = None) -> dict:
    cfg, preset, stage_raw = parse_args(argv)
    try:
        return run_pipeline(cfg, preset, stage_raw)
    except KeyboardInterrupt:     # Ctrl-C anywhere (a stage saves its ckpt.pt first; evaluation caches per stage)
        print(f"\ninterrupted: finished stages and cached evaluations in {cfg.out} are kept; run the same "
              f"command again to continue", file=sys.stderr)
        raise SystemExit(130) from None
    except NotImplementedError as e:   # a student copy with an exercise still blank
        raise exercise_not_written(e) from None
    except (ResumeError, ckpt_io.CheckpointError) as e:   # e.g. an interrupted stage's ckpt.pt of another shape
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    utf8_console()
    main()
