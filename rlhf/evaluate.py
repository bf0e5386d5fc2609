"""Evaluation: gold score with bootstrap CIs, win rates, per-family / per-H adherence, KL, RM accuracy.

    python -m rlhf.evaluate runs/default                      # every stage of a pipeline run
    python -m rlhf.evaluate runs/default --compare runs/other # the same prompts, two runs side by side

The questions InstructGPT (Ouyang et al., 2022, section 4) asks of each model are asked here of each
checkpoint, on one fixed set of held-out prompts per seed (the world's *test* split, never trained on):
  * how good are its answers?      mean gold score, with a bootstrap 95% confidence interval;
  * is it better than another one? win / tie / loss rates on the same prompts (judged by the gold
                                   oracle, and by the reward model when one is given);
  * where does it gain?            per task family and per H (helpful / honest / harmless);
  * how far did RL move it?        KL(pi || pi_ref) = E_{y ~ pi}[ sum_t log pi(y_t) - log pi_ref(y_t) ];
  * how does it answer?            response length, and how often it ends its turn (stop rate).

The statistics are pure functions of numbers (rlhf/stats.py, tested on synthetic inputs with known
answers); this module generates (rlhf.rollout), scores (the gold oracle through rlhf.gold, the reward
model through rlhf.rollout.score_responses) and caches responses as `eval/STAGE.jsonl` so that the
report and later comparisons reuse them instead of generating again.

Every model answers the same prompts twice: greedily (deterministic) and sampled at temperature 1 with
one random stream per prompt, seeded by (seed, prompt index), the same for every model ("common random
numbers"): a prompt's sample does not depend on the batch it falls in nor on the other prompts' answers,
identical models give identical samples (they tie on every prompt), and two policies that barely differ
draw mostly the same samples, so their paired comparison measures the policies, not the luck of the
draw. Comparisons are paired by prompt and CIs resample prompts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal, Sequence

from minigpt.checkpoint import (CheckpointError, atomic_write_json, load_model, one_line_errors, read_json_file,
                                read_json_lines, read_summary)
from minigpt.configurator import parse_config, utf8_console
from minigpt.files import make_dir
from minigpt.trainer import pick_device
from rlhf.data import write_jsonl
from rlhf.gold import gold_scores, kl_to_reference
from rlhf.reward import load_reward_model
from rlhf.rollout import generate_responses, score_responses
from rlhf.stats import (bootstrap_ci, compare_rows, group_means, mean_ci_dict,  # noqa: F401  (ev.bootstrap_ci, ...)
                        paired_bootstrap_ci, response_stats, summarize, win_rates)
from rlhf.world import make_prompts

# Stage name -> its directory inside a pipeline run. "best_of_n" has no checkpoint of its
# own (it is SFT samples re-ranked by the RM): its rows are written by the pipeline / rlhf.best_of_n.
# a run's checkpoints; dpo/ and grpo/ exist where `python -m rlhf.dpo` / `rlhf.grpo` wrote into the run directory
STAGE_DIRS = {"base": "pretrain", "sft": "sft", "sft_large": "sft_large", "ppo": "ppo", "dpo": "dpo", "grpo": "grpo"}
STAGE_ORDER = ["base", "sft", "sft_large", "best_of_n", "ppo", "dpo", "grpo"]
DECODINGS = ("greedy", "sampled")


@dataclass
class EvalConfig:
    """Evaluation of checkpoints on the world's held-out test prompts."""
    # value rules, checked before any work (minigpt.configurator.check_bounds)
    BOUNDS = {"n_prompts": ">= 1", "max_new_tokens": ">= 1", "batch_size": ">= 1", "temperature": ">= 0",
              "n_boot": ">= 100", "n_samples_report": ">= 0"}
    n_prompts: int = 200          # test prompts (one fixed set per seed, never trained on)
    split: Literal["test", "val"] = "test"  # "test" to report; "val" while tuning (never tune on the test prompts)
    seed: int = 0                 # which test set, and the seed of sampled decoding and the bootstrap
    max_new_tokens: int = 48      # response budget in tokens (a response that does not stop is cut here)
    temperature: float = 1.0      # sampled decoding (greedy is always evaluated too); 1.0 = the policy itself,
                                  # which is also what the KL estimate needs
    batch_size: int = 64          # prompts per generation batch
    n_boot: int = 2000            # bootstrap resamples for every 95% CI
    n_samples_report: int = 6     # prompts shown in the report's sample table
    device: str = "auto"          # auto = cuda, else mps, else cpu


