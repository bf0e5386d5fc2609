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

The statistics are pure functions of numbers (first half of this file, tested on synthetic inputs with
known answers); the model half generates, scores and caches responses as `eval/STAGE.jsonl` so that
the report and later comparisons reuse them instead of generating again.

Every model answers the same prompts twice: greedily (deterministic) and sampled at temperature 1 with
the same seed for every model. The shared seed is deliberate ("common random numbers"): two policies
that barely differ then draw the same samples, so their paired comparison measures the policies, not
the luck of the draw. Comparisons are paired by prompt and CIs resample prompts.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------------
# Statistics (pure: numbers in, numbers out)


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
      win_rate       = wins / (wins + losses)        over the non-tied prompts (0.5 if all tie)
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
        "win_rate": wins / (wins + losses) if wins + losses else 0.5,
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


def compare_rows(rows_a: Sequence[dict], rows_b: Sequence[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """A vs B on the same prompts (matched by "id"): gold win rates, paired gold difference, RM win rates.

    Returns {"gold": win_rates(...), "gold_diff": {"mean", "ci"}, "rm": win_rates(...) or None, "n"}.
    """
    by_id = {r["id"]: r for r in rows_b}
    pairs = [(r, by_id[r["id"]]) for r in rows_a if r["id"] in by_id]
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


# ----------------------------------------------------------------------------------------------------
# Models: generate, score, cache

# Stage name -> its directory inside a pipeline run (CONTRACT.md). "best_of_n" has no checkpoint of its
# own (it is SFT samples re-ranked by the RM): its rows are written by the pipeline / rlhf.best_of_n.
STAGE_DIRS = {"base": "pretrain", "sft": "sft", "sft_large": "sft_large", "ppo": "ppo"}
STAGE_ORDER = ["base", "sft", "sft_large", "best_of_n", "ppo"]
DECODINGS = ("greedy", "sampled")


@dataclass
class EvalConfig:
    """Evaluation of checkpoints on the world's held-out test prompts."""
    n_prompts: int = 200          # test prompts (one fixed set per seed, never trained on)
    split: str = "test"           # "test" to report; "val" while tuning (never tune on the test prompts)
    seed: int = 0                 # which test set, and the seed of sampled decoding and the bootstrap
    max_new_tokens: int = 48      # response budget in tokens (a response that does not stop is cut here)
    temperature: float = 1.0      # sampled decoding (greedy is always evaluated too); 1.0 = the policy itself,
                                  # which is also what the KL estimate needs
    batch_size: int = 64          # prompts per generation batch
    n_boot: int = 2000            # bootstrap resamples for every 95% CI
    n_samples_report: int = 6     # prompts shown in the report's sample table
    device: str = "auto"          # auto = cuda, else mps, else cpu


def pick_device(name: str = "auto"):
    """cuda, else mps, else cpu (minigpt.train.pick_device)."""
    from minigpt.train import pick_device as pick
    return pick(name)


def eval_examples(n: int, seed: int = 0, split: str = "test") -> list:
    """The fixed evaluation set: n prompts of the world's *test* split (never trained on); "val" for tuning."""
    from rlhf.world import make_prompts
    if split not in ("test", "val"):
        raise ValueError(f"evaluation split must be 'test' or 'val', got {split!r}")
    return make_prompts(split, n, seed=seed)


def example_row(ex) -> dict:
    """The prompt-side fields every cached row carries."""
    return {"id": ex.id, "family": ex.family, "h": ex.h, "prompt": ex.conversation}


def generate_batches(model, tokenizer, conversations: list, max_new_tokens: int, temperature: float = 0.0,
                     batch_size: int = 64, seed: int = 0, top_k: int | None = None, return_logprobs: bool = False,
                     progress: str | None = None):
    """Yield (conversations, Generation) per batch: each conversation (ending with a user turn) rendered
    with the chat template (ending in <|assistant|>), cut on the left to fit block_size - max_new_tokens,
    answered greedily at temperature 0 (else sampled, seeded) until <|end|>."""
    import torch

    from minigpt.generate import generate
    from rlhf.data import pad_token_id, render_prompt, stop_token_id

    room = model.config.block_size - max_new_tokens
    if room < 4:
        raise ValueError(f"block_size={model.config.block_size} leaves no room for a prompt with "
                         f"max_new_tokens={max_new_tokens}")
    end, pad = stop_token_id(tokenizer), pad_token_id(tokenizer)
    g = torch.Generator(device=model.device.type).manual_seed(seed)
    starts = range(0, len(conversations), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=progress, leave=False, unit="batch")
    for i in starts:
        convs = conversations[i:i + batch_size]
        prompts = [render_prompt(c, tokenizer, max_len=room) for c in convs]
        yield convs, generate(model, prompts, max_new_tokens, temperature=temperature, top_k=top_k,
                              eos_token_id=end, pad_token_id=pad, generator=g, return_logprobs=return_logprobs)


def decode_generation(gen, tokenizer) -> list[dict]:
    """One dict per row of a Generation: {"response": text before <|end|>, "stopped": bool,
    "n_tokens": response tokens including <|end|>}."""
    out = []
    for b in range(gen.response.size(0)):
        n = int(gen.response_mask[b].sum().item())
        ids = gen.response[b, :n].tolist()
        stopped = bool(gen.stopped[b].item())
        out.append({"response": tokenizer.decode(ids[:-1] if stopped else ids), "stopped": stopped, "n_tokens": n})
    return out


def generate_responses(model, tokenizer, conversations: list, max_new_tokens: int, temperature: float = 0.0,
                       batch_size: int = 64, seed: int = 0, top_k: int | None = None,
                       progress: str | None = None) -> list[dict]:
    """Answer each conversation with `model` (greedy at temperature 0, else sampled): a list of
    {"response", "stopped", "n_tokens"} in the order of `conversations`."""
    out = []
    for _, gen in generate_batches(model, tokenizer, conversations, max_new_tokens, temperature, batch_size,
                                   seed, top_k, progress=progress):
        out += decode_generation(gen, tokenizer)
    return out


def sequence_logprobs(model, sequences, attention_mask, prompt_length: int, temperature: float = 1.0):
    """(B, N) log pi(y_t | x, y_<t) of the response tokens sequences[:, P:], read from logits one
    position earlier (DESIGN.md PPO detail 1), divided by the sampling temperature; 0 past the stop."""
    import torch
    with torch.no_grad():
        logits, _ = model(sequences, attention_mask=attention_mask)          # (B, P+N, V)
    logits = logits[:, prompt_length - 1:-1].float() / max(temperature, 1e-8)  # (B, N, V): row t predicts y_t
    lp = torch.log_softmax(logits, dim=-1)
    lp = lp.gather(-1, sequences[:, prompt_length:, None]).squeeze(-1)      # (B, N)
    return lp * attention_mask[:, prompt_length:].float()


def kl_to_reference(model, ref_model, tokenizer, conversations: list, max_new_tokens: int,
                    batch_size: int = 64, seed: int = 0, temperature: float = 1.0) -> dict:
    """KL(pi || pi_ref) per response, estimated on samples y ~ pi (the penalty of InstructGPT eq. 2):

        KL = E_{x, y ~ pi} [ sum_t log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t) ]

    Each sample's sum is an unbiased estimate; their mean is >= 0 up to noise (a clearly negative value
    means generation and scoring disagree). Both models share the tokenizer (the policy descends from
    the reference). Returns {"mean", "ci", "per_token"} in nats.
    """
    kls, n_tok = [], 0
    for _, gen in generate_batches(model, tokenizer, conversations, max_new_tokens, temperature, batch_size,
                                   seed, return_logprobs=True):
        ref_lp = sequence_logprobs(ref_model, gen.sequences, gen.attention_mask, gen.prompt_length, temperature)
        kls += ((gen.logprobs - ref_lp) * gen.response_mask).sum(-1).tolist()   # (B,) one KL sample per row
        n_tok += int(gen.response_mask.sum().item())
    mean, lo, hi = bootstrap_ci(kls, seed=seed)
    return {"mean": mean, "ci": [lo, hi], "per_token": float(np.sum(kls) / max(n_tok, 1))}


def rm_scores(rm, tokenizer, conversations: list, responses: list[str], stopped: list[bool],
              batch_size: int = 64) -> list[float]:
    """The reward model's score r(x, y) of each (conversation, response) *text*: exactly the ids the RM
    stage trains on (rlhf.reward_model.encode_response: the prompt in the chat template, the response,
    <|end|> when it stopped), read at the last real token. Text in, so any run's RM can judge any model."""
    import torch

    from rlhf.data import pad_right, pad_token_id
    from rlhf.reward_model import encode_response

    pad = pad_token_id(tokenizer)
    seqs = [encode_response(c, r, tokenizer, rm.config.block_size, stopped=s)
            for c, r, s in zip(conversations, responses, stopped)]
    device = next(rm.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(seqs), batch_size):
            ids, mask = pad_right(seqs[i:i + batch_size], pad)       # (B, T) right-padded
            out += rm.score(ids.to(device), mask.to(device)).float().tolist()
    return out


def gold_scores(rows: list[dict]) -> list[float]:
    """The world's gold oracle on each cached row (it reads only the conversation text and the response)."""
    from rlhf.world import score
    return [float(score(r["prompt"], r["response"], stopped=r["stopped"])) for r in rows]


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
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_cached(eval_dir: str, stage: str, fingerprint: dict | None = None) -> list[dict] | None:
    """The cached rows of `stage`, or None when missing or made with other settings / another checkpoint."""
    rows_path = os.path.join(eval_dir, f"{stage}.jsonl")
    meta_path = os.path.join(eval_dir, f"{stage}.meta.json")
    if not (os.path.exists(rows_path) and os.path.exists(meta_path)):
        return None
    if fingerprint is not None:
        with open(meta_path) as f:
            if json.load(f).get("fingerprint") != json.loads(json.dumps(fingerprint)):
                return None
    return read_rows(rows_path)


def save_cached(eval_dir: str, stage: str, rows: list[dict], fingerprint: dict, extra: dict | None = None):
    """Write eval/STAGE.jsonl (atomically) and eval/STAGE.meta.json (its fingerprint and stage-level numbers)."""
    from minigpt.checkpoint import atomic_write_json
    from rlhf.data import write_jsonl
    os.makedirs(eval_dir, exist_ok=True)
    write_jsonl(os.path.join(eval_dir, f"{stage}.jsonl"), rows)
    atomic_write_json(os.path.join(eval_dir, f"{stage}.meta.json"), {"fingerprint": fingerprint, **(extra or {})})


def read_meta(eval_dir: str, stage: str) -> dict:
    path = os.path.join(eval_dir, f"{stage}.meta.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def evaluate_model(model, tokenizer, examples: list, cfg: EvalConfig, rm=None, rm_tokenizer=None,
                   progress: str | None = None) -> list[dict]:
    """Greedy and sampled answers of `model` to `examples`, with gold (and RM) scores: the cached rows."""
    convs = [ex.conversation for ex in examples]
    rows = []
    for decoding in DECODINGS:
        temp = 0.0 if decoding == "greedy" else cfg.temperature
        gens = generate_responses(model, tokenizer, convs, cfg.max_new_tokens, temperature=temp,
                                  batch_size=cfg.batch_size, seed=cfg.seed,
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
        scores = rm_scores(rm, rm_tokenizer, [r["prompt"] for r in rows], [r["response"] for r in rows],
                           [r["stopped"] for r in rows], batch_size)
        for r, s in zip(rows, scores):
            r["rm"] = s
    else:
        for r in rows:
            r.setdefault("rm", None)
    return rows


def best_of_n_rows(policy, tokenizer, rm, rm_tokenizer, examples: list, n: int, cfg: EvalConfig,
                   progress: str | None = None, no_stop_reward: float | None = -2.0) -> list[dict]:
    """Best-of-N: for each prompt, N samples of `policy` (at cfg.temperature) and the one the reward model
    scores highest. It optimises the RM without any training (Nakano et al., 2021; Stiennon et al., 2020)
    and is the baseline RL should beat at equal KL (KL = log N - (N-1)/N, rlhf.best_of_n). A response
    without <|end|> scores no_stop_reward, as in PPO's rollouts (None = the RM's score of the text).
    Rows as evaluate_model's, with the RM's pick under both decodings (there is no greedy best-of-N),
    plus "oracle_gold": the best gold score among the N (what a perfect reward model would pick) and
    "gold_by_n": for k = 1..N the gold of the RM's pick among the first k samples, i.e. best-of-k for every
    k from the same samples (gold_by_n[0] is one plain SFT sample, gold_by_n[-1] is "gold")."""
    convs = [ex.conversation for ex in examples]
    rep = [c for c in convs for _ in range(n)]                      # prompt i at positions i*n .. i*n+n-1
    gens = generate_responses(policy, tokenizer, rep, cfg.max_new_tokens, temperature=cfg.temperature,
                              batch_size=cfg.batch_size, seed=cfg.seed + 1, progress=progress)
    rewards = rm_scores(rm, rm_tokenizer, rep, [g["response"] for g in gens], [g["stopped"] for g in gens],
                        cfg.batch_size)
    if no_stop_reward is not None:
        rewards = [r if g["stopped"] else no_stop_reward for r, g in zip(rewards, gens)]
    cand_rows = [{"prompt": c, "response": g["response"], "stopped": g["stopped"]} for c, g in zip(rep, gens)]
    golds = gold_scores(cand_rows)
    import torch

    from rlhf.best_of_n import pick_best
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


def load_reward_model(rm_dir: str | None, device="cpu"):
    """(RewardModel, tokenizer) from a reward-model run directory, or (None, None)."""
    if not rm_dir or not os.path.exists(os.path.join(rm_dir, "model.pt")):
        return None, None
    from minigpt.checkpoint import load_tokenizer
    from rlhf.reward_model import RewardModel
    rm = RewardModel.load(rm_dir).to(device).eval()
    return rm, load_tokenizer(rm_dir)


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
    from minigpt.checkpoint import load_model
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


def evaluate_run(run_dir: str, cfg: EvalConfig | None = None, kl_pairs: Sequence[tuple[str, str]] = (("ppo", "sft"),),
                 rm_dir: str | None = None, progress: bool = True) -> dict:
    """Evaluate every checkpoint of a pipeline run directory (or one checkpoint) on the same held-out prompts.

    Returns {"prompts": {...}, "stages": {stage: {"greedy": summary, "sampled": summary[, "kl"]}},
             "comparisons": {"A_vs_B": {"greedy": compare, "sampled": compare}}[, "reward_model": {...}]}.
    Rows are cached in run_dir/eval/STAGE.jsonl; the reward model (run_dir/reward_model unless rm_dir is
    given) judges every response next to the gold oracle; a run_dir/eval/best_of_n.jsonl written by the
    pipeline joins as the stage "best_of_n"; KL(stage || ref) is estimated for each (stage, ref) pair.
    """
    from minigpt.checkpoint import atomic_write_json, load_model, read_summary
    cfg = cfg or EvalConfig()
    examples = eval_examples(cfg.n_prompts, cfg.seed, cfg.split)
    device = pick_device(cfg.device)
    rm_dir = rm_dir or os.path.join(run_dir, "reward_model")
    rm, rm_tok = load_reward_model(rm_dir, device)
    eval_dir = os.path.join(run_dir, "eval")
    dirs = stage_dirs(run_dir)
    rows: dict[str, list[dict]] = {}
    fresh = []   # what had to be generated this time (the rest came from the cache)
    for stage in [s for s in STAGE_ORDER if s in dirs or s == "best_of_n"] + [s for s in dirs if s not in STAGE_ORDER]:
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
    # KL(pi || pi_ref), cached in the policy's meta file next to its rows.
    for stage, ref in kl_pairs:
        if stage not in dirs or ref not in dirs:
            continue
        meta = read_meta(eval_dir, stage)
        key = f"kl_to_{ref}"
        if key not in meta:
            model, tok = load_model(dirs[stage], device=device)
            ref_model, _ = load_model(dirs[ref], device=device)
            meta[key] = kl_to_reference(model, ref_model, tok, [ex.conversation for ex in examples],
                                        cfg.max_new_tokens, cfg.batch_size, cfg.seed)
            atomic_write_json(os.path.join(eval_dir, f"{stage}.meta.json"), meta)
            fresh.append(f"{key}:{stage}")
        out["stages"][stage]["kl"] = meta[key]
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
                         f"[{f(s['kl']['ci'][0], 2)}, {f(s['kl']['ci'][1], 2)}]")
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
    res_a = evaluate_run(run_a, cfg, progress=progress)
    res_b = evaluate_run(run_b, cfg, progress=progress)
    rm, rm_tok = load_reward_model(os.path.join(run_a, "reward_model"), pick_device(cfg.device))
    out = {"prompts": res_a["prompts"], "a": run_a, "b": run_b, "stages": {}, "comparisons": {}}
    for stage in res_a["stages"]:
        pa, pb = os.path.join(run_a, "eval", f"{stage}.jsonl"), os.path.join(run_b, "eval", f"{stage}.jsonl")
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
    from minigpt.checkpoint import atomic_write_json
    from minigpt.configurator import parse_config
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
    if not os.path.isdir(run_dir):
        raise SystemExit(f"error: {run_dir}: no such run directory")
    if compare:
        results = compare_runs(run_dir, compare, cfg)
        name = os.path.basename(os.path.normpath(compare))
        atomic_write_json(os.path.join(run_dir, "eval", f"compare_{name}.json"), results)
    else:
        results = evaluate_run(run_dir, cfg)
        atomic_write_json(os.path.join(run_dir, "eval", "results.json"), results)
    print(format_results(results))
    return results


if __name__ == "__main__":
    main()
