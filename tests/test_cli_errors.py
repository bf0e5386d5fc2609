"""A newcomer's mistakes get a one-line error: exit status != 0, one line on stderr, no traceback, and
nothing already in the output directory is changed.

    python -m pytest tests/test_cli_errors.py -q
"""

import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=120, **env_vars):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", **env_vars}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, encoding="utf-8",
                          timeout=timeout)


def assert_one_line_error(r, *fragments):
    err = r.stderr.strip()
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    for f in fragments:
        assert f in err, (f, err)


def snapshot(path):
    """{file: (size, mtime)} of everything under path."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def text_file(tmp_path):
    """A small UTF-8 text file, enough for the tiny preset's windows."""
    data = tmp_path / "text.txt"
    data.write_text("\n".join(f"the {i} cat sat on the {i % 7} mat." for i in range(600)), encoding="utf-8")
    return data


def test_pretraining_text_that_is_not_utf8(tmp_path):
    data = tmp_path / "latin1.txt"
    data.write_bytes("café au lait\nsecond line\n".encode("latin-1"))
    r = run_cli("minigpt.train", "--preset=tiny", f"--data={data}", f"--out_dir={tmp_path / 'out'}")
    assert_one_line_error(r, f"{data}:1", "not UTF-8", "0xe9")
    assert not (tmp_path / "out").exists()


def test_pretraining_text_too_short_for_one_window(tmp_path):
    data = tmp_path / "one_line.txt"
    data.write_text("just one short line\n", encoding="utf-8")
    r = run_cli("minigpt.train", "--preset=tiny", f"--data={data}", f"--out_dir={tmp_path / 'out'}",
                "--progress=false")
    assert_one_line_error(r, str(data), "too few for a train and a val window")
    assert not (tmp_path / "out").exists()


def test_resuming_a_finished_pretraining_run_keeps_its_summary(tmp_path):
    """--resume on a finished run: nothing to do, and summary.json is not rewritten with empty numbers."""
    data = text_file(tmp_path)
    out = tmp_path / "pre"
    common = ["minigpt.train", "--preset=tiny", f"--data={data}", f"--out_dir={out}", "--progress=false",
              "--max_iters=6", "--eval_interval=3"]
    assert run_cli(*common).returncode == 0
    before = snapshot(out)
    r = run_cli(*common, "--resume=True")
    assert r.returncode == 0, r.stderr
    assert "nothing to resume" in r.stdout and "Traceback" not in r.stderr
    assert snapshot(out) == before


def test_chat_with_a_missing_directory(tmp_path):
    r = run_cli("rlhf.chat", str(tmp_path / "nope"), "--prompt", "hi")
    assert_one_line_error(r, "no model.pt")


@pytest.mark.parametrize("module", ["rlhf.ppo", "rlhf.grpo"])
def test_rl_stage_without_its_sft_run(tmp_path, module):
    out = tmp_path / "out"
    r = run_cli(module, "--preset=tiny", f"--sft_dir={tmp_path / 'no_sft'}", f"--rm_dir={tmp_path / 'no_rm'}",
                f"--out_dir={out}", "--progress=false")
    assert_one_line_error(r, "no model.pt", "rlhf.sft")
    assert not out.exists()                                       # a failed stage leaves no directory behind


def test_best_of_n_without_its_runs(tmp_path):
    r = run_cli("rlhf.best_of_n", "--preset=tiny", f"--sft_dir={tmp_path / 'no_sft'}",
                f"--rm_dir={tmp_path / 'no_rm'}", f"--out_dir={tmp_path / 'out'}")
    assert_one_line_error(r, "no model.pt")


def test_ppo_with_a_malformed_prompts_file(tmp_path, tok):
    """Bad data names its file and line (rlhf.formats.DataError), as one line."""
    from minigpt import checkpoint as ckpt_io
    from tests.tiny_rl import tiny_gpt, tiny_rm
    sft, rm = tmp_path / "sft", tmp_path / "rm"
    ckpt_io.save_model(str(sft), tiny_gpt(tok.vocab_size), tok)
    tiny_rm(tok.vocab_size).save(str(rm), tok)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 2 + 3?"}\n{"prompt": \n', encoding="utf-8")
    r = run_cli("rlhf.ppo", "--preset=tiny", f"--sft_dir={sft}", f"--rm_dir={rm}", f"--prompts={prompts}",
                f"--out_dir={tmp_path / 'out'}", "--progress=false")
    assert_one_line_error(r, f"{prompts}:2")


