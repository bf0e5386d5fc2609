"""minigpt.configurator: presets, typed --key=value overrides, --help, clear errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from minigpt.configurator import (CommandParser, bounded, bounds_of, check_bounds, config_from_dict, config_to_dict,
                                  convert, field_comments, parse_config)
from minigpt.train import TrainConfig
from rlhf import best_of_n, dpo, evaluate, grpo, pipeline, ppo, pretrain, reward_model, sft
from rlhf.experiments import overoptimisation, rm_scaling, rounds, seeds


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


@dataclass
class Bounded:
    """A toy config with value rules."""
    BOUNDS = {"batch": ">= 1", "lr": ">= 0", "p": "in [0, 1)", "beta": "> 0", "cap": "> 0", "ns": ">= 1"}
    batch: int = 8              # rows per step
    lr: float = 1e-3            # learning rate
    p: float = 0.0              # a probability below 1
    beta: float = 0.1           # strictly positive
    cap: float | None = None    # optional: None = off
    ns: list[int] = field(default_factory=lambda: [1, 2])  # a list: the rule holds for each value


@dataclass
class MoreBounded(Bounded):
    """A subclass that tightens one rule and adds one."""
    BOUNDS = {"batch": ">= 2", "q": "in (0, 1]"}
    q: float = 1.0              # in (0, 1]


@pytest.mark.parametrize("argv, message", [
    (["--batch=0"], "error: --batch=0: must be >= 1"),
    (["--lr=-1e-3"], "error: --lr=-0.001: must be >= 0"),
    (["--lr=nan"], "error: --lr=nan: must be >= 0"),                 # NaN compares false: refused too
    (["--p=1"], "error: --p=1.0: must be in [0, 1)"),
    (["--beta=0"], "error: --beta=0.0: must be > 0"),
    (["--cap=-2"], "error: --cap=-2.0: must be > 0"),
    (["--ns=1,0,4"], "error: --ns=1,0,4: 0 is not >= 1; every value must be >= 1"),   # each value of a list
])
def test_a_value_outside_its_bounds_is_one_line_naming_the_flag(argv, message):
    with pytest.raises(SystemExit) as e:
        parse_config(Bounded, argv)
    assert str(e.value) == message


def test_bounds_edges_none_and_subclasses():
    """Edges belong to closed ends only; None (an optional setting that is off) is never out of bounds; a
    subclass's rule for a field wins over its base's."""
    cfg = parse_config(Bounded, ["--batch=1", "--lr=0", "--p=0", "--beta=1e-9", "--ns="])
    assert (cfg.batch, cfg.lr, cfg.p, cfg.cap, cfg.ns) == (1, 0.0, 0.0, None, [])   # an empty list has no bad value
    assert bounds_of(MoreBounded) == {"batch": ">= 2", "lr": ">= 0", "p": "in [0, 1)", "beta": "> 0", "cap": "> 0",
                                      "ns": ">= 1", "q": "in (0, 1]"}
    with pytest.raises(SystemExit, match=r"--batch=1: must be >= 2"):
        parse_config(MoreBounded, ["--batch=1"])
    with pytest.raises(SystemExit, match=r"--q=0.0: must be in \(0, 1\]"):
        parse_config(MoreBounded, ["--q=0"])
    check_bounds(MoreBounded(q=1.0))


def test_every_stage_config_names_real_fields_and_its_presets_obey_its_bounds():
    """The project's rules (BOUNDS on each stage config) name fields that exist, and the defaults, every
    module preset and every pipeline preset's stage configs obey them (or a preset would not start)."""
    classes = [(TrainConfig, {}), (pretrain.WorldPretrainConfig, pretrain.PRESETS), (sft.SFTConfig, sft.PRESETS),
               (reward_model.RMConfig, reward_model.PRESETS), (ppo.PPOConfig, ppo.PRESETS),
               (grpo.GRPOConfig, grpo.PRESETS), (dpo.DPOConfig, dpo.PRESETS), (best_of_n.BestOfNConfig, best_of_n.PRESETS),
               (evaluate.EvalConfig, {}),
               (pipeline.PipelineConfig, {k: v["pipeline"] for k, v in pipeline.PIPELINE_PRESETS.items()}),
               (overoptimisation.OveroptimisationConfig, overoptimisation.PRESETS),
               (rm_scaling.RMScalingConfig, rm_scaling.PRESETS), (rounds.RoundsConfig, rounds.PRESETS),
               (seeds.SeedsConfig, seeds.PRESETS)]
    for cls, presets in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        assert bounds_of(cls) and set(bounds_of(cls)) <= names, (cls.__name__, set(bounds_of(cls)) - names)
        check_bounds(cls())
        for preset in presets.values():
            check_bounds(dataclasses.replace(cls(), **preset))
    for preset in pipeline.PIPELINE_PRESETS:
        for stage, cfg in pipeline.build_stage_configs(pipeline.PipelineConfig(), preset).items():
            check_bounds(cfg, flag=f"--{stage}.")


