"""Check this project on a GPU in one command, and gather the figures README's "On a GPU" reports.

    python tools/gpu_check.py                                  # GPU tests, the default and gpu pipelines, memory
    python tools/gpu_check.py --budget 540                     # stop (resumably) after 9 minutes
    python tools/gpu_check.py --skip_tests --presets gpu       # the same again: finished stages are reused

In order, each step under what is left of --budget:
  1. the environment: torch and its CUDA version, the GPU, its compute capability, bf16 hardware;
  2. `python -m pytest -m gpu -n 0` (the pipeline, DPO, GRPO, best-of-N and chat on CUDA, the precision
     invariants, bench.memory's estimate against the measured peak), log in OUT/gpu_tests.log;
  3. `python -m rlhf.pipeline --preset P` for each P of --presets, into RUNS/P (log RUNS/P.log). When the
     budget runs out the stage in progress gets a Ctrl-C, saves its checkpoint and stops; the same command
     run again resumes it, and timings.json counts the time of both attempts;
  4. with a CUDA GPU, `python -m bench.memory --preset gpt2 --device=cuda` (estimate vs measured peak).

OUT gets at most 8 plain files, rewritten after every step (so a cut run still leaves them): summary.md
(the environment, each step's outcome and wall time, each pipeline's targets and time per stage, the tail
of any failure's log), gpu_tests.log, memory.log, and P_report.md and P_metrics.json for each finished
pipeline. The exit status is 1 when a step failed, else 0 (a step cut at the budget's end is not a failure:
the same command resumes it). A step gets its Ctrl-C GRACE_S seconds before the budget's end, so that the
whole check, the stage's checkpoint included, ends within --budget. On a machine without a GPU every step
still runs (the GPU tests skip), which is how this script is tested.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402  (after ROOT is on sys.path, as the imports below)

from minigpt import checkpoint as ckpt_io  # noqa: E402
from minigpt.configurator import CommandParser, bounded, utf8_console  # noqa: E402
from minigpt.files import atomic_write_text, make_dir  # noqa: E402
from rlhf.pipeline import PIPELINE_PRESETS, STAGE_NAMES  # noqa: E402

GRACE_S = 60          # after the Ctrl-C at the budget's end: time for the stage to save its checkpoint
RESERVE_S = 10        # kept back for this script's own start (importing torch) and for writing the summary
MIN_STEP_S = 30       # a step with less than this left is skipped, not started


def environment() -> list[str]:
    """Markdown lines: what this machine's torch sees."""
    lines = [f"- Python {sys.version.split()[0]}, torch {torch.__version__} "
             f"(CUDA {torch.version.cuda or 'none'}; built for {', '.join(torch.cuda.get_arch_list()) or 'no GPU'})"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            major, minor = torch.cuda.get_device_capability(i)
            lines.append(f"- GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability "
                         f"{major}.{minor} ({'bf16 hardware' if major >= 8 else 'no bf16 hardware: float32'})")
    else:
        lines.append("- no CUDA GPU: the GPU tests skip and the pipelines run on "
                     + ("mps" if torch.backends.mps.is_available() else "the CPU"))
    return lines


def listen_to_ctrl_c() -> None:
    """In the child before it starts: the default Ctrl-C handling. A process started in the background (`&` in
    a script, nohup) ignores SIGINT, and its children inherit that: Python would then never raise
    KeyboardInterrupt, and a stage cut at the budget's end would be killed without saving its checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_step(cmd: list[str], log_path: str, seconds_left: float, echo=lambda line: False) -> tuple[str, float]:
    """Run `python cmd...` in the repository root, its output into log_path (lines for which echo() is true
    also to the console). Past seconds_left it gets a Ctrl-C, GRACE_S to stop, then a kill.
    Returns (status, wall seconds): status "passed", "failed (exit N)" or "cut (out of budget)"."""
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ python " + " ".join(cmd) + "\n")
        log.flush()
        child = subprocess.Popen([sys.executable, *cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 encoding="utf-8", errors="replace", env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                 preexec_fn=listen_to_ctrl_c if os.name == "posix" else None)

        def copy_output():                           # a thread, so that the budget is checked while it is quiet
            for line in child.stdout:
                log.write(line)
                log.flush()
                if echo(line):
                    print("    " + line.rstrip(), flush=True)
        reader = threading.Thread(target=copy_output, daemon=True)
        reader.start()
        cut = False
        try:
            child.wait(timeout=max(seconds_left, 0.0) if seconds_left < float("inf") else None)
        except subprocess.TimeoutExpired:
            cut = True
            child.send_signal(signal.SIGINT)         # a stage saves its checkpoint and stops
            try:
                child.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        reader.join()
    wall = time.time() - t0
    if cut:
        return "cut (out of budget)", wall
    return ("passed" if child.returncode == 0 else f"failed (exit {child.returncode})"), wall


def log_tail(path: str, n: int = 15) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.rstrip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
    return ["```", *lines[-n:], "```"]


def report_section(report: str, heading: str) -> list[str]:
    """The lines of report.md's section whose heading starts with `heading`, the heading one level down."""
    out, inside = [], False
    for line in report.splitlines():
        if line.startswith("## "):
            inside = line.startswith("## " + heading)
            line = "#" + line
        if inside:
            out.append(line)
    return out


def pipeline_summary(preset: str, run_dir: str, out: str, finished: bool) -> list[str]:
    """Markdown lines for one pipeline run: the stages finished and, when the run finished, its report's
    targets and time tables; copies its report.md and metrics.json into `out` as PRESET_report.md and
    PRESET_metrics.json."""
    done = [s for s in STAGE_NAMES if s != "eval" and ckpt_io.is_finished(os.path.join(run_dir, s))]
    lines = [f"- stages finished: {', '.join(done) or 'none'}"]
    if not finished:
        return lines
    for name in ("report.md", "metrics.json"):
        shutil.copyfile(os.path.join(run_dir, name), os.path.join(out, f"{preset}_{name}"))
    with open(os.path.join(run_dir, "report.md"), encoding="utf-8") as f:
        text = f.read()
    return lines + [""] + report_section(text, "Against the targets") + report_section(text, "Time")


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python tools/gpu_check.py", description=__doc__.splitlines()[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--out", default="gpu_check", help="where summary.md and the logs go (default gpu_check)")
    parser.add_argument("--runs", default="runs/gpu_check", help="the pipelines' run directories (default "
                        "runs/gpu_check): a second call reuses and resumes them")
    parser.add_argument("--presets", default="default,gpu", help="pipeline presets to run, comma-separated "
                        "(default default,gpu; empty: none)")
    parser.add_argument("--budget", type=bounded(float, ">= 0"), default=0,
                        help="seconds for everything (0 = no limit)")
    parser.add_argument("--skip_tests", action="store_true", help="leave out the GPU tests")
    parser.add_argument("--memory", default="gpt2", help="bench.memory's preset on the GPU (empty: leave out)")
    args = parser.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    unknown = [p for p in presets + [args.memory] if p and p not in PIPELINE_PRESETS]
    if unknown:                                      # before any step: the pipeline would say so minutes later
        raise SystemExit(f"error: unknown preset {unknown[0]!r}; choose from {', '.join(PIPELINE_PRESETS)}")
    if len(presets) > 2:
        raise SystemExit("error: --presets: at most two per call (OUT keeps 8 files); run the others in a second call")
    t_start = time.time()
    deadline = t_start + args.budget if args.budget else float("inf")
    make_dir(args.out, "--out")
    make_dir(args.runs, "--runs")
    env = environment()
    sections: list[list[str]] = []
    failed = False

    def write_summary() -> None:
        command = "python tools/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
        head = ["# GPU check", "", f"`{command.strip()}`, {time.strftime('%Y-%m-%d %H:%M')}, "
                f"{time.time() - t_start:.0f} s so far", "", *env, ""]
        atomic_write_text(os.path.join(args.out, "summary.md"), "\n".join(head + [x for s in sections for x in s])
                          + "\n")

    def left() -> float:                             # until the next step's Ctrl-C
        return deadline - time.time() - RESERVE_S - GRACE_S

    def step(title: str, cmd: list[str], log_path: str, echo=lambda line: False, details=lambda status: []) -> str:
        """One step into the summary: its command, status and wall time, details(status)'s lines, and the
        end of its log unless it passed."""
        nonlocal failed
        if left() < MIN_STEP_S:
            sections.append([f"## {title}", "", "skipped: out of budget", ""])
            print(f"{title}: skipped (out of budget)", flush=True)
            return "skipped"
        print(f"{title}: python {' '.join(cmd)}", flush=True)
        status, wall = run_step(cmd, log_path, left(), echo)
        failed |= status.startswith("failed")
        print(f"{title}: {status}, {wall:.0f} s", flush=True)
        lines = [f"## {title}", "", f"`python {' '.join(cmd)}`: **{status}**, {wall:.0f} s wall", *details(status)]
        if status != "passed":
            lines += ["", *log_tail(log_path)]
        sections.append(lines + [""])
        write_summary()
        return status

    def pytest_outcome(status: str) -> list[str]:
        with open(os.path.join(args.out, "gpu_tests.log"), encoding="utf-8", errors="replace") as f:
            last = [line.strip() for line in f if line.strip()][-1:]
        ran = bool(last) and " passed" in last[0]
        return [f"- pytest: {last[0] if last else 'no output'}"] + ([] if ran else ["- **no GPU test ran**"])

    print("\n".join(env), flush=True)
    write_summary()
    if not args.skip_tests:
        step("GPU tests", ["-m", "pytest", "-m", "gpu", "-n", "0", "-q", "-p", "no:cacheprovider"],
             os.path.join(args.out, "gpu_tests.log"), details=pytest_outcome)
    for preset in presets:
        run_dir = os.path.join(args.runs, preset)
        resume = ["- cut: run the same command again to resume it (finished stages are reused)"]
        step(f"Pipeline, preset {preset}",
             ["-m", "rlhf.pipeline", "--preset", preset, "--out", run_dir, "--progress=false"],
             os.path.join(args.runs, f"{preset}.log"),
             echo=lambda line: line.startswith(("====", "error:", "targets:", "time:")),
             details=lambda status: (resume if status.startswith("cut") else [])
             + pipeline_summary(preset, run_dir, args.out, finished=status == "passed"))
    if args.memory and torch.cuda.is_available():
        step(f"Memory, preset {args.memory}", ["-m", "bench.memory", "--preset", args.memory, "--device=cuda"],
             os.path.join(args.out, "memory.log"))
    write_summary()
    print(f"summary: {os.path.join(args.out, 'summary.md')}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    utf8_console()
    sys.exit(main())