def test_resume_without_a_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    """A mistyped --out_dir with --resume used to start from step 0 silently (and create the directory)."""
    data = text_file(tmp_path)
    out = tmp_path / "typo"
    r = run_cli("minigpt.train", "--preset=tiny", f"--data={data}", f"--out_dir={out}", "--resume=True",
                "--progress=false")
    assert_one_line_error(r, "has no ckpt.pt to continue from", "drop --resume")


def test_resume_with_another_model_shape_names_the_setting(tmp_path):
    data = text_file(tmp_path)
    out = tmp_path / "pre"
    common = ["minigpt.train", "--preset=tiny", f"--data={data}", f"--out_dir={out}", "--progress=false",
              "--max_iters=4", "--eval_interval=2"]
    assert run_cli(*common).returncode == 0
    (out / "summary.json").unlink()                                   # as if interrupted after its checkpoint
    before = snapshot(out)
    r = run_cli(*common, "--max_iters=8", "--n_embd=48", "--resume=True")
    assert_one_line_error(r, "ckpt.pt was trained with", "n_embd=32 (now 48)", "drop --resume")
    assert snapshot(out) == before


@pytest.mark.parametrize("module", ["rlhf.reward_model", "rlhf.dpo"])
def test_comparison_stages_without_their_sft_run_leave_nothing_behind(tmp_path, module):
    out = tmp_path / "out"
    r = run_cli(module, "--preset=tiny", f"--sft_dir={tmp_path / 'no_sft'}", f"--out_dir={out}", "--progress=false")
    assert_one_line_error(r, "no model.pt")
    assert not out.exists()


def test_a_machine_where_torch_compile_fails_gets_one_line_with_the_way_round_it(tmp_path):
    """--compile=True where torch.compile cannot work (here: no C++ compiler for Inductor's CPU kernels, as on
    a laptop without build tools; a GPU too old for Triton fails the same way): one line saying so and how
    to train anyway, not Inductor's traceback."""
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"{w} {i}" for i, w in enumerate(["cat", "tac", "sort", "quon", "dasha"] * 400)),
                    encoding="utf-8")
    r = run_cli("minigpt.train", "--preset=tiny", "--device=cpu", "--compile=True", f"--data={text}", "--max_iters=2",
                f"--out_dir={tmp_path / 'run'}", "--progress=false", CXX=str(tmp_path / "no-such-compiler"))
    err = r.stderr.strip()       # (a CUDA build of torch on a machine without CUDA prints a line of its own)
    assert r.returncode == 1 and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("error: torch.compile failed on this machine (") and \
        "no-such-compiler" in err and err.endswith("run again without --compile=True (the same training, only "
                                                   "slower)"), err


def test_help_texts_read_cleanly():
    """--help says each thing once, under the name you type, without development notes."""
    r = run_cli("rlhf.world", "--help")
    first = r.stdout.splitlines()[2] if len(r.stdout.splitlines()) > 2 else ""
    assert r.returncode == 0 and first and r.stdout.count(first) == 1, r.stdout[:500]
    for module in ("bench.model", "bench.memory"):
        r = run_cli(module, "--help")
        assert r.returncode == 0 and f"usage: python -m {module}" in r.stdout and "issue" not in r.stdout
    for module in ("rlhf.ppo", "rlhf.grpo"):  # "# ---- 4. update" section markers are not field comments
        r = run_cli(module, "--preset=tiny", "--help")
        assert r.returncode == 0 and "----" not in r.stdout, r.stdout


def test_world_export_accepts_both_option_spellings(tmp_path):
    """Every CLI takes --key=value with underscores (the configurator also takes dashes and `--key value`);
    rlhf.world's argparse options accept both spellings too."""
    for flag in ("--n_demos=3", "--n-demos=3"):
        out = tmp_path / flag.strip("-").split("=")[0]
        r = run_cli("rlhf.world", "export", f"--out={out}", flag, "--n_train=4", "--n-val=4", "--n_test=4",
                    "--n_rankings=2", "--corpus_chars=2000")
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("option, fragment", [("--device=gpu", "use auto, cpu, cuda, cuda:N or mps"),
                                              ("--device=xpu", "not a device this project runs on"),
                                              ("--dtype=float16", "choose one of auto, float32, bfloat16"),
                                              ("--eval_split=train", "must be one of test, val"),
                                              ("--reward_model.loss_reduction=pairs", "must be one of prompt, pair")])
