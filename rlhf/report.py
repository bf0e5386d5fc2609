"""report.md of a pipeline run: the numbers (with 95% CIs), the plots, and a table of samples.

    python -m rlhf.report runs/default          # rewrite runs/default/report.md from metrics.json + eval/

Small and data-driven on purpose: every number printed here is read from metrics.json or from the
cached evaluation rows (eval/STAGE.jsonl), so the report can always be regenerated without a model.
"""

from __future__ import annotations

import os

from minigpt.checkpoint import atomic_write_text, one_line_errors, read_json_file
from minigpt.configurator import CommandParser, utf8_console
from rlhf.evaluate import read_rows
from rlhf.plots import LABELS, plot_all

STAGES = ("base", "sft", "sft_large", "best_of_n", "ppo")


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and x != x) else f"{x:.{digits}f}"


def _ci(m: dict | None, key: str = "gold_score", ci_key: str = "gold_ci") -> str:
    if not m or m.get(key) is None:
        return "n/a"
    lo, hi = m.get(ci_key) or (None, None)
    return f"{_f(m[key])} [{_f(lo)}, {_f(hi)}]"


def _pct(x, digits: int = 0) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _cell(text: str, n: int = 60) -> str:
    """A response as a Markdown table cell: one line, pipes escaped, long text cut."""
    t = "".join(c if c.isprintable() else ("⏎" if c == "\n" else "·") for c in text)   # control bytes
    t = t.replace("|", "\\|").replace("`", "'")       # GFM tables: \| is a literal pipe, even in code
    t = t if len(t) <= n else t[:n - 1] + "…"
    return f"`{t}`" if t.strip() else "*(empty)*"


def stage_table(results: dict) -> list[str]:
    st, cmp_ = results["stages"], results.get("comparisons", {})
    lines = ["| stage | gold, greedy [95% CI] | gold, sampled [95% CI] | win rate vs SFT (greedy; ties ½) "
             "| W / T / L | stop rate | mean tokens | RM score |",
             "|---|---|---|---|---|---|---|---|"]
    for s in STAGES:
        if s not in st:
            continue
        g, sa = st[s].get("greedy"), st[s].get("sampled")
        c = (cmp_.get(f"{s}_vs_sft") or {}).get("greedy")
        win = f"{_pct(c['gold']['win_rate_half'])} [{_pct(c['gold']['win_rate_half_ci'][0])}, " \
              f"{_pct(c['gold']['win_rate_half_ci'][1])}]" if c else "—"
        wtl = f"{c['gold']['wins']} / {c['gold']['ties']} / {c['gold']['losses']}" if c else "—"
        lines.append(f"| {LABELS.get(s, s)} | {_ci(g)} | {_ci(sa)} | {win} | {wtl} | {_pct(g.get('stop_rate'))} "
                     f"| {_f(g.get('mean_tokens'), 1)} | {_f(g.get('rm_score'), 2)} |")
    return lines


def breakdown_table(results: dict, field: str, title: str) -> list[str]:
    st = results["stages"]
    names = [s for s in STAGES if s in st]
    keys = sorted({k for s in names for k in (st[s].get("greedy") or {}).get(field, {})})
    if not keys:
        return []
    lines = [f"| {title} | " + " | ".join(LABELS.get(s, s) for s in names) + " |",
             "|---|" + "---|" * len(names)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(_f((st[s].get("greedy") or {}).get(field, {}).get(k)) for s in names) + " |")
    return lines


def sample_table(rows_by_stage: dict[str, list[dict]], n: int = 6) -> list[str]:
    """The same held-out prompts answered (greedy) by each stage, with gold scores in parentheses."""
    names = [s for s in STAGES if s in rows_by_stage]
    if not names:
        return []
    greedy = {s: {r["id"]: r for r in rows_by_stage[s] if r.get("decoding", "greedy") == "greedy"} for s in names}
    first = [r for r in rows_by_stage[names[0]] if r.get("decoding", "greedy") == "greedy"]
    # One prompt per family first, so the table shows the variety of the world.
    picked, seen = [], set()
    for r in first:
        if r["family"] not in seen:
            picked.append(r)
            seen.add(r["family"])
    picked = (picked + [r for r in first if r not in picked])[:n]
    lines = ["| prompt (family / H) | " + " | ".join(LABELS.get(s, s) for s in names) + " |",
             "|---|" + "---|" * len(names)]
    for r in picked:
        prompt = " / ".join(m["content"] for m in r["prompt"] if m["role"] == "user")
        cells = []
        for s in names:
            x = greedy[s].get(r["id"])
            cells.append("—" if x is None else f"{_cell(x['response'])} ({_f(x['gold'], 2)})")
        lines.append(f"| {_cell(prompt, 70)} *({r['family']} / {r['h']})* | " + " | ".join(cells) + " |")
    return lines