def eval_examples(n: int, seed: int = 0, split: str = "test") -> list:
    """The fixed evaluation set: n prompts of the world's *test* split (never trained on); "val" for tuning."""
    if split not in ("test", "val"):
        raise ValueError(f"evaluation split must be 'test' or 'val', got {split!r}")
    return make_prompts(split, n, seed=seed)


def example_row(ex) -> dict:
    """The prompt-side fields every cached row carries."""
    return {"id": ex.id, "family": ex.family, "h": ex.h, "prompt": ex.conversation}


def _fingerprint(stage_dir: str | None, cfg: EvalConfig, extra: dict | None = None) -> dict:
    """What a cached eval/STAGE.jsonl depends on: the checkpoint file and the evaluation settings."""
    fp = {"split": cfg.split, "n_prompts": cfg.n_prompts, "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens,
          "temperature": cfg.temperature, **(extra or {})}
    if stage_dir is not None:
        path = os.path.join(stage_dir, "model.pt")
        if os.path.exists(path):
            st = os.stat(path)
            fp["checkpoint"] = [st.st_size, st.st_mtime_ns]   # a re-trained stage invalidates the cache
    return fp


def read_rows(path: str) -> list[dict]:
    """Rows of a cached eval/STAGE.jsonl."""
    return read_json_lines(path)


def load_cached(eval_dir: str, stage: str, fingerprint: dict | None = None) -> list[dict] | None:
    """The cached rows of `stage`, or None when missing or made with other settings / another checkpoint."""
    rows_path = os.path.join(eval_dir, f"{stage}.jsonl")
    meta_path = os.path.join(eval_dir, f"{stage}.meta.json")
    if not (os.path.exists(rows_path) and os.path.exists(meta_path)):
        return None
    try:
        saved = read_json_file(meta_path)
        if fingerprint is not None and saved.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            return None
        return read_rows(rows_path)
    except CheckpointError:                    # a cache: an unreadable one is computed again
        print(f"note: {rows_path} or its .meta.json does not load: computing {stage}'s answers again")
        return None


def save_cached(eval_dir: str, stage: str, rows: list[dict], fingerprint: dict, extra: dict | None = None):
    """Write eval/STAGE.jsonl (atomically) and eval/STAGE.meta.json (its fingerprint and stage-level numbers)."""
    make_dir(eval_dir)
    write_jsonl(os.path.join(eval_dir, f"{stage}.jsonl"), rows)
    atomic_write_json(os.path.join(eval_dir, f"{stage}.meta.json"), {"fingerprint": fingerprint, **(extra or {})})


def read_meta(eval_dir: str, stage: str) -> dict:
    return read_json_file(os.path.join(eval_dir, f"{stage}.meta.json")) or {}


def evaluate_model(model, tokenizer, examples: list, cfg: EvalConfig, rm=None, rm_tokenizer=None,
                   progress: str | None = None) -> list[dict]:
    """Greedy and sampled answers of `model` to `examples`, with gold (and RM) scores: the cached rows."""
    convs = [ex.conversation for ex in examples]
    rows = []
    for decoding in DECODINGS:
        temp = 0.0 if decoding == "greedy" else cfg.temperature
        gens = generate_responses(model, tokenizer, convs, cfg.max_new_tokens, temperature=temp,
                                  batch_size=cfg.batch_size, seed=cfg.seed, per_prompt=True,
                                  progress=f"{progress} {decoding}" if progress else None)
        for ex, g in zip(examples, gens):
            rows.append({**example_row(ex), "decoding": decoding, "response": g["response"],
                         "stopped": g["stopped"], "n_tokens": g["n_tokens"]})
    score_rows(rows, rm, rm_tokenizer or tokenizer, cfg.batch_size)
    return rows


def score_rows(rows: list[dict], rm=None, rm_tokenizer=None, batch_size: int = 64) -> list[dict]:
    """Add "gold" (the oracle) and "rm" (the reward model, or None) to each row, in place."""
    for r, g in zip(rows, gold_scores(rows)):
        r["gold"] = g
    if rm is not None:
        scores = score_responses(rm, rm_tokenizer, [r["prompt"] for r in rows], [r["response"] for r in rows],
                                 [r["stopped"] for r in rows], batch_size)
        for r, s in zip(rows, scores):
            r["rm"] = s
    else:
        for r in rows:
            r.setdefault("rm", None)
    return rows


def stage_dirs(run_dir: str) -> dict[str, str]:
    """{stage: checkpoint directory} of a pipeline run (or {"model": run_dir} for one checkpoint)."""
    if os.path.exists(os.path.join(run_dir, "model.pt")):
        return {"model": run_dir}
    return {stage: os.path.join(run_dir, sub) for stage, sub in STAGE_DIRS.items()
            if os.path.exists(os.path.join(run_dir, sub, "model.pt"))}