def test_a_bad_choice_stops_the_pipeline_before_any_work(tmp_path, option, fragment):
    r = run_cli("rlhf.pipeline", "--preset=tiny", option, f"--out={tmp_path / 'run'}")
    assert_one_line_error(r, option.split("=")[0], fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_asking_for_a_gpu_this_torch_cannot_see(tmp_path):
    """A CPU-only torch (what `pip install torch==…+cpu` gives) and --device=cuda: say so, and where the CUDA
    install line is, instead of torch's "Torch not compiled with CUDA enabled" traceback mid-stage."""
    r = run_cli("minigpt.train", "--preset=tiny", "--device=cuda", f"--data={text_file(tmp_path)}",
                f"--out_dir={tmp_path / 'out'}")
    assert_one_line_error(r, "--device=cuda", "sees no CUDA GPU", "On a GPU")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", ["rlhf.chat", "bench.ppo", "bench.model", "bench.memory"])
def test_chat_and_the_benchmarks_check_the_device_too(tmp_path, module):
    """Entry points outside the pipeline's stages pick their device the same way (one line, not a traceback)."""
    run_dir = tmp_path / "run"                  # no model in it: the device is checked first
    args = {"rlhf.chat": [str(run_dir), "--prompt=hi"], "bench.ppo": [f"--run={run_dir}"]}.get(module, [])
    r = run_cli(module, *args, "--device=gpu")
    assert_one_line_error(r, "--device=gpu", "use auto, cpu, cuda, cuda:N or mps")


def _a_run_with_damaged_files(root):
    """A run directory whose files do not load: metrics.json cut short, a model.pt that is a Git LFS pointer."""
    (root / "sft").mkdir(parents=True)
    (root / "metrics.json").write_text('{"preset": "tiny", "ppo": {"gold', encoding="utf-8")
    (root / "sft" / "model.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n",
                                           encoding="utf-8")
    return root


@pytest.mark.parametrize("module, args, fragments", [
    ("rlhf.report", [], ["metrics.json:1: not valid JSON", "run that stage again"]),
    ("rlhf.plots", [], ["metrics.json:1: not valid JSON"]),
    ("rlhf.chat", ["--prompt=hi"], ["model.pt: not a readable checkpoint", "Git LFS pointer"]),
])
def test_a_run_file_that_does_not_load_is_one_line_naming_it(tmp_path, module, args, fragments):
    """Hand-edited JSON, a checkpoint cut short or fetched as a Git LFS pointer: one line naming the file and
    what to do, not json's or torch's traceback."""
    run = _a_run_with_damaged_files(tmp_path / "run")
    r = run_cli(module, str(run / "sft") if module == "rlhf.chat" else str(run), *args)
    assert_one_line_error(r, *fragments)


def test_report_and_plots_of_a_directory_that_is_not_a_run(tmp_path):
    assert_one_line_error(run_cli("rlhf.report", str(tmp_path)), "no metrics.json or eval/results.json")
    assert_one_line_error(run_cli("rlhf.plots", str(tmp_path / "nowhere")), "no such run directory")
    assert_one_line_error(run_cli("rlhf.plots", str(tmp_path)), "nothing to plot")     # printed nothing, status 0
    (tmp_path / "metrics.json").write_text("{}", encoding="utf-8")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text("{}", encoding="utf-8")
    assert_one_line_error(run_cli("rlhf.report", str(tmp_path)), "results.json: no \"stages\"")   # KeyError
    for module in ("rlhf.report", "rlhf.plots"):                                   # --help: status 0, not 1
        r = run_cli(module, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: python -m {module} [-h] RUN_DIR"), r.stdout + r.stderr


def test_labelling_from_a_checkpoint_that_does_not_load(tmp_path):
    run = _a_run_with_damaged_files(tmp_path / "run")
    r = run_cli("rlhf.label", "rank", f"--out={tmp_path / 'ranks.jsonl'}", f"--model={run / 'sft'}", "--n=2",
                "--simulate")
    assert_one_line_error(r, "model.pt: not a readable checkpoint")
    assert not (tmp_path / "ranks.jsonl").exists()


def test_more_bad_values_found_by_probing_are_one_line(tmp_path):
    """Values a newcomer types that the bounds cannot see: a head count that does not divide the width, an
    empty --out, a missing tokenizer input, a negative top-k in chat; and pretraining of 0 steps, which
    finishes with its untrained model."""
    r = run_cli("minigpt.tokenizer", f"--input={tmp_path / 'missing.txt'}")
    assert_one_line_error(r, "--input=", "missing.txt: no such file")
    r = run_cli("rlhf.pipeline", "--preset=tiny", "--out=", "--progress=false")
    assert_one_line_error(r, "--out is empty")
    r = run_cli("rlhf.pipeline", "--preset=tiny", f"--out={tmp_path / 'run'}", "--progress=false",
                "--pretrain.n_head=3", "--stop_after=pretrain")
    assert_one_line_error(r, "n_embd=32 must be divisible by n_head=3")
    r = run_cli("rlhf.pipeline", "--preset=tiny", f"--out={tmp_path / 'zero'}", "--progress=false",
                "--pretrain.max_iters=0", "--stop_after=pretrain")
    assert r.returncode == 0 and "\npretrain: val loss " in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    r = run_cli("rlhf.chat", str(tmp_path / "zero" / "pretrain"), "--prompt=hi", "--top_k=-1")
    assert_one_line_error(r, "argument --top_k: -1: must be >= 0")
    r = run_cli("rlhf.chat", str(tmp_path / "zero" / "pretrain"), "--prompt=hi", "--temperature=nan")
    assert_one_line_error(r, "argument --temperature: nan: must be >= 0")          # a sampling traceback


def test_an_output_directory_that_cannot_be_made_is_one_line_naming_the_flag(tmp_path, tok):
    """A file where the run directory should go, or a place nobody may write: one line naming the flag, not
    os.makedirs' traceback (found by probing --out=/proc/x)."""
    from minigpt import checkpoint as ckpt_io
    from tests.tiny_rl import tiny_gpt
    ckpt_io.save_model(str(tmp_path / "pretrain"), tiny_gpt(tok.vocab_size), tok)
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("not a directory\n", encoding="utf-8")
    r = run_cli("rlhf.pipeline", "--preset=tiny", f"--out={in_the_way / 'run'}", "--progress=false")
    assert_one_line_error(r, f"--out={in_the_way / 'run'}: cannot create this directory (a file is in the way)")
    r = run_cli("rlhf.sft", "--preset=tiny", f"--out_dir={in_the_way}", f"--init_from={tmp_path / 'pretrain'}",
                "--progress=false")
    assert_one_line_error(r, f"--out_dir={in_the_way}: cannot create this directory (a file is in the way)")
    r = run_cli("rlhf.world", "export", f"--out={in_the_way / 'data'}")
    assert_one_line_error(r, f"--out={in_the_way / 'data'}: cannot create this directory")
    assert in_the_way.read_text(encoding="utf-8") == "not a directory\n"


def test_an_experiment_never_writes_over_the_run_it_reads(tmp_path):
    """--out equal to --run wrote the experiment's metrics.json and report.md over the pipeline run's own
    (found by probing), and --out=RUN/sft would write config.json over the SFT stage's: anywhere in the run
    but RUN/experiments/ is refused, trailing slash or not; the default stays RUN/experiments/NAME."""
    from rlhf.experiments.common import output_dir
    run = str(tmp_path / "run")
    for out in (run, run + "/", str(tmp_path / "." / "run"), os.path.join(run, "sft")):
        with pytest.raises(SystemExit, match=r"is inside the --run directory: the experiment would write over"):
            output_dir(run, out, "seeds")
    assert output_dir(run, "", "seeds") == os.path.join(run, "experiments", "seeds")
    for fine in (str(tmp_path / "elsewhere"), str(tmp_path / "run_b"), os.path.join(run, "experiments", "mine")):
        assert output_dir(run, fine, "seeds") == fine


def test_bad_paths_and_values_of_the_other_entry_points_are_one_line(tmp_path):
    """Found by probing the entry points beside the stages: each was a traceback (or, for world sample, silence)."""
    r = run_cli("minigpt.train", "--preset=tiny", f"--data={tmp_path}", f"--out_dir={tmp_path / 'out'}")
    assert_one_line_error(r, f"--data={tmp_path}: a directory; name one text file")     # IsADirectoryError
    r = subprocess.run([sys.executable, "tools/grade.py", "--exercise", "a1.merge_pair", f"--json={tmp_path}"],
                       cwd=ROOT, capture_output=True, encoding="utf-8", timeout=120)
    assert_one_line_error(r, f"--json={tmp_path}: a directory; name a file")           # after grading, before
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}", encoding="utf-8")
    r = subprocess.run([sys.executable, "tools/e2e.py", f"--run={tmp_path / 'run'}"], cwd=ROOT,
                       capture_output=True, encoding="utf-8", timeout=120)
    assert_one_line_error(r, "dpo/summary.json not found: not a run of this check")   # FileNotFoundError
    r = run_cli("rlhf.world", "sample", "--n", "0")
    assert_one_line_error(r, "argument --n: 0: must be >= 1 (python -m rlhf.world sample --help lists")
    r = run_cli("rlhf.evaluate", str(tmp_path / "run"), "--n_prompts=0")
    assert_one_line_error(r, "--n_prompts=0: must be >= 1")                              # ran, on -1 prompts


def test_the_reward_model_checks_its_inputs_before_writing_comparisons(tmp_path, tok):
    """Found by probing: --init_rm naming an SFT run simulated comparisons over a finished RM run's data/ before
    it stopped; --resume without a checkpoint (or with another stage's) wrote data/ first; a --val_data of
    another format was an AttributeError, and without --data it was silently ignored. Now each is one line,
    and the directory is unchanged."""
    from minigpt import checkpoint as ckpt_io
    from rlhf import reward_model
    from tests.tiny_rl import tiny_gpt
    sft = tmp_path / "sft"
    ckpt_io.save_model(str(sft), tiny_gpt(tok.vocab_size), tok)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"messages": [{"role": "user", "content": "Hi?"}]}\n', encoding="utf-8")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}\n' * 4, encoding="utf-8")
    out = tmp_path / "rm"
    out.mkdir()
    (out / "kept.txt").write_text("a finished run's file\n", encoding="utf-8")
    base = ["--preset", "tiny", f"--sft_dir={sft}", f"--out_dir={out}", "--progress=false"]
    for argv, message in (([f"--init_rm={sft}"], "holds a GPT language model checkpoint, not a reward model"),
                          (["--resume=true"], f"--resume: {out} has no ckpt.pt to continue from"),
                          ([f"--data={pairs}", f"--val_data={prompts}"],
                           f"--val_data={prompts} is a 'messages' file; the reward model needs comparisons"),
                          ([f"--val_data={pairs}"], "--val_data holds out comparisons of your own --data")):
        with pytest.raises(SystemExit) as e:
            reward_model.main([*base, *argv])
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
        assert sorted(os.listdir(out)) == ["kept.txt"], (argv, os.listdir(out))


