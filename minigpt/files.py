"""Atomic file writes: a temp file beside the target, flushed and fsynced, then os.replace. A reader, an
interruption or a crash sees the old file or the new one, never half of one.

    atomic_write("runs/x/summary.json", lambda f: f.write(b"{}"))     # f is the temp file, opened "wb"
    atomic_write_text("runs/x/report.md", "# Report\n")

The new file gets the permissions a plain open() would give (0666 less the umask, usually 0644):
tempfile.mkstemp creates 0600 files, which once made every run's outputs unreadable to anyone else on a
shared machine (a course's TA, a group's server). Every module that writes run outputs goes through here.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

_UMASK = os.umask(0o022)   # os has no getter: set, read, restore (once, at import)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open(path, "w") would create


def atomic_write(path: str | os.PathLike, write_fn: Callable, mode: str = "wb", **open_kwargs) -> None:
    """Call write_fn(f) on a temp file next to `path` (opened with `mode`), then rename it onto `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, mode, **open_kwargs) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temp file behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def make_dir(path: str | os.PathLike, flag: str = "") -> str:
    """os.makedirs(path, exist_ok=True), or a one-line SystemExit naming the flag (e.g. "--out") and the path
    when it cannot be made (a file in the way, no permission, a read-only place) instead of a traceback."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        reason = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else \
            (e.strerror or type(e).__name__).lower()
        named = f"{flag}={path}" if flag else path
        raise SystemExit(f"error: {named}: cannot create this directory ({reason})") from None
    return path


def read_text_file(path: str, flag: str) -> str:
    """The content of a UTF-8 text file to train on, or a one-line SystemExit naming the flag (e.g. "--data"):
    no such file, a directory, not UTF-8 (path:line and the byte: a binary file, or another encoding), empty."""
    if not os.path.exists(path):
        raise SystemExit(f"error: {flag}={path}: no such file")
    if os.path.isdir(path):
        raise SystemExit(f"error: {flag}={path}: a directory; name one text file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise SystemExit(f"error: {path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                         f"convert it first, e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise SystemExit(f"error: {flag}={path}: the file is empty")
    return text


def check_output_file(path: str | os.PathLike, flag: str) -> str:
    """Before long work whose result goes to `path` (a --json report, say): a one-line SystemExit naming the
    flag when no file can be written there (a directory in the way, a parent that cannot be made), rather
    than a traceback once the work is done. Makes the parent directory, and tries a file in it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise SystemExit(f"error: {flag}={path}: a directory; name a file")
    parent = make_dir(os.path.dirname(os.path.abspath(path)), flag)
    try:
        with tempfile.TemporaryFile(dir=parent):      # what atomic_write will do there (root ignores os.access)
            pass
    except OSError as e:
        raise SystemExit(f"error: {flag}={path}: cannot write there ({(e.strerror or type(e).__name__).lower()})") \
            from None
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8, "\\n" line ends) to `path` atomically."""
    atomic_write(path, lambda f: f.write(text), "w", encoding="utf-8", newline="\n")
