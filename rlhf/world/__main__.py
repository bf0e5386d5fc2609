"""Command line for the instruction world.

    python -m rlhf.world sample --n 5 [--family reverse] [--split val] [--seed 0]
        prompts with their gold answer, a perturbed answer and the gold oracle's scores
    python -m rlhf.world export --out DIR [--n-demos 2000] [--n-train 4000] [--corpus-chars 3000000]
        DIR/corpus.txt              plain pretraining text (not chat format)
        DIR/demonstrations.jsonl    {"messages": [...user..., {"role": "assistant", ...}]}  (SFT)
        DIR/prompts_{train,val,test}.jsonl  {"messages": [...], "family", "h", "id", "difficulty"}
        DIR/rankings.jsonl          {"prompt": [...], "responses": [...], "ranks": [...]}  (examples:
                                    gold + perturbations; the RM stage ranks model samples itself)
        DIR/comparisons.jsonl       {"prompt": [...], "chosen", "rejected"}  (the rankings' untied pairs)
        DIR/manifest.json           counts, sizes, label agreement, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

from minigpt.configurator import CommandParser, bounded, utf8_console
from minigpt.files import atomic_write_text, make_dir
from rlhf.world.corpus import corpus
from rlhf.world.labelers import (DEFAULT_TEMPERATURE, label_agreement, make_demonstrations,
                                 make_rankings, pairwise_agreement, perturb)
from rlhf.world.oracle import score
from rlhf.world.tasks import FAMILIES, SPLITS, make_prompts


def atomic_write_jsonl(path: str, rows) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def cmd_sample(args) -> None:
    rng = random.Random(args.seed)
    fams = [args.family] if args.family else None
    for ex in make_prompts(args.split, args.n, seed=args.seed, families=fams, progress=True):
        bad, kind = perturb(ex, rng)
        turns = " / ".join(f"{m['role'][0].upper()}: {m['content']}" for m in ex.conversation)
        print(f"[{ex.family} · {ex.h} · d{ex.difficulty}] {turns}")
        print(f"    gold      {ex.gold!r:40}  score {score(ex.conversation, ex.gold):.2f}")
        print(f"    {kind:9} {bad!r:40}  score {score(ex.conversation, bad):.2f}")


def export(out: str, n_demos: int = 2000, n_train: int = 4000, n_val: int = 500, n_test: int = 500,
           n_rankings: int = 1000, k: int = 4, corpus_chars: int = 3_000_000, seed: int = 0,
           temperature: float = DEFAULT_TEMPERATURE, demo_seed: int | None = None, progress: bool = False) -> dict:
    """Write every dataset of the world into `out` (see the module docstring); returns the manifest.
    demo_seed: seed of demonstrations.jsonl alone (None = seed), so it can match an SFT run's own demo_seed.
    progress: a bar while the demonstrations' and the splits' prompts are made, when that takes over 2 s."""
    t0 = time.time()
    make_dir(out, "--out")
    seconds = {}

    t = time.time()
    text = corpus(corpus_chars, seed)
    atomic_write_text(os.path.join(out, "corpus.txt"), text)
    seconds["corpus"] = time.time() - t

    t = time.time()
    demos = make_demonstrations(n_demos, seed=seed if demo_seed is None else demo_seed, progress=progress)
    atomic_write_jsonl(os.path.join(out, "demonstrations.jsonl"), ({"messages": c} for c in demos))
    seconds["demonstrations"] = time.time() - t

    t = time.time()
    counts = {}
    for split, n in zip(SPLITS, (n_train, n_val, n_test)):
        exs = make_prompts(split, n, seed=seed, progress=progress)
        atomic_write_jsonl(os.path.join(out, f"prompts_{split}.jsonl"),
                           ({"messages": e.conversation, "family": e.family, "h": e.h, "id": e.id,
                             "difficulty": e.difficulty} for e in exs))
        counts[f"prompts_{split}"] = len(exs)
    seconds["prompts"] = time.time() - t

    t = time.time()
    rows = make_rankings(n_rankings, k=k, seed=seed, temperature=temperature)
    atomic_write_jsonl(os.path.join(out, "rankings.jsonl"), rows)
    pairs = []
    for r in rows:
        for i in range(k):
            for j in range(k):
                if r["ranks"][i] < r["ranks"][j]:
                    pairs.append({"prompt": r["prompt"], "chosen": r["responses"][i],
                                  "rejected": r["responses"][j]})
    atomic_write_jsonl(os.path.join(out, "comparisons.jsonl"), pairs)
    agreement = pairwise_agreement([r["prompt"] for r in rows], [r["responses"] for r in rows],
                                   [r["ranks"] for r in rows])
    seconds["rankings"] = time.time() - t
    seconds["total"] = time.time() - t0

    manifest = {"seed": seed, "corpus_chars": len(text), "demonstrations": len(demos), **counts,
                "rankings": len(rows), "comparisons": len(pairs), "k": k, "temperature": temperature,
                "label_agreement": agreement, "seconds": seconds,
                "bytes": {f: os.path.getsize(os.path.join(out, f)) for f in sorted(os.listdir(out))
                          if not f.startswith(".")}}
    atomic_write_text(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None) -> None:
    p = CommandParser(prog="python -m rlhf.world", description=__doc__,      # the docstring once
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", help="print prompts, gold answers, perturbed answers and scores")
    s.add_argument("--n", type=bounded(int, ">= 1"), default=5, help="number of prompts (default 5)")
    s.add_argument("--family", choices=FAMILIES, default=None, help="only this family")
    s.add_argument("--split", choices=SPLITS, default="train")
    s.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("export", help="write corpus, demonstrations, prompts, rankings, comparisons")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--n-demos", "--n_demos", type=bounded(int, ">= 1"), default=2000,
                   help="SFT demonstrations (few, imperfect)")
    e.add_argument("--n-train", "--n_train", type=bounded(int, ">= 1"), default=4000, help="train prompts (RM / PPO)")
    e.add_argument("--n-val", "--n_val", type=bounded(int, ">= 1"), default=500)
    e.add_argument("--n-test", "--n_test", type=bounded(int, ">= 1"), default=500)
    e.add_argument("--n-rankings", "--n_rankings", type=bounded(int, ">= 1"), default=1000,
                   help="example rankings of gold + perturbations")
    e.add_argument("--k", type=bounded(int, ">= 2"), default=4, help="responses per ranking")
    e.add_argument("--corpus-chars", "--corpus_chars", type=bounded(int, ">= 1"), default=3_000_000)
    e.add_argument("--temperature", type=bounded(float, ">= 0"), default=DEFAULT_TEMPERATURE,
                   help="Bradley-Terry noise of the ranker (0 = noiseless)")
    e.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("agreement", help="labeler agreement with the gold order at a temperature")
    a.add_argument("--temperature", type=bounded(float, ">= 0"), default=DEFAULT_TEMPERATURE)
    a.add_argument("--n", type=bounded(int, ">= 1"), default=300)
    args = p.parse_args(argv)
    if args.cmd == "sample":
        cmd_sample(args)
    elif args.cmd == "export":
        m = export(args.out, args.n_demos, args.n_train, args.n_val, args.n_test, args.n_rankings, args.k,
                   args.corpus_chars, args.seed, args.temperature, progress=True)
        print(json.dumps(m, indent=2))
    else:
        print(json.dumps(label_agreement(args.temperature, n_prompts=args.n), indent=2))


if __name__ == "__main__":
    utf8_console()
    sys.exit(main())
