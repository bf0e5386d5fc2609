"""Text is UTF-8 everywhere, whatever the locale: files, the tests' pipes and what entry points print.

Python before 3.15 reads and writes text in the locale's encoding unless told otherwise: cp1252 on a
Windows laptop, where a JSONL line with "ü" written as UTF-8 reads back as mojibake, and printing β, σ, →
or a model's U+FFFD to a pipe or a file raises UnicodeEncodeError (`--help > help.txt`, a log, every test
that runs a command). So each open() in text mode, read_text(), write_text() and subprocess call names
its encoding, and every entry point's `__main__` block calls minigpt.configurator.utf8_console(). The
first checks read the source (ast); the last runs commands under an ASCII locale, as a stand-in for
cp1252 that a Linux machine can set up.

    python -m pytest tests/test_text_encoding.py -q
"""

import ast
import codecs
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("minigpt", "rlhf", "tools", "bench", "tests", "notebooks")
ENTRY_FOLDERS = ("minigpt", "rlhf", "tools", "bench")


def _sources(folders) -> list[str]:
    return sorted(os.path.join(d, n) for folder in folders for d, _, files in os.walk(os.path.join(ROOT, folder))
                  for n in files if n.endswith(".py"))


def _parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def _mode(call: ast.Call):
    """open()'s mode when it is written as a literal ("r" when absent), else None."""
    mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None:
        return "r"
    return mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else None


def text_opens_without_encoding(path: str) -> list[int]:
    """Line numbers of open(...) in text mode, Path.read_text(), Path.write_text() and subprocess calls
    with text=True (or universal_newlines=True), none of them with encoding=."""
    lines = []
    for node in ast.walk(_parse(path)):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        is_os_open = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "os"
        if name == "open" and not is_os_open and "b" not in (_mode(node) or "b"):
            lines.append(node.lineno)
        elif name in ("read_text", "write_text") and isinstance(func, ast.Attribute):   # pathlib's methods
            lines.append(node.lineno)
        elif any(k.arg in ("text", "universal_newlines") and isinstance(k.value, ast.Constant) and k.value.value is True
                 for k in node.keywords):
            lines.append(node.lineno)
    return sorted(lines)


def main_blocks_without_utf8_console(path: str) -> list[int]:
    """Line numbers of `if __name__ == "__main__":` blocks whose first statement is not utf8_console()."""
    lines = []
    for node in _parse(path).body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
            first = node.body[0]
            call = first.value if isinstance(first, ast.Expr) else None
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "utf8_console"):
                lines.append(node.lineno)
    return lines


def test_every_text_file_and_pipe_is_utf8():
    missing = [f"{os.path.relpath(p, ROOT)}:{n}" for p in _sources(FOLDERS) for n in text_opens_without_encoding(p)]
    assert not missing, ("text opened without encoding=\"utf-8\" (on Windows it would be read and written in "
                         "the locale's code page):\n  " + "\n  ".join(missing))


def test_every_entry_point_prints_utf8():
    missing = [f"{os.path.relpath(p, ROOT)}:{n}" for p in _sources(ENTRY_FOLDERS)
               for n in main_blocks_without_utf8_console(p)]
    assert not missing, ("`if __name__ == \"__main__\":` blocks that do not start with utf8_console() (their "
                         "output to a pipe or file would be in the locale's code page):\n  " + "\n  ".join(missing))


def test_the_checks_see_each_kind_of_call(tmp_path):
    src = tmp_path / "example.py"
    src.write_text('open(p)\nopen(p, "w")\nopen(p, "rb")\nopen(p, encoding="utf-8")\nos.open(p, 0)\n'
                   'q.read_text()\nq.write_text(s)\nq.read_text(encoding="utf-8")\nopen(p, mode)\n'
                   'run(a, text=True)\nrun(a, encoding="utf-8")\nf(text="a")\nwrite_text(p, s)\n', encoding="utf-8")
    assert text_opens_without_encoding(str(src)) == [1, 2, 6, 7, 10]
    src.write_text('if __name__ == "__main__":\n    main()\n', encoding="utf-8")
    assert main_blocks_without_utf8_console(str(src)) == [1]
    src.write_text('if __name__ == "__main__":\n    utf8_console()\n    main()\n', encoding="utf-8")
    assert main_blocks_without_utf8_console(str(src)) == []


ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}


@pytest.mark.parametrize("args, expected", [
    (["rlhf.reward_model", "--help"], "σ"),                                # a help text with Greek letters
    (["rlhf.world", "sample", "--n", "2", "--family", "sort"], "·"),        # printed examples
])
def test_commands_print_utf8_under_an_ascii_locale(args, expected):
    """Under LC_ALL=C with Python's locale coercion and UTF-8 mode off, the locale's encoding is ASCII: the
    command must still exit 0 and write UTF-8 (it used to die with a UnicodeEncodeError)."""
    env = {**os.environ, "PYTHONPATH": ROOT, **ASCII_LOCALE}
    code = "import locale; print(locale.getpreferredencoding())"
    probe = subprocess.run([sys.executable, "-X", "utf8=0", "-c", code], env=env, capture_output=True,
                           encoding="utf-8", timeout=60)
    if codecs.lookup(probe.stdout.strip() or "ascii").name == "utf-8":
        pytest.skip("this system's C locale is UTF-8 (musl, macOS): nothing to check")
    r = subprocess.run([sys.executable, "-X", "utf8=0", "-m", *args], cwd=ROOT, env=env, capture_output=True,
                       encoding="utf-8", timeout=120)
    assert r.returncode == 0, f"python -m {' '.join(args)} under an ASCII locale:\n{r.stderr[-2000:]}"
    assert expected in r.stdout