# What "alignment worked" means for a run: the bar the `gpu` preset is built to reach (the CPU presets are
# measured against it too). Each row: (what, the measured text, met: True / False / None = not measured).
RM_GAP_POINTS = 3           # reward model within this many points of the labelers' agreement
NONTIED_WIN_RATE = 0.70     # PPO wins this share of the prompts where gold tells PPO and SFT apart
MAX_KL = 10.0               # nats per response


def targets(metrics: dict) -> list[tuple[str, str, bool | None]]:
    """The run against the targets, from metrics.json alone (None where the run has no such number)."""
    rows = []
    rm = metrics.get("reward_model") or {}
    acc, agree = rm.get("val_accuracy"), rm.get("label_agreement")
    rows.append((f"reward model within {RM_GAP_POINTS} points of the labelers' agreement",
                 f"{_pct(acc, 1)} vs {_pct(agree, 1)}",
                 None if acc is None or agree is None else 100 * (agree - acc) <= RM_GAP_POINTS))
    ppo = metrics.get("ppo") or {}
    decodings = (("greedy", ppo), ("sampled", ppo.get("sampled") or {}))     # a block of metrics.json each
    for decoding, block in decodings:
        diff = block.get("gold_diff_vs_sft") or {}
        ci = diff.get("ci")
        rows.append((f"PPO beats SFT ({decoding}): paired gold difference, 95% CI above 0",
                     f"{_f(diff.get('mean'))} [{_f(ci[0])}, {_f(ci[1])}]" if ci else "n/a",
                     None if not ci else ci[0] > 0))
    for decoding, block in decodings:
        w = block.get("win_rate_vs_sft_nontied")
        rows.append((f"PPO wins ≥ {NONTIED_WIN_RATE:.0%} of non-tied pairs ({decoding})", _pct(w, 1),
                     None if w is None else w >= NONTIED_WIN_RATE))
    kl = ppo.get("kl")
    rows.append((f"at KL(PPO ‖ SFT) ≤ {MAX_KL:.0f} nats", f"{_f(kl, 2)} nats", None if kl is None else kl <= MAX_KL))
    head = metrics.get("headline") or {}
    for decoding, block in (("greedy", head), ("sampled", head.get("sampled") or {})):
        ci = (block.get("gold_diff") or {}).get("ci")
        ratio = head.get("size_ratio")
        rows.append((f"PPO beats the ≥ 2× larger SFT-only model ({decoding}), 95% CI above 0",
                     f"{_f(block['gold_diff']['mean'])} [{_f(ci[0])}, {_f(ci[1])}], {ratio:.1f}× larger"
                     if ci and ratio else "n/a (no SFT-only larger model: --headline)",
                     None if not ci or not ratio else ratio >= 2 and ci[0] > 0))
    return rows


def targets_met(metrics: dict) -> tuple[int, int]:
    """(targets met, targets measured) of the run: the "k of n" of the report and the pipeline's last lines."""
    met = [ok for _, _, ok in targets(metrics) if ok is not None]
    return sum(met), len(met)


def targets_table(metrics: dict) -> list[str]:
    mark = {True: "yes", False: "**no**", None: "n/a"}
    return (["| target | measured | met |", "|---|---|---|"] +
            [f"| {what} | {value} | {mark[met]} |" for what, value, met in targets(metrics)])