def stage_rows(stage: str, stage_dir: str, eval_dir: str, examples: list, cfg: EvalConfig, rm=None, rm_tok=None,
               rm_dir: str | None = None, progress: bool = True) -> list[dict]:
    """The rows of one checkpoint (eval_dir/STAGE.jsonl), generated only when the cache is missing or was
    made from another checkpoint, reward model or settings."""
    rm_ckpt = _fingerprint(rm_dir, cfg).get("checkpoint") if (rm is not None and rm_dir) else None
    fp = _fingerprint(stage_dir, cfg, {"rm": rm_ckpt})
    rows = load_cached(eval_dir, stage, fp)
    if rows is not None:
        return rows
    t0 = time.time()
    model, tok = load_model(stage_dir, device=pick_device(cfg.device))
    rows = evaluate_model(model, tok, examples, cfg, rm=rm, rm_tokenizer=rm_tok,
                          progress=f"eval {stage}" if progress else None)
    save_cached(eval_dir, stage, rows, fp, {"seconds": time.time() - t0})
    return rows


def by_decoding(rows: list[dict], decoding: str) -> list[dict]:
    return [r for r in rows if r.get("decoding", "greedy") == decoding]


def compare_by_decoding(rows_a: list[dict], rows_b: list[dict], cfg: EvalConfig) -> dict:
    return {d: compare_rows(by_decoding(rows_a, d), by_decoding(rows_b, d), cfg.n_boot, cfg.seed)
            for d in DECODINGS if by_decoding(rows_a, d) and by_decoding(rows_b, d)}


def eval_dir_for(run_dir: str, cfg: EvalConfig) -> str:
    """Where evaluating run_dir with `cfg` caches its answers: RUN/eval when the settings are those the
    pipeline evaluated with (so its report, metrics.json and eval/ stay consistent and the cache is
    reused), else a directory of its own named by the settings, e.g. RUN/eval-val-n300-seed0-t1.0-new48."""
    own = {"eval_split": cfg.split, "eval_prompts": cfg.n_prompts, "seed": cfg.seed,
           "eval_temperature": cfg.temperature, "eval_max_new_tokens": cfg.max_new_tokens}
    saved = read_json_file(os.path.join(run_dir, "pipeline_config.json"))
    if saved is not None:
        pipe = saved.get("pipeline", {})
        if all(pipe.get(k) == v for k, v in own.items()):
            return os.path.join(run_dir, "eval")
    return os.path.join(run_dir, f"eval-{cfg.split}-n{cfg.n_prompts}-seed{cfg.seed}-t{cfg.temperature:g}-"
                                 f"new{cfg.max_new_tokens}")


def cached_kl(eval_dir: str, stage: str, stage_dir: str, ref: str, ref_dir: str, examples: list, cfg: EvalConfig,
              device) -> tuple[dict, bool]:
    """(KL(stage || ref) on the examples' prompts, whether it was computed now): the exact per-token estimator
    (rlhf.gold.kl_to_reference; >= 0), cached in eval_dir/STAGE.meta.json under "kl_exact_to_REF"."""
    meta = read_meta(eval_dir, stage)
    key = f"kl_exact_to_{ref}"
    if key in meta:
        return meta[key], False
    model, tok = load_model(stage_dir, device=device)
    ref_model, _ = load_model(ref_dir, device=device)
    meta[key] = kl_to_reference(model, ref_model, tok, [ex.conversation for ex in examples],
                                cfg.max_new_tokens, cfg.batch_size, cfg.seed)
    atomic_write_json(os.path.join(eval_dir, f"{stage}.meta.json"), meta)
    return meta[key], True


