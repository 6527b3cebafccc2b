"""Each LM domain's `check(cfg)`: a bad value is a ConfigError naming the field, raised before any
model loads or zoo entry builds (the configs point at `zoo:` entries that are never built here)."""

from __future__ import annotations

import pytest

from unified_opd.config import load_config
from unified_opd.domain import get_domain, schema_for
from unified_opd.errors import ConfigError

TEXT = "configs/text/opd_arith.yaml"
VISION = "configs/vision/vision_opd_finedetail.yaml"
AGENT = "configs/agent/opd_keydoor.yaml"

CASES = [
    (TEXT, "rollout.temperature=0", "rollout.temperature"),
    (TEXT, "rollout.num_samples=0", "rollout.num_samples"),
    (TEXT, "data.verifier=nope", "data.verifier"),
    (TEXT, "teacher.view=nope", "teacher.view"),
    (TEXT, "data.chat_template=sometimes", "data.chat_template"),
    (VISION, "rollout.max_new_tokens=0", "rollout.max_new_tokens"),
    (VISION, "teacher.view=sideways", "teacher.view"),
    (VISION, "teacher.source=nope", "teacher.source"),
    (VISION, "teacher.ema_decay=1.5", "teacher.ema_decay"),
    (VISION, "data.on_error=ignore", "data.on_error"),
    (VISION, "teacher.crop_fn=nope", "teacher.crop_fn"),
    (VISION, "teacher.crop_margin=-1", "teacher.crop_margin"),
    (AGENT, "rollout.max_action_tokens=0", "rollout.max_action_tokens"),
    (AGENT, "rollout.max_turns=-1", "rollout.max_turns"),
    (AGENT, "rollout.temperature=-1", "rollout.temperature"),
    (AGENT, "rollout.outcome=reward", "rollout.outcome"),
    (AGENT, "rollout.chat_template=sometimes", "rollout.chat_template"),
    (AGENT, "env.train_seeds=0", "env.train_seeds"),
    (AGENT, "eval.episodes=0", "eval.episodes"),
    (AGENT, "env.eval_seed_start=5", "env.eval_seed_start"),
]


@pytest.fixture
def empty_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("UOPD_HOME", str(tmp_path))
    return tmp_path


def _check(path: str, overrides=()):
    cfg = load_config(path, list(overrides), schema_for)
    get_domain(cfg.domain).check(cfg)


@pytest.mark.parametrize("path", [TEXT, VISION, AGENT])
def test_the_shipped_configs_pass_without_building_anything(path, empty_zoo):
    _check(path)
    assert not any(empty_zoo.iterdir())


@pytest.mark.parametrize("path,override,field", CASES)
def test_a_bad_value_is_a_config_error_before_any_load(path, override, field, empty_zoo):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        _check(path, [override])
    assert not any(empty_zoo.iterdir())
