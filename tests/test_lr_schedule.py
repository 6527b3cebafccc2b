import math

import pytest
from omegaconf import OmegaConf

from unified_opd.errors import ConfigError
from unified_opd.lr_schedule import lr_lambda as _lr_lambda


def cfg(**kw):
    base = dict(warmup_steps=10, max_steps=110, lr_schedule="cosine")
    base.update(kw)
    return OmegaConf.create(base)


def test_warmup_then_cosine_by_steps():
    f = _lr_lambda(cfg())
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)  # half-way through the 100 post-warm-up steps
    assert f(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    assert f(500) == pytest.approx(0.0, abs=1e-12)


def test_linear_and_constant():
    assert _lr_lambda(cfg(lr_schedule="linear"))(35) == pytest.approx(0.75)
    assert _lr_lambda(cfg(lr_schedule="constant"))(35) == 1.0


def test_time_budget_drives_the_schedule_when_ahead_of_the_steps():
    used = {"frac": 0.0}
    f = _lr_lambda(cfg(lr_schedule="linear"), lambda: used["frac"])
    assert f(35) == pytest.approx(0.75)  # step fraction 0.25 leads
    used["frac"] = 0.6
    assert f(35) == pytest.approx(0.4)  # 60% of the time budget used
    assert f(5) == pytest.approx(0.6)  # warm-up is by steps only
    used["frac"] = 1.3
    assert f(35) == pytest.approx(0.0)


def test_unknown_schedule_names_the_key():
    with pytest.raises(ConfigError, match="trainer.lr_schedule"):
        _lr_lambda(cfg(lr_schedule="exp"))
