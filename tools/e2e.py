"""The course's end-to-end check: run the small preset on your code and check that each stage did its job.

    python tools/e2e.py                       # ~2-4 minutes on 2 CPU cores; runs/e2e
    python tools/e2e.py --out runs/mine       # elsewhere
    python tools/e2e.py --run runs/mine       # only check a finished run (pipeline + dpo/)
    python tools/grade.py --e2e               # the same, after the graded tests

Checks, on the gold oracle (which training never sees) and on the held-out comparisons:
  1. SFT beats the base model: greedy gold difference with a 95% CI above 0;
  2. the reward model is clearly above chance on held-out comparisons (95% lower bound > 50%);
  3. PPO raises the reward model's score over SFT without lowering gold (sampled; gold CI not below 0);
  4. DPO raises its implicit-reward accuracy above chance and lowers its loss below ln 2.
The unit tests say each function is right; this says the pieces fit together and learn.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from minigpt.checkpoint import one_line_errors, read_json_file  # noqa: E402  (needs ROOT on sys.path)
from minigpt.configurator import CommandParser, utf8_console  # noqa: E402


def _run(args: list[str]) -> None:
    print("$ python " + " ".join(args), flush=True)
    r = subprocess.run([sys.executable, *args], cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"error: `python {' '.join(args)}` failed with exit code {r.returncode}")


def run_small(out: str) -> float:
    """The small pipeline and DPO after it, into `out`; returns the wall time in seconds."""
    t0 = time.time()
    _run(["-m", "rlhf.pipeline", "--preset=small", f"--out={out}", "--progress=False"])
    _run(["-m", "rlhf.dpo", "--preset=small", f"--sft_dir={out}/sft", f"--rm_dir={out}/reward_model",
          f"--out_dir={out}/dpo", "--progress=False"])
    return time.time() - t0


def check(run: str) -> dict:
    """The four checks on a finished small run: {"checks": [{"check", "ok", "detail"}], "ok"}."""
    m = read_json_file(os.path.join(run, "metrics.json"))          # a damaged file: CheckpointError naming it
    dpo = read_json_file(os.path.join(run, "dpo", "summary.json"))
    checks = []

    d = m["base"]["gold_diff_vs_sft"]                                  # base - SFT, greedy
    checks.append({"check": "SFT beats the base model (gold, greedy)", "ok": d["ci"][1] < 0,
                   "detail": f"SFT - base = {-d['mean']:+.3f}, 95% CI [{-d['ci'][1]:+.3f}, {-d['ci'][0]:+.3f}] "
                             f"(gold {m['sft']['gold_score']:.3f} vs {m['base']['gold_score']:.3f})"})

    rm = m["reward_model"]
    n = rm.get("pairs") or 0
    acc = rm["val_accuracy"]
    lo = acc - 1.96 * math.sqrt(max(acc * (1 - acc), 1e-9) / max(n, 1))
    checks.append({"check": "the reward model is above chance on held-out comparisons", "ok": lo > 0.5,
                   "detail": f"accuracy {acc:.1%} on {n} pairs (95% lower bound {lo:.1%}; labelers' ceiling "
                             f"{rm['label_agreement']:.1%})"})

    ps, ss = m["ppo"]["sampled"], m["sft"]["sampled"]
    g = ps["gold_diff_vs_sft"]
    ok = ps["rm_score"] > ss["rm_score"] and g["ci"][1] > 0
    checks.append({"check": "PPO raises the RM score without lowering gold (sampled)", "ok": ok,
                   "detail": f"RM {ss['rm_score']:+.3f} -> {ps['rm_score']:+.3f}; gold PPO - SFT {g['mean']:+.3f} "
                             f"[{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]; KL {m['ppo'].get('kl', float('nan')):.2f} nats"})

    acc, loss, loss0 = dpo.get("val_accuracy") or 0.0, dpo.get("val_loss"), dpo.get("val_loss_init")
    ok = acc > 0.55 and loss is not None and loss0 is not None and loss < loss0
    checks.append({"check": "DPO raises its implicit-reward accuracy", "ok": ok,
                   "detail": f"held-out implicit-reward accuracy {acc:.1%} (every pair ties at the start: 0%; 50% = chance); "
                             f"loss {loss0 if loss0 is not None else float('nan'):.3f} -> "
                             f"{loss if loss is not None else float('nan'):.3f}"})
    return {"checks": checks, "ok": all(c["ok"] for c in checks)}


def print_checks(result: dict, seconds: float | None = None) -> None:
    for c in result["checks"]:
        print(f"[{'ok' if c['ok'] else 'FAIL'}] {c['check']}: {c['detail']}")
    took = f" in {seconds / 60:.1f} min" if seconds is not None else ""
    print(f"end to end{took}: {sum(c['ok'] for c in result['checks'])} of {len(result['checks'])} checks pass")


def run_e2e(out: str = "runs/e2e", run: str | None = None) -> dict:
    seconds = None
    if run is None:
        seconds = run_small(out)
        run = out
    result = check(run)
    result["seconds"] = seconds
    print_checks(result, seconds)
    return result


def main(argv=None) -> int:
    parser = CommandParser(prog="python tools/e2e.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/e2e", help="where the small run goes (default runs/e2e)")
    parser.add_argument("--run", help="check this finished run instead of training one")
    args = parser.parse_args(argv)
    if args.run and not os.path.exists(os.path.join(args.run, "metrics.json")):
        raise SystemExit(f"error: {args.run}/metrics.json not found: run python tools/e2e.py --out {args.run} first")
    if args.run and not os.path.exists(os.path.join(args.run, "dpo", "summary.json")):
        raise SystemExit(f"error: {args.run}/dpo/summary.json not found: not a run of this check (a pipeline run "
                         f"and DPO after it); run python tools/e2e.py --out {args.run} first")
    with one_line_errors():
        return 0 if run_e2e(args.out, args.run)["ok"] else 1


if __name__ == "__main__":
    utf8_console()
    sys.exit(main(sys.argv[1:]))
