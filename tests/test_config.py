"""Config loading: unknown keys, wrong types, missing values and bad overrides name the key."""

from __future__ import annotations

import pytest

from unified_opd.config import load_config
from unified_opd.domain import schema_for
from unified_opd.errors import ConfigError

BASE = ["student.path=s", "teacher.path=t", "data.path=d"]


def test_shipped_configs_load():
    for path in ("configs/text/opd_arith.yaml", "configs/text/full_vocab_arith.yaml"):
        cfg = load_config(path, [], schema_for)
        assert cfg.student.path.startswith("zoo:")
    cfg = load_config("configs/text/opd_arith.yaml", ["divergence.name=jsd", "trainer.max_steps=7"], schema_for)
    assert cfg.divergence.name == "jsd" and cfg.trainer.max_steps == 7


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_stepz=3"], r"trainer\.max_stepz: unknown config key"),
        (["trainer.max_steps=lots"], r"trainer\.max_steps: expected int, got 'lots'"),
        (["rollout.temperature=hot"], r"rollout\.temperature: expected float"),
        (["trainer.max_steps"], r"expected dotted\.key=value"),
        (["studnt.path=x"], r"studnt: unknown config key"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, BASE + overrides, schema_for)


def test_missing_required_value():
    with pytest.raises(ConfigError, match=r"student\.path: required value is missing"):
        load_config(None, ["teacher.path=t", "data.path=d"], schema_for)


def test_unknown_domain_suggests():
    with pytest.raises(ConfigError, match="did you mean 'text'"):
        load_config(None, ["domain=txt"], schema_for)


def test_yaml_unknown_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("student:\n  path: a\n  lr: 3\n")
    with pytest.raises(ConfigError, match=r"student\.lr: unknown config key"):
        load_config(str(p), [], schema_for)
