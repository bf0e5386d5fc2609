"""The course's machinery: register, markers, graded tests, snapshots, bug catalogue, student copy.

    python -m pytest tests/test_course.py -q
    python -m pytest tests/test_course.py -m slow     # also: a whole student copy grades 0 of N
"""

import ast
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.course import BY_ID, EXERCISES, not_implemented_message
from tools import make_exercises

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLUTION = make_exercises.BEGIN in open(os.path.join(ROOT, "rlhf", "losses.py"), encoding="utf-8").read()
only_in_the_solution = pytest.mark.skipif(not SOLUTION, reason="this is a student copy: its solutions are blanked")


def graded_exercises() -> dict[str, int]:
    """{exercise id: number of graded tests} from the @pytest.mark.exercise markers of tests/test_a*.py."""
    counts: dict[str, int] = {}
    for name in sorted(os.listdir(os.path.join(ROOT, "tests"))):
        if not (name.startswith("test_a") and name.endswith(".py")):
            continue
        tree = ast.parse(open(os.path.join(ROOT, "tests", name), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for d in node.decorator_list:
                    if (isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "exercise" and d.args
                            and isinstance(d.args[0], ast.Constant)):
                        counts[d.args[0].value] = counts.get(d.args[0].value, 0) + 1
    return counts


def test_blank_solutions_replaces_a_block_by_a_pointed_raise():
    src = "def f(x):\n    '''doc'''\n    # BEGIN SOLUTION a4.gae\n    y = x + 1\n    return y\n    # END SOLUTION\n"
    text, ids = make_exercises.blank_solutions(src)
    assert ids == ["a4.gae"]
    assert text == f"def f(x):\n    '''doc'''\n    raise NotImplementedError(\"{not_implemented_message('a4.gae')}\")\n"
    kept, _ = make_exercises.blank_solutions(src, blank=lambda i: False)
    assert kept == src, "an exercise that is not blanked keeps its code and markers"
    for bad, line in [("x = 1\n    # BEGIN SOLUTION a4.gae\n", ":2:"), ("# BEGIN SOLUTION\n", ":1:"),
                      ("# BEGIN SOLUTION a9.nope\n# END SOLUTION\n", ":1:"), ("# END SOLUTION\n", ":1:")]:
        with pytest.raises(ValueError, match=line):
            make_exercises.blank_solutions(bad)


def test_the_register_has_five_assignments_with_their_handouts():
    assert len(EXERCISES) == len(BY_ID) >= 37
    assert {e.assignment for e in EXERCISES} == {"a1", "a2", "a3", "a4", "a5"}
    for e in EXERCISES:
        assert os.path.exists(os.path.join(ROOT, e.handout)), f"{e.id}: handout {e.handout} is missing"
        handout = open(os.path.join(ROOT, e.handout), encoding="utf-8").read()
        assert f"## §{e.section} " in handout, f"{e.id}: {e.handout} has no section §{e.section}"
        assert f"`{e.id}`" in handout, f"{e.id} is not named in {e.handout}"


def test_every_exercise_has_graded_tests_and_every_graded_test_a_registered_exercise():
    counts = graded_exercises()
    assert set(counts) <= set(BY_ID), f"graded tests of unregistered exercises: {sorted(set(counts) - set(BY_ID))}"
    missing = sorted(set(BY_ID) - set(counts))
    assert not missing, f"exercises without a graded test: {missing}"


@only_in_the_solution
def test_the_bug_catalogue_covers_every_exercise():
    """tools/bug_catalogue.py (solution repository only: it quotes the reference, so the student copy
    leaves it out) has at least 40 bugs and one for every exercise."""
    from tools.bug_catalogue import BUGS
    assert len(BUGS) >= 40
    assert {b.exercise for b in BUGS} == set(BY_ID), "every exercise needs at least one catalogued bug"


@only_in_the_solution
def test_markers_and_register_agree_and_the_blanked_code_compiles(tmp_path):
    from tools.bug_catalogue import BUGS
    found = make_exercises.make_student_copy(None)
    assert {i for ids in found.values() for i in ids} == set(BY_ID)
    for rel in found:
        text, _ = make_exercises.blank_solutions(open(os.path.join(ROOT, rel), encoding="utf-8").read(), rel)
        compile(text, rel, "exec")
    for b in BUGS:
        assert open(os.path.join(ROOT, b.file), encoding="utf-8").read().count(b.old) == 1, \
            f"stale bug {b.exercise} / {b.name}: its text is not (exactly once) in {b.file}"


@only_in_the_solution
def test_stored_snapshots_match_the_reference():
    from tests.grading import snapshot
    from tests.snapshot_cases import CASES, build
    from tools.make_snapshots import _same
    torch.set_num_threads(1)
    for group in CASES:
        stored, fresh = snapshot(group), build(group)
        stale = [name for name in fresh if name not in stored or not _same(fresh[name], stored[name])]
        assert not stale, f"run python tools/make_snapshots.py: stale cases {stale}"


def test_a_test_that_needs_an_unwritten_exercise_is_reported_blocked(tmp_path):
    """conftest.py: a NotImplementedError from another exercise's blank becomes a skip naming it."""
    test = tmp_path / "test_blocked.py"
    test.write_text(
        "import pytest\n"
        f"MSG = {not_implemented_message('a2.masked_mean')!r}\n"
        "def test_uses_it():\n    raise NotImplementedError(MSG)\n"
        "@pytest.mark.exercise('a2.masked_mean')\ndef test_grades_it():\n    raise NotImplementedError(MSG)\n",
        encoding="utf-8")
    with open(os.path.join(ROOT, "tests", "conftest.py"), encoding="utf-8") as f:
        (tmp_path / "conftest.py").write_text(f.read(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONIOENCODING": "utf-8"}   # pytest's report of "§6", any locale
    r = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "-o", "addopts=", str(test)],
                       cwd=tmp_path, env=env, capture_output=True, encoding="utf-8", timeout=120)
    assert "1 failed, 1 skipped" in r.stdout, r.stdout[-2000:]
    assert "blocked by exercise a2.masked_mean: write it first (exercises/a2_sft.md §6)" in r.stdout, r.stdout[-2000:]


@pytest.mark.slow
def test_a_fresh_student_copy_collects_and_grades_zero(tmp_path):
    out = tmp_path / "course"
    subprocess.run([sys.executable, "tools/make_exercises.py", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    assert (out / "exercises" / "a1_gpt.md").exists() and (out / "README.md").exists() and (out / "notebooks").exists()
    assert not (out / "notebooks" / "rendered").exists(), "the executed notebooks show the solutions"
    assert not (out / "tools" / "bug_catalogue.py").exists(), "the bug catalogue quotes the solutions"
    for nb in (out / "notebooks").glob("0*.ipynb"):
        text = nb.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError" in text, f"{nb.name}: not blanked"
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"], cwd=out, capture_output=True,
                       encoding="utf-8", timeout=600)
    assert r.returncode == 0 and "error" not in r.stdout.lower().split("collected")[-1], r.stdout[-2000:]
    r = subprocess.run([sys.executable, "tools/grade.py", "--json", "results.json"], cwd=out, capture_output=True,
                       encoding="utf-8", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["score"] == 0 and len(results["tests"]) == len(BY_ID)
    assert all("not written yet" in t["output"] for t in results["tests"]), [t["output"][:80] for t in results["tests"]]


@only_in_the_solution
def test_check_grades_a_notebook_function_and_installs_it_where_stages_see_it(capsys):
    """tools.grade.check (the notebooks' `check`): a right function passes and replaces the project's in every
    module that imported it (rlhf.ppo's `gae` too, so a stage run next uses it); a wrong one fails with the
    graded test's message, an unwritten one says so, and neither is left installed."""
    from rlhf import losses, ppo
    from tools.grade import check, restore_functions
    original = losses.gae

    def raising(*args, **kwargs):
        raise NotImplementedError(not_implemented_message("a4.gae"))

    def off_by_one(rewards, values, mask, gamma, lam):
        adv, ret = original(rewards, values, mask, gamma, lam)
        return adv + 1, ret

    def mine(rewards, values, mask, gamma, lam):
        return original(rewards, values, mask, gamma, lam)

    check("a4.gae", raising)
    assert "not written yet" in capsys.readouterr().out
    check("a4.gae", off_by_one)
    out = capsys.readouterr().out
    assert out.startswith("\u2717 a4.gae") and "test_" in out, out
    assert losses.gae is original and ppo.gae is original, "a failing function must not stay installed"
    try:
        check("a4.gae", mine)
        assert capsys.readouterr().out.startswith("\u2713 a4.gae")
        assert losses.gae is mine and ppo.gae is mine, "a passing function must replace every reference to the original"
    finally:
        restore_functions([(losses, "gae", original), (ppo, "gae", original)])


def test_the_device_check_flags_cpu_tensors_and_leaves_data_dependent_code_alone():
    """tests.grading.expect_on_inputs_device: a tensor made on the CPU, or a result left there, fails with a
    message that says what to do; device-correct code passes; code that needs the data (.item(), a boolean
    index), which "meta" cannot run, is not judged (a correct answer may need it); a blank stays blocked."""
    from tests.grading import expect_on_inputs_device, on_meta
    x = on_meta(torch.zeros(3, 4))
    def filled_on_the_cpu():
        buffer = torch.zeros(3, 4)          # a CPU buffer filled column by column: on a GPU, CPU + GPU later
        buffer[:, 0] = x[:, 0]
        return buffer

    for wrong in (lambda: x + torch.zeros(3, 4), lambda: torch.zeros(3), filled_on_the_cpu):
        with pytest.raises(AssertionError, match="device"):
            expect_on_inputs_device(wrong, "the loss", "a3.ranked_loss")
    for fine in (lambda: x + torch.zeros_like(x), lambda: torch.tensor([x.sum().item()]), lambda: x[x > 0]):
        expect_on_inputs_device(fine, "the loss", "a3.ranked_loss")

    def blank():
        raise NotImplementedError("exercise a3.ranked_loss — see exercises/a3_reward.md §3")

    with pytest.raises(NotImplementedError):   # an unwritten exercise stays "blocked", never passes
        expect_on_inputs_device(blank, "the loss", "a3.ranked_loss")