@pytest.mark.parametrize("argv, message", [
    (["--ppo.kl_target=0"], "error: --ppo.kl_target=0.0: must be > 0"),          # (none = a fixed β)
    (["--pretrain.grad_accum=0"], "error: --pretrain.grad_accum=0: must be >= 1"),  # trained nothing, silently
    (["--n_boot=1"], "error: --n_boot=1: must be >= 100"),
])
def test_the_pipeline_checks_its_own_and_each_stages_bounds_before_any_work(tmp_path, argv, message):
    with pytest.raises(SystemExit) as e:
        pipeline.main(["--preset", "tiny", "--out", str(tmp_path / "run"), "--progress=false", *argv])
    assert str(e.value) == message and not (tmp_path / "run").exists()


@pytest.mark.parametrize("module, argv, message", [
    (best_of_n, ["--ns=1,0"], "error: --ns=1,0: 0 is not >= 1; every value must be >= 1"),   # was argmax's IndexError
    (best_of_n, ["--ns="], "error: --ns is empty: give the N values to compare, e.g. --ns=1,2,4,8"),  # was max()'s
    (reward_model, ["--temperatures=1,-1"],
     "error: --temperatures=1.0,-1.0: -1.0 is not >= 0; every value must be >= 0"),
    (dpo, ["--temperatures=-0.5"], "error: --temperatures=-0.5: -0.5 is not >= 0; every value must be >= 0"),
    (overoptimisation, ["--ppo_iters=-3"], "error: --ppo_iters=-3: must be >= 1"),    # ran, "-3 iterations"
    (overoptimisation, ["--kl_coef=nan"], "error: --kl_coef=nan: must be >= 0"),      # trained, then NaN
    (rm_scaling, ["--fractions=1,nan"], "error: --fractions=1.0,nan: nan is not > 0; every value must be > 0"),
    (rounds, ["--rm_replay=-1"], "error: --rm_replay=-1.0: must be >= 0"),            # random.sample's ValueError
    (rounds, ["--target_win_rate=2"], "error: --target_win_rate=2.0: must be in [0, 1]"),
])
def test_lists_and_the_experiments_settings_are_checked_before_any_work(tmp_path, module, argv, message):
    """A bad value inside a list (best-of-N's N, the sampling temperatures, rm_scaling's fractions) and the
    experiments' settings (found by probing: they had no rules) are one line naming the flag, before any model
    is loaded (no run directories exist here)."""
    places = ([f"--out={tmp_path / 'out'}", f"--run={tmp_path / 'no_run'}"] if module.__name__.startswith(
        "rlhf.experiments") else [f"--out_dir={tmp_path / 'out'}", f"--sft_dir={tmp_path / 'no_sft'}"])
    with pytest.raises(SystemExit) as e:
        module.main(["--preset", "tiny", *places, *argv])
    assert str(e.value) == message and not (tmp_path / "out").exists()


def test_argparse_commands_fail_in_one_line_and_check_numbers_with_the_bounds_rules(capsys):
    """CommandParser (the commands with positional arguments or subcommands) says what is wrong in one line
    starting with `error:`, as parse_config does, not argparse's usage text and `prog: error:`; bounded() is
    an argparse type checking a BOUNDS rule (found by probing: e.g. rlhf.world sample --n 0 printed nothing)."""
    parser = CommandParser(prog="python -m thing")
    parser.add_argument("--n", type=bounded(int, ">= 1"), default=5)
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("go").add_argument("--t", type=bounded(float, ">= 0"))
    assert parser.parse_args(["--n=3", "go", "--t=0"]).n == 3
    for argv, message in ((["--n=0"], "error: argument --n: 0: must be >= 1 (python -m thing --help lists the"),
                          (["--n=x"], "error: argument --n: 'x': not an int (python -m thing --help lists"),
                          (["go", "--t=nan"], "error: argument --t: nan: must be >= 0 (python -m thing go --help"),
                          (["--bogus"], "error: unrecognized arguments: --bogus (python -m thing --help")):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1, err