def write_report(run_dir: str, metrics: dict, results: dict, plots: dict[str, str],
                 rows_by_stage: dict[str, list[dict]], n_samples: int = 6) -> str:
    """Write run_dir/report.md; returns its path."""
    cmp_ = results.get("comparisons", {})
    secs = metrics.get("seconds", {})
    gpu = metrics.get("gpu", {})
    gpu_name = f" ({gpu['name']})" if gpu.get("name") else ""
    L = [f"# minigpt-rlhf run `{metrics.get('out', run_dir)}` (preset `{metrics.get('preset', '?')}`)", ""]
    L += [f"Pretrain → SFT → reward model → PPO on the synthetic instruction world, evaluated on "
          f"{results['prompts']['n']} held-out **{results['prompts'].get('split', 'test')}** prompts (seed {results['prompts']['seed']}, never trained "
          f"on) by the gold oracle. Total compute time of the stages: {_f(secs.get('total'), 0)} s "
          f"on {metrics.get('device', 'cpu')}{gpu_name}.", ""]
    if metrics.get("preset") == "tiny":
        L += ["> **A smoke run.** The `tiny` preset checks that every stage runs end to end in seconds; "
              "its models are too small and too briefly trained to learn anything, so the numbers below mean "
              "nothing. `--preset default` (5–15 minutes on 2 CPU cores) is the run whose numbers do.", ""]
    L += ["## Gold score per stage", ""] + stage_table(results) + [""]

    ppo = metrics.get("ppo", {})
    notes = []
    c = (cmp_.get("ppo_vs_sft") or {})
    for d in ("greedy", "sampled"):
        if d in c:
            g, rm = c[d]["gold"], c[d].get("rm")
            diff = c[d]["gold_diff"]
            line = (f"- PPO vs SFT, {d}: gold wins {g['wins']}, ties {g['ties']}, losses {g['losses']} "
                    f"(win rate over non-tied pairs {_pct(g['win_rate'])}); paired gold difference "
                    f"{_f(diff['mean'])} [{_f(diff['ci'][0])}, {_f(diff['ci'][1])}]")
            if rm:
                line += f"; the reward model judges PPO better in {_pct(rm['win_rate_half'])} (ties ½)"
            notes.append(line + ".")
    if ppo.get("kl") is not None:
        notes.append(f"- KL(PPO ‖ SFT) on sampled responses (exact per-token KL over the vocabulary, summed over "
                     f"each response, so never negative): {_f(ppo['kl'], 2)} nats per response "
                     f"[{_f((ppo.get('kl_ci') or [None])[0], 2)}, {_f((ppo.get('kl_ci') or [None, None])[1], 2)}].")
    rm = metrics.get("reward_model", {})
    if rm:
        notes.append(f"- Reward model: held-out pairwise accuracy {_pct(rm.get('val_accuracy'))} against the "
                     f"labelers' agreement {_pct(rm.get('label_agreement'))} (its ceiling).")
        pr = rm.get("probes") or {}
        if pr:
            notes.append(f"- Reward-model probes on {pr.get('prompts')} helpful val prompts (`python -m rlhf.rm_probes`; "
                         f"50% = chance): right answer over a near miss {_pct(pr.get('correct_vs_near_miss'))}, "
                         f"concise over chatty {_pct(pr.get('concise_vs_chatty'))}, concise right answer over "
                         f"a chatty wrong one {_pct(pr.get('correct_vs_chatty_wrong'))}.")
    bon = metrics.get("best_of_n", {})
    if bon.get("gold_score") is not None:
        notes.append(f"- Best-of-{bon.get('n', '?')} (SFT samples re-ranked by the reward model, KL at most "
                     f"{_f(bon.get('kl'), 2)} nats, the bound log N - (N-1)/N): gold {_f(bon['gold_score'])}, against {_f(bon.get('mean_gold_of_n'))} "
                     f"for a random one of the N and {_f(bon.get('oracle_gold'))} if the gold oracle picked; "
                     f"it needs no RL but costs N samples per answer.")
        at = bon.get("at_ppo_kl")
        if at and at.get("gold") is not None:
            notes.append(f"- PPO against best-of-N at the same KL ({_f(at['kl'], 2)} nats, N ≈ {at['n']:.1f}; "
                         f"best-of-k for k = 1..{bon.get('n', '?')} from the same SFT samples, interpolated in "
                         f"the KL upper bound log k - (k-1)/k): "
                         f"best-of-N gold {_f(at['gold'])}, PPO sampled {_f(at.get('ppo_gold_sampled'))}.")
        elif at:
            notes.append(f"- PPO's KL ({_f(at['kl'], 2)} nats) is beyond best-of-{bon.get('n', '?')}'s "
                         f"({_f(bon.get('kl'), 2)}): no best-of-N at the same KL here.")
    head = metrics.get("headline")
    if head:
        line = (f"- **InstructGPT's headline in miniature** (its 1.3B PPO model was preferred to the 175B SFT model): "
                f"our PPO model ({head.get('ppo_params') or 0:,} parameters) against an SFT-only model "
                f"{head.get('size_ratio') or 0:.1f}× larger ({head.get('sft_large_params') or 0:,}). Greedy: PPO wins "
                f"{_pct(head.get('win_rate'))} of the prompts (ties ½), gold {_f(head.get('ppo_gold'))} vs "
                f"{_f(head.get('sft_large_gold'))}, paired difference {_f(head['gold_diff']['mean'])} "
                f"[{_f(head['gold_diff']['ci'][0])}, {_f(head['gold_diff']['ci'][1])}]")
        hs = head.get("sampled")
        if hs:
            line += (f"; sampled: PPO wins {_pct(hs.get('win_rate'))}, gold {_f(hs.get('ppo_gold'))} vs "
                     f"{_f(hs.get('sft_large_gold'))}, difference {_f(hs['gold_diff']['mean'])} "
                     f"[{_f(hs['gold_diff']['ci'][0])}, {_f(hs['gold_diff']['ci'][1])}]")
        notes.append(line + ".")
    if notes:
        L += notes + [""]
    k, n = targets_met(metrics)
    L += [f"## Against the targets ({k} of {n} met)", "",
          "What \"alignment worked\" means here: the bar the `gpu` preset aims at, which the CPU presets are "
          "measured against too. Gold differences are paired over the same prompts.", ""] + targets_table(metrics) + [""]

    for field, title in (("per_family", "task family"), ("per_h", "H")):
        t = breakdown_table(results, field, title)
        if t:
            L += [f"## Gold score per {title} (greedy)", ""] + t + [""]

    if plots:
        L += ["## Plots", ""]
        captions = {"gold_by_stage": "Gold score per stage, per task family and per H",
                    "loss_curves": "Loss curves", "reward_model": "Reward model: accuracy and calibration",
                    "ppo_dashboard": "PPO dashboard",
                    "best_of_n_vs_ppo": "PPO against best-of-N per nat of KL (sampled, held-out prompts)"}
        for name, path in plots.items():
            rel = os.path.relpath(path, run_dir).replace(os.sep, "/")     # a Markdown link, also on Windows
            L += [f"**{captions.get(name, name)}**", "", f"![{name}]({rel})", ""]

    t = sample_table(rows_by_stage, n_samples)
    if t:
        L += ["## The same held-out prompts, answered by each stage (greedy; gold score in parentheses)", ""] + t + [""]

    if secs:
        cpu = secs.get("cpu", {})
        mem, prec = gpu.get("peak_memory_gb", {}), gpu.get("precision", {})
        L += ["## Time", "", "| stage | wall-clock seconds | CPU seconds |" + (" peak GPU GiB |" if mem else "") +
              (" precision |" if prec else ""), "|---|---|---|" + ("---|" if mem else "") + ("---|" if prec else "")]
        L += [f"| {k} | {_f(v, 1)} | {_f(cpu.get(k), 1) if k in cpu else ''} |" +
              (f" {_f(mem.get(k), 2) if k in mem else ''} |" if mem else "") +
              (f" {prec.get(k, '')} |" if prec else "") for k, v in secs.items()
              if k not in ("cpu", "this_run")] + [""]
    out = metrics.get("out", run_dir)
    L += [f"Regenerate: `python -m rlhf.pipeline --preset {metrics.get('preset', 'default')} --out {out}` (finished "
          f"stages are reused); talk to a model: `python -m rlhf.chat {out}/ppo`.", ""]
    path = os.path.join(run_dir, "report.md")
    atomic_write_text(path, "\n".join(L))
    return path