def evaluate_run(run_dir: str, cfg: EvalConfig | None = None, kl_pairs: Sequence[tuple[str, str]] = (("ppo", "sft"),),
                 rm_dir: str | None = None, progress: bool = True, eval_dir: str | None = None,
                 extra_dirs: dict[str, str] | None = None, skip: Sequence[str] = ()) -> dict:
    """Evaluate every checkpoint of a pipeline run directory (or one checkpoint) on the same held-out prompts.

    Returns {"prompts": {...}, "stages": {stage: {"greedy": summary, "sampled": summary[, "kl"]}},
             "comparisons": {"A_vs_B": {"greedy": compare, "sampled": compare}}[, "reward_model": {...}]}.
    Rows are cached in eval_dir/STAGE.jsonl (default run_dir/eval, the pipeline's); the reward model (run_dir/reward_model unless rm_dir is
    given) judges every response next to the gold oracle; a run_dir/eval/best_of_n.jsonl written by the
    pipeline joins as the stage "best_of_n"; KL(stage || ref) is estimated for each (stage, ref) pair.
    extra_dirs {stage: checkpoint directory} adds (or replaces) stages kept outside run_dir, e.g. a DPO
    model an experiment trained from this run's SFT model; `skip` leaves stages of run_dir out (not judged).
    """
    cfg = cfg or EvalConfig()
    examples = eval_examples(cfg.n_prompts, cfg.seed, cfg.split)
    device = pick_device(cfg.device)
    rm_dir = rm_dir or os.path.join(run_dir, "reward_model")
    rm, rm_tok = load_reward_model(rm_dir, device)
    eval_dir = eval_dir or os.path.join(run_dir, "eval")
    dirs = {k: v for k, v in {**stage_dirs(run_dir), **(extra_dirs or {})}.items() if k not in skip}
    rows: dict[str, list[dict]] = {}
    fresh = []   # what had to be generated this time (the rest came from the cache)
    stages = [s for s in STAGE_ORDER if s in dirs or (s == "best_of_n" and s not in skip)]
    for stage in stages + [s for s in dirs if s not in STAGE_ORDER]:
        if stage == "best_of_n":
            cached = load_cached(eval_dir, "best_of_n")
            if cached is not None and len(cached) == 2 * len(examples):
                rows[stage] = cached
            continue
        before = read_meta(eval_dir, stage).get("fingerprint")
        rows[stage] = stage_rows(stage, dirs[stage], eval_dir, examples, cfg, rm, rm_tok, rm_dir, progress)
        if read_meta(eval_dir, stage).get("fingerprint") != before:
            fresh.append(stage)
    out = {"prompts": {"split": cfg.split, "n": len(examples), "seed": cfg.seed}, "stages": {}, "comparisons": {},
           "fresh": fresh}
    for stage, r in rows.items():
        out["stages"][stage] = {d: summarize(by_decoding(r, d), cfg.n_boot, cfg.seed)
                                for d in DECODINGS if by_decoding(r, d)}
    for stage, ref in kl_pairs:
        if stage not in dirs or ref not in dirs:
            continue
        kl, computed = cached_kl(eval_dir, stage, dirs[stage], ref, dirs[ref], examples, cfg, device)
        if computed:
            fresh.append(f"kl_exact_to_{ref}:{stage}")
        out["stages"][stage]["kl"] = kl
    # Every stage against SFT (InstructGPT's baseline), and PPO against every other stage.
    for a in rows:
        for b in rows:
            if a != b and (b == "sft" or a == "ppo"):
                out["comparisons"][f"{a}_vs_{b}"] = compare_by_decoding(rows[a], rows[b], cfg)
    rm_summary = read_summary(rm_dir) if os.path.isdir(rm_dir) else None
    if rm_summary:
        out["reward_model"] = {k: rm_summary[k] for k in ("val_accuracy", "label_agreement", "gold_accuracy")
                               if k in rm_summary}
    return out


def format_results(results: dict) -> str:
    """The evaluation as a plain-text table (what `python -m rlhf.evaluate` prints)."""
    def f(x, d=3):
        return "  n/a" if x is None or x != x else f"{x:.{d}f}"
    lines = [f"{results['prompts']['n']} held-out {results['prompts']['split']} prompts (seed {results['prompts']['seed']})",
             f"{'stage':<11} {'gold greedy [95% CI]':<25} {'gold sampled [95% CI]':<25} {'stop':>5} {'tokens':>6} {'RM':>6}"]
    for stage, s in results["stages"].items():
        g, sa = s.get("greedy", {}), s.get("sampled", {})
        gc, sc = g.get("gold_ci", [None, None]), sa.get("gold_ci", [None, None])
        lines.append(f"{stage:<11} {f(g.get('gold_score'))} [{f(gc[0])}, {f(gc[1])}]   "
                     f"{f(sa.get('gold_score'))} [{f(sc[0])}, {f(sc[1])}]   {f(g.get('stop_rate'), 2):>5} "
                     f"{f(g.get('mean_tokens'), 1):>6} {f(g.get('rm_score'), 2):>6}")
        if "kl" in s:
            lines.append(f"{'':<11} KL to the reference: {f(s['kl']['mean'], 2)} nats per response "
                         f"[{f(s['kl']['ci'][0], 2)}, {f(s['kl']['ci'][1], 2)}] (exact per-token KL on samples)")
    if results["comparisons"]:
        lines.append(f"\n{'A vs B':<22} {'decoding':<8} {'W/T/L (gold)':>13} {'win (ties ½)':>12} "
                     f"{'non-tied':>8} {'gold diff [95% CI]':>26} {'RM judge':>8}")
    for name, c in results["comparisons"].items():
        for d, x in c.items():
            g, diff = x["gold"], x["gold_diff"]
            rm = f(x["rm"]["win_rate_half"], 2) if x.get("rm") else "  n/a"
            lines.append(f"{name:<22} {d:<8} {g['wins']:>4}/{g['ties']}/{g['losses']:<4} {f(g['win_rate_half'], 2):>12} "
                         f"{f(g['win_rate'], 2):>8} {f(diff['mean']):>8} [{f(diff['ci'][0])}, {f(diff['ci'][1])}] {rm:>8}")
    if results.get("reward_model"):
        r = results["reward_model"]
        lines.append(f"\nreward model: held-out accuracy {f(r.get('val_accuracy'))}, labeler agreement "
                     f"{f(r.get('label_agreement'))}")
    return "\n".join(lines)


