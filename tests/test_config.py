"""Config dataclasses: YAML loading, --set overrides, clear errors, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from tokenalign.config import (
    apply_overrides,
    config_to_yaml,
    from_dict,
    load_config,
    parse_overrides,
    save_config,
)
from tokenalign.errors import ConfigError


@dataclasses.dataclass
class Inner:
    lr: float = 1e-5
    steps: int = 10
    mode: Literal["sum", "avg"] = "avg"
    stop: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


@dataclasses.dataclass
class Outer:
    name: str = "run"
    seed: Optional[int] = None
    bf16: bool = True
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_defaults_and_nested_values():
    cfg = from_dict(Outer, {"name": "x", "inner": {"steps": 3, "mode": "sum"}})
    assert cfg.name == "x" and cfg.inner.steps == 3 and cfg.inner.mode == "sum"
    assert cfg.inner.lr == 1e-5 and cfg.seed is None


def test_yaml_scientific_notation_without_dot_is_a_float():
    # PyYAML reads "1e-5" as a string; float fields must still accept it.
    cfg = load_config(Outer, None, ["inner.lr=1e-5"])
    assert cfg.inner.lr == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"nmae": "x"}, "unknown config key 'nmae' (did you mean name?)"),
        ({"inner": {"lrr": 1.0}}, "unknown config key 'inner.lrr'"),
        ({"inner": {"steps": "ten"}}, "inner.steps: expected an integer, got 'ten'"),
        ({"inner": {"mode": "max"}}, "inner.mode: must be one of 'sum', 'avg', got 'max'"),
        ({"bf16": "yes"}, "bf16: expected true or false"),
        ({"inner": {"lr": -1.0}}, "lr must be > 0"),
        ({"inner": 3}, "inner: expected a mapping of Inner fields"),
        ({"inner": {"stop": "x"}}, "inner.stop: expected a list"),
    ],
)
def test_bad_values_are_clear_errors(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, data)
    assert message in str(err.value)


def test_overrides_parse_yaml_values_and_nest():
    assert parse_overrides(["a.b=3", "a.c=x", "d=[1, 2]", "e=null", "f=true"]) == {
        "a": {"b": 3, "c": "x"},
        "d": [1, 2],
        "e": None,
        "f": True,
    }
    merged = apply_overrides({"a": {"b": 1, "keep": 2}}, ["a.b=5"])
    assert merged == {"a": {"b": 5, "keep": 2}}
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        parse_overrides(["novalue"])


def test_load_from_yaml_with_overrides_and_round_trip(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text('name: base\ninner:\n  steps: 7\n  stop: ["\\ndef "]\n')
    cfg = load_config(Outer, path, ["inner.steps=9", "seed=3"])
    assert (cfg.name, cfg.inner.steps, cfg.seed, cfg.inner.stop) == ("base", 9, 3, ["\ndef "])
    saved = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(Outer, saved)
    assert again == cfg
    assert yaml.safe_load(config_to_yaml(cfg))["inner"]["steps"] == 9


def test_bad_yaml_file_names_the_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: a\ninner: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Outer, tmp_path / "list.yaml")
    (tmp_path / "unknown.yaml").write_text("inner:\n  stepz: 1\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown config key 'inner.stepz'"):
        load_config(Outer, tmp_path / "unknown.yaml")


def test_yaml_no_is_still_a_literal_choice():
    @dataclasses.dataclass
    class Precision:
        mixed_precision: Literal["auto", "no", "bf16"] = "auto"

    assert load_config(Precision, None, ["mixed_precision=no"]).mixed_precision == "no"


@dataclasses.dataclass
class OuterWithOwnDefault:
    # the field's default differs from Inner's own defaults
    inner: Inner = dataclasses.field(default_factory=lambda: Inner(lr=3e-4, mode="sum"))


def test_a_section_given_in_part_keeps_the_fields_own_default():
    # Regression: a partial section used to start from Inner() (lr 1e-5, mode avg), dropping
    # the field's default_factory values; `tokenalign align --set policy.iterations=N` (and the
    # demo's PG loop) thereby ran sequence-placed rewards instead of PG's token guidance.
    cfg = from_dict(OuterWithOwnDefault, {"inner": {"steps": 3}})
    assert cfg.inner == Inner(lr=3e-4, steps=3, mode="sum")
    assert from_dict(OuterWithOwnDefault, {}).inner == Inner(lr=3e-4, mode="sum")
    with pytest.raises(ConfigError, match="lr must be > 0"):
        from_dict(OuterWithOwnDefault, {"inner": {"lr": -1}})


def test_align_config_in_part_keeps_pg_policy_defaults():
    from tokenalign.jobs.align import AlignConfig

    cfg = from_dict(AlignConfig, {"policy": {"iterations": 7}, "guidance": {"learn": {"epochs": 3}}})
    assert cfg.policy.iterations == 7 and cfg.policy.objective == "reinforce"
    assert cfg.policy.reward.source == "guidance" and cfg.policy.reward.placement == "token"
    assert cfg.policy.entropy_coef == 0.125 and cfg.policy.kl_coef == 0.0
    assert cfg.guidance.learn.epochs == 3 and cfg.guidance.learn.lr == 1e-4