def main(argv=None) -> str:
    ap = CommandParser(prog="python -m rlhf.report", description="Write a finished pipeline run's "
                       "RUN_DIR/report.md again (and its plots) from metrics.json and eval/.")
    ap.add_argument("run_dir", metavar="RUN_DIR", help="a finished pipeline run directory")
    run_dir = ap.parse_args(argv).run_dir
    with one_line_errors():                         # a run file that does not load: one line naming it
        metrics = read_json_file(os.path.join(run_dir, "metrics.json"))
        results = read_json_file(os.path.join(run_dir, "eval", "results.json"))
        if metrics is None or results is None:
            raise SystemExit(f"error: {run_dir}: no metrics.json or eval/results.json (a finished run of "
                             f"`python -m rlhf.pipeline --out {run_dir}` has both)")
        if "stages" not in results:
            raise SystemExit(f"error: {os.path.join(run_dir, 'eval', 'results.json')}: no \"stages\" (not written "
                             f"by the pipeline's evaluation; `python -m rlhf.pipeline --out {run_dir}` writes it)")
        rows = {s: read_rows(os.path.join(run_dir, "eval", f"{s}.jsonl")) for s in STAGES
                if os.path.exists(os.path.join(run_dir, "eval", f"{s}.jsonl"))}
        path = write_report(run_dir, metrics, results, plot_all(run_dir, results["stages"], metrics), rows)
    print(path)
    return path


if __name__ == "__main__":
    utf8_console()
    main()