def test_wrong_kinds_of_input_found_by_the_second_probe_are_one_line(tmp_path, tok):
    """A tokenizer.bpe from another run beside a model (an IndexError at the first token, or gibberish), a
    binary or empty file given to the tokenizer trainer (it trained on the raw bytes), a directory as its
    --out (a traceback after training), an experiment's --run naming one stage's directory (whose advice
    was to run the pipeline into it)."""
    from minigpt import checkpoint as ckpt_io
    from minigpt.tokenizer import train_bpe
    from rlhf.experiments.common import run_paths
    from tests.tiny_rl import tiny_gpt
    run = tmp_path / "sft"
    ckpt_io.save_model(str(run), tiny_gpt(tok.vocab_size), tok)
    other = " ".join(f"another run's word{i} and thing{i * 7 % 97}" for i in range(500))
    train_bpe(other, tok.vocab_size + 20).save(str(run / "tokenizer.bpe"))
    with pytest.raises(ckpt_io.CheckpointError, match=r"has \d+ tokens but .*model.pt was trained on \d+: they come"):
        ckpt_io.load_model(run)
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    assert_one_line_error(run_cli("minigpt.tokenizer", f"--input={binary}"), "not UTF-8 (byte 0x80 at offset 128)")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert_one_line_error(run_cli("minigpt.tokenizer", f"--input={empty}"), "the file is empty")
    text = text_file(tmp_path)
    assert_one_line_error(run_cli("minigpt.tokenizer", f"--input={text}", f"--out={tmp_path}"), "a directory")
    with pytest.raises(SystemExit, match=r"is one stage's directory; --run wants the pipeline run"):
        run_paths(str(run), ("sft",))
