"""Be the labeler InstructGPT hired: write demonstrations, or rank K samples of a model.

    python -m rlhf.label demos --out my/demos.jsonl --n 20                 # world prompts (train split)
    python -m rlhf.label demos --out my/demos.jsonl --prompts prompts.jsonl
    python -m rlhf.label rank --model runs/default/sft --out my/rankings.jsonl --k 4 --n 20
    python -m rlhf.label rank --model runs/default/sft --out r.jsonl --simulate --n 200   # no human needed

InstructGPT (Ouyang et al., 2022, section 3.4) had contractors do two jobs: write the answer a good
assistant would give (demonstrations, the SFT data) and rank K = 4..9 model outputs for the same prompt
from best to worst (comparisons, the reward model data; K outputs give K-choose-2 pairs). This tool does
both in the terminal and appends what you write to the JSONL formats the stages read:

    demonstrations  {"messages": [...prompt turns, {"role": "assistant", "content": YOUR ANSWER}], ...}
    rankings        {"prompt": [...], "responses": [K samples], "ranks": [0 = best, equal = tie], ...}

Demonstrations: type the answer on one line (write \\n for a line break); an empty line skips the prompt.
Rankings: type one rank per response, 1 = best, equal numbers = a tie ("1 3 2 2"); "s" skips.
"/quit" or Ctrl-D stops. Every answer is appended to --out at once (one atomic write of a whole line,
rlhf.data.append_jsonl), so Ctrl-C loses nothing already answered, and a re-run skips the prompts the
file already answers (resume). --simulate answers with the world's simulated labeler instead
(rlhf.world.demonstrate / rlhf.world.rank), which is how the tests drive the same code path.
"""

from __future__ import annotations

import os
import random
import sys
import zlib

from minigpt.checkpoint import load_model, one_line_errors
from minigpt.configurator import CommandParser, bounded, utf8_console
from rlhf.chat import resolve_checkpoint
from rlhf.data import DataError, append_jsonl, load_demonstrations, load_prompts, load_rankings
from rlhf.rollout import generate_responses
from rlhf.world import demonstrate, make_prompts, rank

MODES = ("demos", "rank")


def prompt_key(conversation: list[dict]) -> str:
    """What identifies a prompt across sessions: its turns as 'role: content' lines."""
    return "\n".join(f"{m['role']}: {m['content'].strip()}" for m in conversation)


def answered_keys(path: str, mode: str) -> set[str]:
    """Keys of the prompts `path` already answers (empty when the file does not exist yet)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return set()
    try:
        if mode == "demos":
            return {prompt_key(conv[:-1]) for conv in load_demonstrations(path)}
        return {prompt_key(r.prompt) for r in load_rankings(path)}
    except DataError as e:
        raise SystemExit(f"error: cannot resume from {e}") from None


def prompt_source(prompts_path: str | None, n: int, split: str = "train", seed: int = 0) -> list[tuple[list, dict]]:
    """[(conversation, meta)]: the first n prompts of a JSONL file, or n prompts of the world's split."""
    if prompts_path:
        try:
            convs = load_prompts(prompts_path)
        except DataError as e:
            raise SystemExit(f"error: {e}") from None
        return [(c, {}) for c in convs[:n]]
    return [(ex.conversation, {"family": ex.family, "h": ex.h, "id": ex.id})
            for ex in make_prompts(split, n, seed=seed)]


def show_conversation(conv: list[dict], out) -> None:
    for m in conv:
        out.write(f"  {m['role']:>9}: {m['content']}\n")


def ask(stdin, out, question: str) -> str | None:
    """Print `question`, read one line; None on EOF or /quit."""
    out.write(question)
    out.flush()
    line = stdin.readline()
    if not line or line.strip() in ("/quit", "/q", "/exit"):
        return None
    return line.rstrip("\n")


def parse_ranks(text: str, k: int) -> list[int]:
    """'1 3 2 2' -> [0, 2, 1, 1]: one rank per response, 1 = best, equal = tie; dense, 0-based.

    Raises ValueError with a message for the labeler when the line is not k whole numbers >= 1.
    """
    parts = text.replace(",", " ").split()
    if len(parts) != k:
        raise ValueError(f"give {k} ranks, one per response (1 = best, equal = tie), e.g. {' '.join(map(str, range(1, k + 1)))}")
    try:
        ranks = [int(p) for p in parts]
    except ValueError:
        raise ValueError("ranks are whole numbers (1 = best)") from None
    if min(ranks) < 1:
        raise ValueError("ranks start at 1 (= best)")
    levels = sorted(set(ranks))                 # dense: 1 3 3 7 -> 0 1 1 2
    return [levels.index(r) for r in ranks]


def read_ranks(stdin, stdout, k: int):
    """Ask until the labeler types k valid ranks: the 0-based ranks, None for "s" (skip), "quit" to stop."""
    while True:
        line = ask(stdin, stdout, f"ranks for 1..{k} (1 = best, equal = tie; s = skip)> ")
        if line is None:
            return "quit"
        if line.strip().lower() == "s":
            return None
        try:
            return parse_ranks(line, k)
        except ValueError as e:
            stdout.write(f"  {e}\n")


