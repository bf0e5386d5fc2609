"""Typed command-line configuration: a dataclass, named presets, and `--key=value` overrides.

nanoGPT's configurator `exec`s a Python file and then the command line; it says itself that this is
"probably a terrible idea". Here every stage declares one `@dataclass` whose fields carry an inline
comment, and this module turns the command line into an instance of it, checking types:

    python -m minigpt.train --preset tiny --max_iters=50 --lr=3e-4 --compile=false --resume

Rules (applied left to right, later wins):
  1. start from the dataclass defaults, then the preset: `--preset NAME` (or `--preset=NAME`), or the
     preset called "default" when there is one and no preset is named;
  2. `--key=value` (or `--key value`) sets one field, converting `value` to the field's type:
       bool   true/false/1/0/yes/no/on/off (a bare `--flag` means true)
       int    "12", "1_000", "1e3" (when it is a whole number)
       float  "3e-4", "0.1"
       str    taken as is
       X | None / Optional[X]   "none" / "null" means None, anything else is converted to X
       list[X] / tuple[X, ...]  comma-separated: "--families=reverse,sort"
  3. `--help` / `-h` prints every field with its type, default (after the preset) and its comment.
An unknown key, a bad value or an unknown preset exits with a one-line message (SystemExit).
The commands built on argparse instead (positional arguments, subcommands, the benchmarks and tools/) use
CommandParser, whose errors are one line too, and bounded(int, ">= 1") checks a number against the same
rules as BOUNDS.
Every entry point's `if __name__ == "__main__":` block first calls utf8_console(), so that what it prints
(help texts with β and σ, a model's samples) reaches a pipe or a file whatever the locale's encoding.

    >>> @dataclass
    ... class C:
    ...     lr: float = 1e-3   # learning rate
    ...     steps: int = 10    # optimizer steps
    >>> parse_config(C, ["--steps=20"], {"fast": {"lr": 1e-2}}).steps
    20
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import difflib
import inspect
import os
import re
import sys
import types
import typing
from typing import Any

_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f"}
_NONE = {"none", "null"}


def field_comments(cls) -> dict[str, str]:
    """The inline `# comment` of each field of a dataclass, read from its source (empty if unavailable).

    A field line `lr: float = 3e-4  # peak learning rate` gives {"lr": "peak learning rate"};
    comment-only lines right below a field continue its comment; a section marker "# ---- ..." does not.
    """
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # base classes first, subclasses override
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        last = None
        for line in source.splitlines():
            m = re.match(r"^\s+([A-Za-z_]\w*)\s*:[^#]*?(?:#\s?(.*))?$", line)
            if m and not line.strip().startswith("#") and "(" not in line.split(":")[0]:
                last = m.group(1)
                comments[last] = (m.group(2) or "").strip()
                continue
            m = re.match(r"^\s+#\s?(.*)$", line)
            if m and m.group(1).startswith("----"):  # a section marker ("# ---- 4. update") ends a comment
                last = None
                continue
            if m and last is not None and comments.get(last):
                comments[last] += " " + m.group(1).strip()
                continue
            last = None
    return comments


def _field_types(cls) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except NameError:   # a module run by runpy as __main__ (not in sys.modules): resolve typing's names
        hints = typing.get_type_hints(cls, localns=vars(typing))
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(cls) if f.init}


def _type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    if typing.get_origin(tp) is typing.Literal:        # Literal["prompt", "pair"] -> "prompt|pair"
        return "|".join(str(a) for a in typing.get_args(tp))
    return str(tp).replace("typing.", "")


def _check_choice(value, tp, name: str, dashes: str = ""):
    """A Literal field's value must be one of its choices (a ValueError naming them otherwise)."""
    choices = typing.get_args(tp)
    if value not in choices:
        raise ValueError(f"{dashes}{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def _unwrap_optional(tp):
    """X | None -> (X, True); X -> (X, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def convert(text: str, tp, name: str = "value"):
    """Convert the command-line string `text` to type `tp` or raise ValueError naming the field.

    convert("3", int) -> 3;  convert("off", bool) -> False;  convert("none", int | None) -> None;
    convert("a,b", list[str]) -> ["a", "b"];  convert("pair", Literal["prompt", "pair"]) -> "pair".
    """
    inner, optional = _unwrap_optional(tp)
    if optional and text.strip().lower() in _NONE:
        return None
    origin = typing.get_origin(inner)
    if origin is typing.Literal:
        return _check_choice(text, inner, name, "--")
    if origin in (list, tuple):
        args = typing.get_args(inner)
        item_tp = args[0] if args else str
        items = [] if text.strip() == "" else [s.strip() for s in text.split(",")]
        values = [convert(s, item_tp, name) for s in items]
        return values if origin is list else tuple(values)
    if inner is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"--{name}: expected a bool (true/false), got {text!r}")
    if inner is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            try:
                x = float(text)
            except ValueError:
                x = None
            if x is not None and x.is_integer():
                return int(x)
            raise ValueError(f"--{name}: expected an int, got {text!r}") from None
    if inner is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--{name}: expected a float, got {text!r}") from None
    if inner is str or inner is Any:
        return text
    raise ValueError(f"--{name}: cannot parse fields of type {_type_name(tp)} from the command line")


def check_value(value, tp, name: str = "value"):
    """Check (and lightly coerce: int -> float) a Python value given in a preset or in code."""
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}: None is not allowed for a field of type {_type_name(tp)}")
    origin = typing.get_origin(inner)
    if origin is typing.Literal:
        return _check_choice(value, inner, name)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: expected a {_type_name(inner)}, got {value!r}")
        args = typing.get_args(inner)
        item_tp = args[0] if args else Any
        values = [check_value(v, item_tp, name) for v in value]
        return values if origin is list else tuple(values)
    if inner is Any:
        return value
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if inner is int and isinstance(value, bool):
        raise ValueError(f"{name}: expected an int, got the bool {value!r}")
    if isinstance(inner, type) and not isinstance(value, inner):
        raise ValueError(f"{name}: expected {_type_name(inner)}, got {type(value).__name__} {value!r}")
    return value


def _unknown(name: str, known) -> SystemExit:
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
    return SystemExit(f"error: unknown option --{name}{hint}; run with --help to list the options")


def bounds_of(cls) -> dict[str, str]:
    """The value rules of a config class: its BOUNDS class attribute merged over its bases (a subclass's rule
    for a field wins). BOUNDS = {field: rule}, a rule being ">= 1", "> 0" or an interval "in [0, 1)"; for a
    list field the rule holds for each of its values."""
    rules: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        rules.update(klass.__dict__.get("BOUNDS", {}))
    return rules


def _obeys(value, rule: str) -> bool:
    op, _, rest = rule.partition(" ")
    if op == ">=":
        return value >= float(rest)
    if op == ">":
        return value > float(rest)
    m = re.fullmatch(r"in ([\[(])(\S+), (\S+)([\])])", rule)
    if m is None:
        raise ValueError(f"not a bounds rule: {rule!r}")
    low, high = float(m.group(2)), float(m.group(3))
    return ((value >= low) if m.group(1) == "[" else (value > low)) and \
        ((value <= high) if m.group(4) == "]" else (value < high))


def check_bounds(cfg, flag: str = "--") -> None:
    """A one-line error (SystemExit) for the first field of `cfg` outside its class's BOUNDS, spelled as the
    user typed it (flag "--" for a stage's command, "--ppo." in the pipeline's): a batch of 0, a negative
    learning rate or a NaN would otherwise end in a traceback far from the cause, or train nothing."""
    for name, rule in bounds_of(type(cfg)).items():
        value = getattr(cfg, name)
        if isinstance(value, (list, tuple)):                  # a list: the rule holds for every value in it
            bad = [v for v in value if not _obeys(v, rule)]
            if bad:
                raise SystemExit(f"error: {flag}{name}={','.join(map(str, value))}: {bad[0]} is not {rule}; "
                                 f"every value must be {rule}")
        elif value is not None and not _obeys(value, rule):   # None: an optional setting that is off
            raise SystemExit(f"error: {flag}{name}={value}: must be {rule}")


class CommandParser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: `error: ...` and where the options are listed, instead of
    the usage text followed by `prog: error: ...` (subcommands' parsers are CommandParsers too)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} ({self.prog} --help lists the options)\n")


def bounded(kind: type, rule: str):
    """An argparse `type` that converts with `kind` (int or float) and checks the value against a BOUNDS rule
    (">= 1", "> 0", "in [0, 1)"): `add_argument("--n", type=bounded(int, ">= 1"))`."""
    def convert_and_check(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: not a{'n' if kind is int else ''} {kind.__name__}") from None
        if not _obeys(value, rule):
            raise argparse.ArgumentTypeError(f"{text}: must be {rule}")
        return value
    convert_and_check.__name__ = kind.__name__       # argparse names the type in its own messages
    return convert_and_check


def replace_checked(cfg, overrides: dict[str, Any], where: str = "override"):
    """dataclasses.replace with a type check of every value and a clear error for unknown keys."""
    types_ = _field_types(type(cfg))
    checked = {}
    for key, value in overrides.items():
        if key not in types_:
            raise _unknown(key, types_)
        try:
            checked[key] = check_value(value, types_[key], f"{where} {key}")
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    return dataclasses.replace(cfg, **checked)


def format_help(cls, presets: dict[str, dict] | None = None, cfg=None, prog: str | None = None) -> str:
    """The --help text: usage, the class docstring's first line, presets, then one line per field."""
    presets = presets or {}
    cfg = cfg if cfg is not None else cls()
    prog = prog or "python -m <module>"
    preset = "[--preset NAME] " if presets else ""
    lines = [f"usage: {prog} {preset}[--key=value ...] [--help]", ""]
    doc = inspect.getdoc(cls) or ""
    if doc and not doc.startswith(cls.__name__ + "("):
        lines += [doc.splitlines()[0], ""]
    if presets:
        lines.append("presets: " + ", ".join(presets) + (" (default: default)" if "default" in presets else ""))
        lines.append("")
    comments = field_comments(cls)
    types_ = _field_types(cls)
    rows = []
    for name, tp in types_.items():
        value = getattr(cfg, name)
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        rows.append((f"--{name}={value}", _type_name(tp), comments.get(name, "")))
    w0 = max((len(r[0]) for r in rows), default=0)
    w1 = max((len(r[1]) for r in rows), default=0)
    lines.append("options (shown with the values the chosen preset gives):" if presets else "options:")
    for a, b, c in rows:
        lines.append(f"  {a:<{w0}}  {b:<{w1}}  {c}".rstrip())
    return "\n".join(lines)


def parse_config(cls, argv: list[str] | None = None, presets: dict[str, dict] | None = None,
                 prog: str | None = None):
    """Build `cls` from the dataclass defaults, a preset and `--key=value` overrides (see module doc).

    argv defaults to sys.argv[1:]. `--help` prints format_help and exits with status 0.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    presets = presets or {}
    types_ = _field_types(cls)

    # Pass 1: split into (key, value-or-None) pairs.
    pairs: list[tuple[str, str | None]] = []
    i = 0
    want_help = False
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            want_help = True
            i += 1
            continue
        if not arg.startswith("--") or len(arg) == 2:
            prev = (argv[i - 1][2:].replace("-", "_") if i and argv[i - 1].startswith("--")
                    and argv[i - 1] != "--help" else None)
            if prev and "=" not in prev and prev not in types_ and prev != "preset":   # `--typo value`
                raise _unknown(prev, list(types_) + (["preset"] if presets else []))
            raise SystemExit(f"error: unexpected argument {arg!r}; options look like --key=value")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        else:
            key, value = body, None
            # `--key value`, unless the field is a bool (then a bare flag means true)
            if key == "preset" or (key in types_ and _unwrap_optional(types_[key])[0] is not bool):
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise SystemExit(f"error: --{key} needs a value (--{key}=VALUE)")
                value = argv[i + 1]
                i += 1
        key = key.replace("-", "_")
        pairs.append((key, value))
        i += 1

    # Pass 2: the preset (the last --preset given wins), then the overrides in order.
    preset_names = [v for k, v in pairs if k == "preset"]
    cfg = cls()
    if preset_names:
        name = preset_names[-1]
        if name not in presets:
            raise SystemExit(f"error: unknown preset {name!r}; choose one of: {', '.join(presets) or '(none)'}")
        cfg = replace_checked(cfg, presets[name], where=f"preset {name!r}:")
    elif "default" in presets:
        cfg = replace_checked(cfg, presets["default"], where="preset 'default':")

    overrides: dict[str, Any] = {}
    for key, value in pairs:
        if key == "preset":
            continue
        if key not in types_:
            raise _unknown(key, types_)
        if value is None:
            value = "true"
        try:
            overrides[key] = convert(value, types_[key], key)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    cfg = dataclasses.replace(cfg, **overrides)
    check_bounds(cfg)

    if want_help:
        print(format_help(cls, presets, cfg, prog))
        raise SystemExit(0)
    return cfg


def utf8_console() -> None:
    """Make what an entry point prints reach a pipe or a file as UTF-8, whatever the locale.

    Python before 3.15 encodes output to a pipe or a file in the locale's code page (cp1252 on Windows),
    which has no β, σ or →, nor the U+FFFD that a half-trained model's stray bytes decode to: `--help >
    help.txt` or a sample printed to a log ended in a UnicodeEncodeError. So a non-UTF-8 pipe or file
    becomes UTF-8 (stdin is read as UTF-8 too), and a terminal keeps its encoding but shows what it cannot
    encode as escapes. Streams already in UTF-8 (most terminals, Jupyter), streams that cannot be
    reconfigured (pytest's) and an explicit PYTHONIOENCODING are left alone. For the `__main__` block of an
    entry point: never at import, and not in main(), which tests call with their own streams."""
    if os.environ.get("PYTHONIOENCODING"):
        return
    for stream, errors in ((sys.stdout, "backslashreplace"), (sys.stderr, "backslashreplace"), (sys.stdin, "replace")):
        try:
            if codecs.lookup(stream.encoding or "ascii").name == "utf-8":
                continue
            if stream.isatty():
                stream.reconfigure(errors=errors)
            else:
                stream.reconfigure(encoding="utf-8", errors=errors)
        except (AttributeError, AssertionError, LookupError, OSError, ValueError):   # None, closed, not reconfigurable
            continue


def config_to_dict(cfg) -> dict[str, Any]:
    """asdict, for JSON files and checkpoints (only plain Python values)."""
    return dataclasses.asdict(cfg)


def config_from_dict(cls, d: dict[str, Any], strict: bool = False):
    """Rebuild a config saved with config_to_dict; unknown keys are dropped unless strict."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    extra = set(d) - names
    if extra and strict:
        raise ValueError(f"unknown config keys: {sorted(extra)}")
    return replace_checked(cls(), {k: v for k, v in d.items() if k in names}, where="saved config")
