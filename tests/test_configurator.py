"""minigpt.configurator: presets, typed --key=value overrides, --help, clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from minigpt.configurator import config_from_dict, config_to_dict, convert, field_comments, parse_config


@dataclass
class Cfg:
    """A toy stage config."""
    lr: float = 1e-3            # peak learning rate
    steps: int = 10             # optimizer steps
    compile: bool = False       # torch.compile the model
    name: str = "run"           # run name
    limit: int | None = None    # optional cap
    families: list[str] = field(default_factory=lambda: ["a", "b"])  # task families
    mode: Literal["fast", "exact"] = "fast"  # one of two ways
    # a comment line that belongs to nobody


PRESETS = {"tiny": {"steps": 2, "lr": 1}, "default": {"steps": 100}}


def test_defaults_and_default_preset():
    cfg = parse_config(Cfg, [], PRESETS)
    assert cfg.steps == 100 and cfg.lr == 1e-3          # "default" preset applied when none named
    assert parse_config(Cfg, [], {}).steps == 10        # no presets -> dataclass defaults


def test_preset_then_overrides_in_order():
    cfg = parse_config(Cfg, ["--preset", "tiny", "--steps=5", "--compile", "--name", "x y"], PRESETS)
    assert cfg.steps == 5 and cfg.compile is True and cfg.name == "x y"
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)   # int in a preset coerced to the float field
    cfg = parse_config(Cfg, ["--steps=5", "--preset=tiny"], PRESETS)
    assert cfg.steps == 5                                 # the preset is applied first, wherever it is


@pytest.mark.parametrize("text,tp,expected", [
    ("3", int, 3), ("1_000", int, 1000), ("1e3", int, 1000), ("3e-4", float, 3e-4),
    ("off", bool, False), ("True", bool, True), ("1", bool, True),
    ("none", int | None, None), ("7", int | None, 7), ("a, b", list[str], ["a", "b"]),
    ("1,2", tuple[int, ...], (1, 2)), ("hello", str, "hello"), ("exact", Literal["fast", "exact"], "exact"),
])
def test_convert(text, tp, expected):
    assert convert(text, tp) == expected


@pytest.mark.parametrize("argv,fragment", [
    (["--steps=1.5"], "expected an int"),
    (["--lr=fast"], "expected a float"),
    (["--compile=maybe"], "expected a bool"),
    (["--step=3"], "did you mean --steps"),
    (["--step", "3"], "unknown option --step (did you mean --steps"),     # not "unexpected argument '3'"
    (["--presett", "tiny"], "did you mean --preset"),
    (["--preset=huge"], "unknown preset"),
    (["steps=3"], "unexpected argument"),
    (["--limit"], "needs a value"),
    (["--mode=exactly"], "--mode must be one of fast, exact, got 'exactly'"),   # at parse time, before any work
])
def test_errors_are_clear_system_exits(argv, fragment):
    with pytest.raises(SystemExit) as e:
        parse_config(Cfg, argv, PRESETS)
    assert fragment in str(e.value)


def test_bad_preset_value_is_rejected():
    with pytest.raises(SystemExit, match="expected int"):
        parse_config(Cfg, ["--preset=bad"], {"bad": {"steps": "ten"}})
    with pytest.raises(SystemExit, match="mode must be one of fast, exact"):
        parse_config(Cfg, ["--preset=bad"], {"bad": {"mode": "slow"}})


def test_help_lists_fields_defaults_and_comments(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Cfg, ["--preset=tiny", "--help"], PRESETS, prog="python -m toy")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "python -m toy" in out and "tiny, default" in out
    assert "--steps=2" in out and "optimizer steps" in out          # value after the preset
    assert "--families=a,b" in out and "task families" in out
    assert "--limit=None" in out and "optional cap" in out


def test_field_comments():
    c = field_comments(Cfg)
    assert c["lr"] == "peak learning rate" and c["compile"] == "torch.compile the model"


def test_round_trip_dict():
    cfg = parse_config(Cfg, ["--steps=3", "--limit=4"], PRESETS)
    assert config_from_dict(Cfg, {**config_to_dict(cfg), "removed_field": 1}) == cfg