def compare_runs(run_a: str, run_b: str, cfg: EvalConfig, progress: bool = True) -> dict:
    """Each stage of run A against the same stage of run B, on the same prompts. The RM judge is run A's
    reward model for both sides (B's responses are re-scored by it, as text)."""
    dir_a, dir_b = eval_dir_for(run_a, cfg), eval_dir_for(run_b, cfg)
    res_a = evaluate_run(run_a, cfg, progress=progress, eval_dir=dir_a)
    res_b = evaluate_run(run_b, cfg, progress=progress, eval_dir=dir_b)
    rm, rm_tok = load_reward_model(os.path.join(run_a, "reward_model"), pick_device(cfg.device))
    out = {"prompts": res_a["prompts"], "a": run_a, "b": run_b, "stages": {}, "comparisons": {}}
    for stage in res_a["stages"]:
        pa, pb = os.path.join(dir_a, f"{stage}.jsonl"), os.path.join(dir_b, f"{stage}.jsonl")
        if stage not in res_b["stages"] or not (os.path.exists(pa) and os.path.exists(pb)):
            continue
        rows_a, rows_b = read_rows(pa), read_rows(pb)
        if rm is not None:
            score_rows(rows_b, rm, rm_tok, cfg.batch_size)
        out["stages"][f"{stage} (A)"] = res_a["stages"][stage]
        out["stages"][f"{stage} (B)"] = res_b["stages"][stage]
        out["comparisons"][f"{stage}: A_vs_B"] = compare_by_decoding(rows_a, rows_b, cfg)
    return out


def main(argv: list[str] | None = None) -> dict:
    """python -m rlhf.evaluate RUN_DIR [--compare OTHER_RUN] [--key=value ...] (EvalConfig fields)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "python -m rlhf.evaluate RUN_DIR [--compare OTHER_RUN]"
    positional = [a for a in argv if not a.startswith("-")]
    compare = None
    if "--compare" in argv:
        i = argv.index("--compare")
        if i + 1 >= len(argv):
            raise SystemExit("error: --compare needs a run directory")
        compare = argv[i + 1]
        positional.remove(compare)
        argv = argv[:i] + argv[i + 2:]
    elif any(a.startswith("--compare=") for a in argv):
        compare = next(a for a in argv if a.startswith("--compare="))[len("--compare="):]
        argv = [a for a in argv if not a.startswith("--compare=")]
    options = [a for a in argv if a.startswith("-")]
    cfg = parse_config(EvalConfig, options, prog=usage)
    if len(positional) != 1:
        raise SystemExit(f"usage: {usage} [--key=value ...]; --help lists the keys")
    run_dir = positional[0]
    for d in [run_dir] + ([compare] if compare else []):
        if not os.path.isdir(d):
            raise SystemExit(f"error: {d}: no such run directory")
        if not stage_dirs(d):
            raise SystemExit(f"error: {d}: no model.pt in it nor in {'/, '.join(STAGE_DIRS.values())}/; "
                             f"run `python -m rlhf.pipeline --out {d}` first")
    eval_dir = eval_dir_for(run_dir, cfg)     # never overwrites the pipeline's eval/ with other settings
    with one_line_errors():                       # e.g. a reward model's directory: nothing to answer with
        if compare:
            results = compare_runs(run_dir, compare, cfg)
            name = os.path.basename(os.path.normpath(compare))
            path = os.path.join(eval_dir, f"compare_{name}.json")
        else:
            results = evaluate_run(run_dir, cfg, eval_dir=eval_dir)
            path = os.path.join(eval_dir, "results.json")
    atomic_write_json(path, results)
    print(format_results(results))
    print(f"-> {path}")
    return results


if __name__ == "__main__":
    utf8_console()
    main()
