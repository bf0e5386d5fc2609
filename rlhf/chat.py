"""Talk to any checkpoint in the terminal: multi-turn chat with streamed tokens, or one-shot answers.

    python -m rlhf.chat runs/default                 # the run's most aligned model (ppo, else sft, else base)
    python -m rlhf.chat runs/default/sft             # one stage's checkpoint
    python -m rlhf.chat runs/default/ppo --prompt "Reverse the word cat."     # one answer, then exit
    echo "What is 2 + 3?" | python -m rlhf.chat runs/default/ppo --temperature=0

Each turn the whole conversation so far is rendered with the chat template (rlhf.data.render_prompt:
<|user|> ... <|end|><|assistant|> ... <|end|> ... <|assistant|>) and the model continues it token by
token until it emits <|end|>. History longer than the context (block_size - max_new_tokens) loses its
oldest turns first. Sampling is softmax(logits / temperature), optionally restricted to the top k; a
KV cache makes each new token cost one position of compute. Commands inside the chat:

    /reset          forget the conversation          /temp 0.7   set the sampling temperature (0 = greedy)
    /system TEXT    set a system message              /quit       leave (so does Ctrl-D)
    /help           list the commands

The base (pretrained) model has never seen the template, so it rambles; the SFT and PPO models answer.
"""

from __future__ import annotations

import os
import sys

import torch

from minigpt.checkpoint import load_model
from minigpt.configurator import CommandParser, bounded, utf8_console
from minigpt.generate import check_generator, sample_next
from minigpt.trainer import pick_device
from rlhf.data import render_prompt, stop_token_id
from rlhf.rollout import sampling_generator

# Pipeline stages in the order `python -m rlhf.chat RUN_DIR` prefers them.
PREFERRED_STAGES = ("ppo", "sft_large", "sft", "pretrain")
HELP = "commands: /reset  /temp T  /system TEXT  /quit  /help"


def resolve_checkpoint(path: str) -> str:
    """A directory holding model.pt: `path` itself, or the most aligned stage inside a pipeline run."""
    if os.path.exists(os.path.join(path, "model.pt")):
        return path
    for stage in PREFERRED_STAGES:
        candidate = os.path.join(path, stage)
        if os.path.exists(os.path.join(candidate, "model.pt")):
            return candidate
    raise SystemExit(f"error: {path}: no model.pt here nor in {', '.join(PREFERRED_STAGES)}/ "
                     f"(run python -m rlhf.pipeline first)")


@torch.no_grad()
def stream_reply(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.7,
                 top_k: int | None = None, generator: torch.Generator | None = None):
    """Yield the reply's text piece by piece as tokens are sampled; stops at <|end|>.

    The pieces joined equal tokenizer.decode(reply ids without <|end|>, skip_special=True): like every
    saved or scored reply, special tokens the model samples mid-reply are not part of its text. A piece
    is yielded only when its bytes form complete characters (a character split over two tokens waits).
    """
    end = stop_token_id(tokenizer)
    N = min(max_new_tokens, model.config.block_size - len(prompt_ids))
    if N <= 0:
        return
    check_generator(generator, model.device)
    cache = model.make_kv_cache(1, len(prompt_ids) + N)
    step = torch.tensor([prompt_ids], dtype=torch.long, device=model.device)  # (1, T) first the prompt
    reply: list[int] = []
    shown = ""
    for _ in range(N):
        h = model.hidden_states(step, kv_cache=cache)           # (1, T, C)
        logits = model.lm_head(h[:, -1, :]).float()             # (1, V)
        tok = int(sample_next(logits, temperature, top_k=top_k, generator=generator)[0].item())   # the sampler of generate()
        if tok == end:
            break
        reply.append(tok)
        text = tokenizer.decode(reply, skip_special=True)
        if not text.endswith("\ufffd"):                         # wait for the rest of a split character
            yield text[len(shown):]
            shown = text
        step = torch.tensor([[tok]], dtype=torch.long, device=model.device)  # (1, 1) then one token a step
    text = tokenizer.decode(reply, skip_special=True)
    if text != shown:
        yield text[len(shown):]