def label_demonstrations(items, out_path: str, stdin=None, stdout=None, simulate: bool = False,
                         seed: int = 0) -> int:
    """Write a demonstration for each unanswered prompt; returns how many were added this session."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    done = answered_keys(out_path, "demos")
    todo = [(c, m) for c, m in items if prompt_key(c) not in done]
    stdout.write(f"{len(items) - len(todo)} of {len(items)} prompts already answered in {out_path}; "
                 f"{len(todo)} to go\n")
    rng = random.Random(f"label-demos:{seed}")
    added = 0
    try:
        for i, (conv, meta) in enumerate(todo):
            if simulate:
                answer = demonstrate(conv, rng)
            else:
                stdout.write(f"\n[{i + 1}/{len(todo)}] {meta.get('family', '')} {meta.get('h', '')}\n")
                show_conversation(conv, stdout)
                answer = ask(stdin, stdout, "your answer (empty = skip, /quit = stop)> ")
                if answer is None:
                    break
                answer = answer.replace("\\n", "\n").strip()
                if not answer:
                    continue
            row = {"messages": conv + [{"role": "assistant", "content": answer}], **meta,
                   "labeler": "simulated" if simulate else "human"}
            append_jsonl(out_path, row)
            added += 1
    except KeyboardInterrupt:
        stdout.write("\n(interrupted)\n")
    stdout.write(f"saved {added} new demonstrations to {out_path}\n")
    return added


def label_rankings(items, out_path: str, model, tokenizer, k: int = 4, temperature: float = 1.0,
                   max_new_tokens: int = 48, stdin=None, stdout=None, simulate: bool = False,
                   seed: int = 0, sim_temperature: float | None = None) -> int:
    """Sample k responses per unanswered prompt from `model` and rank them; returns how many were added.

    Samples of prompt i use the seed (seed, i's key), so a resumed session shows the same candidates.
    """
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    done = answered_keys(out_path, "rank")
    todo = [(c, m) for c, m in items if prompt_key(c) not in done]
    stdout.write(f"{len(items) - len(todo)} of {len(items)} prompts already ranked in {out_path}; "
                 f"{len(todo)} to go\n")
    rng = random.Random(f"label-rank:{seed}")
    added = 0
    try:
        for i, (conv, meta) in enumerate(todo):
            sample_seed = seed * 1_000_003 + zlib.crc32(prompt_key(conv).encode())
            gens = generate_responses(model, tokenizer, [conv] * k, max_new_tokens, temperature=temperature,
                                      seed=sample_seed)
            responses = [g["response"] for g in gens]
            if simulate:
                kw = {} if sim_temperature is None else {"temperature": sim_temperature}
                ranks = rank(conv, responses, rng, stopped=[g["stopped"] for g in gens], **kw)
            else:
                stdout.write(f"\n[{i + 1}/{len(todo)}] {meta.get('family', '')} {meta.get('h', '')}\n")
                show_conversation(conv, stdout)
                for j, g in enumerate(gens):
                    stdout.write(f"  ({j + 1}) {g['response']!r}{'' if g['stopped'] else '  [did not stop]'}\n")
                ranks = read_ranks(stdin, stdout, k)
                if ranks == "quit":
                    break
                if ranks is None:
                    continue
            row = {"prompt": conv, "responses": responses, "ranks": ranks, **meta,
                   "labeler": "simulated" if simulate else "human"}
            append_jsonl(out_path, row)
            added += 1
    except KeyboardInterrupt:
        stdout.write("\n(interrupted)\n")
    stdout.write(f"saved {added} new rankings to {out_path}\n")
    return added


def main(argv: list[str] | None = None) -> int:
    ap = CommandParser(prog="python -m rlhf.label", description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=MODES, help="demos: write answers; rank: order K samples of --model")
    ap.add_argument("--out", required=True, help="JSONL file to append to (created if missing; resumed if not)")
    ap.add_argument("--prompts", default=None, help="prompts JSONL file (default: the world's prompts)")
    ap.add_argument("--n", type=bounded(int, ">= 1"), default=20, help="how many prompts")
    ap.add_argument("--split", default="train", choices=("train", "val", "test"), help="world split to draw from")
    ap.add_argument("--seed", type=int, default=0, help="seed of the world prompts, the samples, the simulator")
    ap.add_argument("--model", default=None, help="rank mode: checkpoint (or pipeline run) directory to sample")
    ap.add_argument("--k", type=bounded(int, ">= 2"), default=4, help="rank mode: samples per prompt")
    ap.add_argument("--temperature", type=bounded(float, ">= 0"), default=1.0, help="rank mode: sampling temperature")
    ap.add_argument("--max_new_tokens", type=bounded(int, ">= 1"), default=48, help="rank mode: longest sample")
    ap.add_argument("--simulate", action="store_true", help="answer with the world's simulated labeler")
    args = ap.parse_args(argv)

    items = prompt_source(args.prompts, args.n, args.split, args.seed)
    if args.mode == "demos":
        label_demonstrations(items, args.out, simulate=args.simulate, seed=args.seed)
        return 0
    if not args.model:
        raise SystemExit("error: rank mode needs --model DIR (a checkpoint to sample from)")
    if args.k < 2:
        raise SystemExit("error: --k must be at least 2")
    with one_line_errors():                      # e.g. a reward model's directory, or a model.pt cut short
        model, tok = load_model(resolve_checkpoint(args.model))
    label_rankings(items, args.out, model, tok, k=args.k, temperature=args.temperature,
                   max_new_tokens=args.max_new_tokens, simulate=args.simulate, seed=args.seed)
    return 0


if __name__ == "__main__":
    utf8_console()
    main()
