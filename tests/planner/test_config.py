"""Typed configs: YAML + `key.sub=value` overrides into dataclasses, strict keys and types."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from planner.config import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    parse_override,
    save_config,
    to_dict,
)
from planner.taxonomy import Command


@dataclass
class OptimConfig:
    lr: float = 1e-3
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass
class ToyConfig:
    horizon_s: float = 6.4
    num_samples: int = 6
    use_reasoning: bool = True
    mode: Literal["full", "fast", "explain"] = "full"
    command: Command = Command.LANE_FOLLOW
    cache_dir: Path | None = None
    tags: list[str] = field(default_factory=list)
    optim: OptimConfig = field(default_factory=OptimConfig)


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_without_a_file():
    cfg = load_config(ToyConfig)
    assert cfg == ToyConfig()


def test_yaml_file_and_nested_values(tmp_path):
    path = _write(tmp_path, {"horizon_s": 3, "optim": {"warmup_steps": 10}, "tags": ["a"]})
    cfg = load_config(ToyConfig, path)
    assert cfg.horizon_s == 3.0 and isinstance(cfg.horizon_s, float)  # int in YAML -> float
    assert cfg.optim.warmup_steps == 10
    assert cfg.optim.lr == 1e-3  # untouched nested default survives the merge
    assert cfg.tags == ["a"]


def test_top_level_typo_names_the_closest_key(tmp_path):
    path = _write(tmp_path, {"horizn_s": 3.0})
    with pytest.raises(ConfigError) as err:
        load_config(ToyConfig, path)
    assert "unknown config key 'horizn_s'" in str(err.value)
    assert "did you mean 'horizon_s'" in str(err.value)


def test_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("horizon_s: 3.0\noptim:\n  lr: 0.1\nhorizon_s: 4.0\n")
    with pytest.raises(ConfigError, match=r"'horizon_s' is given twice \(lines 1 and 4\)"):
        load_config(ToyConfig, path)


def test_nested_typo_names_the_closest_key(tmp_path):
    path = _write(tmp_path, {"optim": {"warmup_step": 5}})
    with pytest.raises(ConfigError) as err:
        load_config(ToyConfig, path)
    assert "'optim.warmup_step'" in str(err.value)
    assert "did you mean 'warmup_steps'" in str(err.value)


def test_overrides_set_nested_keys_with_yaml_values():
    cfg = load_config(
        ToyConfig,
        overrides=[
            "optim.lr=3e-4",
            "optim.betas=[0.8, 0.9]",
            "num_samples=2",
            "use_reasoning=false",
            "mode=fast",
            "command=change_lane_left",
            "cache_dir=~/cocdrive-cache",
        ],
    )
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.num_samples == 2
    assert cfg.use_reasoning is False
    assert cfg.mode == "fast"
    assert cfg.command is Command.CHANGE_LANE_LEFT
    assert cfg.cache_dir == Path("~/cocdrive-cache").expanduser()


def test_overrides_beat_the_file(tmp_path):
    path = _write(tmp_path, {"num_samples": 3, "optim": {"lr": 0.1}})
    cfg = load_config(ToyConfig, path, ["optim.lr=0.2"])
    assert cfg.num_samples == 3
    assert cfg.optim.lr == 0.2


def test_exponent_floats_without_a_dot(tmp_path):
    # YAML 1.1 (pyyaml) reads `1e-3` as a string; float fields accept it anyway.
    path = _write(tmp_path, {})
    path.write_text("optim:\n  lr: 1e-3\n")
    assert load_config(ToyConfig, path).optim.lr == pytest.approx(1e-3)
    assert load_config(ToyConfig, overrides=["optim.lr=-2E+2"]).optim.lr == -200.0
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(ToyConfig, overrides=["optim.lr=1e-3x"])


def test_override_typo_names_the_closest_key():
    with pytest.raises(ConfigError, match=r"'optim.warmup_stpes'.*did you mean 'warmup_steps'"):
        load_config(ToyConfig, overrides=["optim.warmup_stpes=5"])
    with pytest.raises(ConfigError, match=r"did you mean 'num_samples'"):
        load_config(ToyConfig, overrides=["num_sample=5"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.warmup_steps=abc", r"optim.warmup_steps: expected an integer, got 'abc'"),
        ("optim.warmup_steps=1.5", r"optim.warmup_steps: expected an integer"),
        ("horizon_s=fast", r"horizon_s: expected a number, got 'fast'"),
        ("use_reasoning=1", r"use_reasoning: expected true/false"),
        ("mode=slow", r"mode: 'slow' is not one of \['full', 'fast', 'explain'\]"),
        ("command=fly", r"command: 'fly' is not one of"),
        ("horizon_s=null", r"horizon_s: null is not allowed"),
        ("optim.betas=[1, 2, 3]", r"optim.betas: expected 2 items, got 3"),
        ("optim=3", r"optim: expected a mapping"),
        ("num_samples.x=3", r"num_samples: expected an integer, got \{'x': 3\}"),
    ],
)
def test_type_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ToyConfig, overrides=[override])


def test_malformed_overrides():
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("=3")
    assert parse_override("a.b=") == (["a", "b"], "")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(ToyConfig, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("horizon_s: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(ToyConfig, bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(ToyConfig, bad)


def test_save_config_round_trips(tmp_path):
    cfg = load_config(
        ToyConfig, overrides=["optim.lr=0.02", "tags=[x, y]", "command=left", "cache_dir=/tmp/c"]
    )
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert path.is_file()
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temp file
    assert load_config(ToyConfig, path) == cfg
    assert yaml.safe_load(path.read_text())["command"] == "left"  # enums saved as values


def test_from_dict_and_to_dict_are_inverse():
    cfg = ToyConfig(num_samples=9, optim=OptimConfig(lr=0.5))
    assert from_dict(ToyConfig, to_dict(cfg)) == cfg


def test_dataclass_validation_errors_become_config_errors():
    @dataclass
    class Positive:
        gap_m: float = 1.0

        def __post_init__(self) -> None:
            if self.gap_m <= 0:
                raise ValueError(f"gap_m must be positive, got {self.gap_m}")

    with pytest.raises(ConfigError, match="gap_m must be positive, got -1"):
        load_config(Positive, overrides=["gap_m=-1"])