class ChatSession:
    """A conversation with one model: `history` of {"role", "content"} messages, settings, commands."""

    def __init__(self, model, tokenizer, temperature: float = 0.7, top_k: int | None = 50,
                 max_new_tokens: int = 64, seed: int = 0, system: str | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.temperature, self.top_k, self.max_new_tokens = temperature, top_k, max_new_tokens
        self.system = system
        self.generator = sampling_generator(model, seed)        # on the model's device
        self.history: list[dict] = []

    def prompt_ids(self) -> list[int]:
        """The conversation rendered for generation, oldest turns dropped to leave room for the reply."""
        conv = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
        room = max(self.model.config.block_size - self.max_new_tokens, 8)
        return render_prompt(conv, self.tokenizer, max_len=room)

    def reply(self, user_text: str, out=None) -> str:
        """Add the user's turn, stream the assistant's answer to `out` (if given), keep it in the history."""
        self.history.append({"role": "user", "content": user_text})
        pieces = []
        for piece in stream_reply(self.model, self.tokenizer, self.prompt_ids(), self.max_new_tokens,
                                  self.temperature, self.top_k, self.generator):
            pieces.append(piece)
            if out is not None:
                out.write(piece)
                out.flush()
        text = "".join(pieces)
        self.history.append({"role": "assistant", "content": text})
        return text

    def command(self, line: str) -> str | None:
        """Run a /command; returns the message to show, or None for /quit."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit", "/q"):
            return None
        if name == "/reset":
            self.history = []
            return "(conversation cleared)"
        if name == "/temp":
            try:
                t = float(arg)
            except ValueError:
                return f"(usage: /temp 0.7; the temperature is {self.temperature})"
            if t < 0:
                return "(the temperature must be >= 0)"
            self.temperature = t
            return f"(temperature {t}{', greedy' if t == 0 else ''})"
        if name == "/system":
            self.system = arg or None
            return f"(system message {'set' if arg else 'removed'})"
        if name == "/help":
            return "(" + HELP + ")"
        return f"(unknown command {name}; {HELP})"


def run_interactive(session: ChatSession, stdin=None, stdout=None, name: str = "model") -> None:
    """The read-reply loop: each input line is a user turn or a /command; EOF or /quit ends it."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    tty = stdin.isatty()
    stdout.write(f"chatting with {name} (temperature {session.temperature}); {HELP}\n")
    while True:
        if tty:
            stdout.write("you> ")
            stdout.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            stdout.write("\n")
            break
        if not line:                      # EOF (Ctrl-D or the end of a script)
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            msg = session.command(line)
            if msg is None:
                break
            stdout.write(msg + "\n")
            continue
        stdout.write("assistant> ")
        stdout.flush()
        try:
            session.reply(line, out=stdout)
        except KeyboardInterrupt:         # Ctrl-C stops this answer, not the chat
            stdout.write(" [interrupted]")
        stdout.write("\n")
        stdout.flush()


def main(argv: list[str] | None = None) -> None:
    ap = CommandParser(prog="python -m rlhf.chat", description=__doc__.splitlines()[0])
    ap.add_argument("path", help="a checkpoint directory (model.pt + tokenizer.bpe) or a pipeline run directory")
    ap.add_argument("--prompt", default=None, help="answer this one message and exit (no interactive loop)")
    ap.add_argument("--temperature", type=bounded(float, ">= 0"), default=0.7,
                    help="sampling temperature; 0 = greedy")
    ap.add_argument("--top_k", type=bounded(int, ">= 0"), default=50,
                    help="sample among the k most likely tokens (0 = all)")
    ap.add_argument("--max_new_tokens", type=bounded(int, ">= 1"), default=64, help="longest reply in tokens")
    ap.add_argument("--system", default=None, help="an optional system message")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (cuda, else mps, else cpu)")
    args = ap.parse_args(argv)

    device = pick_device(args.device)             # a device this machine lacks is a one-line error
    ckpt = resolve_checkpoint(args.path)
    try:
        model, tokenizer = load_model(ckpt, device=device)
    except (FileNotFoundError, ValueError) as e:   # e.g. a reward model's directory: not something to chat with
        raise SystemExit(f"error: {e}") from None
    session = ChatSession(model, tokenizer, temperature=args.temperature, top_k=args.top_k or None,
                          max_new_tokens=args.max_new_tokens, seed=args.seed, system=args.system)
    if args.prompt is not None:
        session.reply(args.prompt, out=sys.stdout)
        sys.stdout.write("\n")
        return
    run_interactive(session, name=ckpt)


if __name__ == "__main__":
    utf8_console()
    main()
