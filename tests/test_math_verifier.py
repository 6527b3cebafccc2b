"""The `math` verifier (data.verifier=math): GSM8K / MATH-style answers graded as values, and the
clear start-up error when its package (math-verify, the extra `math`) is not installed."""

from __future__ import annotations

import importlib.util

import pytest

from unified_opd.config import load_config
from unified_opd.data import verify
from unified_opd.domain import get_domain, schema_for
from unified_opd.errors import ConfigError

EQUAL = [
    (r"so the answer is \boxed{3/4}", "3/4"),
    (r"\boxed{\frac{3}{4}}", "3/4"),
    ("0.75", "3/4"),
    ("1,000", "1000"),
    ("She earns $18.", "18"),
    ("The ribbon is 12 cm long.", "12"),
    ("Janet sells 16 - 3 - 4 = 9 eggs, so 9 * 2 = 18.\n#### 18", "18"),
    ("18", "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = <<9*2=18>>$18 every day.\n#### 18"),
    (r"\boxed{1,000}", "#### 1000"),
]
DIFFERENT = [
    (r"\boxed{3/4}", "4/3"),
    ("0.7", "3/4"),
    ("1,001", "1000"),
    ("The answer is 17.", "#### 18"),
    ("I do not know", "42"),
    ("", "42"),
]


@pytest.mark.parametrize("completion,answer", EQUAL)
def test_equal_answers_are_accepted(completion, answer):
    pytest.importorskip("math_verify")
    assert verify("math", [completion], [answer]) == [1.0]


@pytest.mark.parametrize("completion,answer", DIFFERENT)
def test_different_answers_are_rejected(completion, answer):
    pytest.importorskip("math_verify")
    assert verify("math", [completion], [answer]) == [0.0]


def test_a_record_without_an_answer_has_no_outcome():
    assert verify("math", ["42"], [None]) == [None]


def _check(overrides):
    cfg = load_config("configs/text/opd_arith.yaml", list(overrides), schema_for)
    get_domain(cfg.domain).check(cfg)


def test_math_verifier_without_its_package_is_a_config_error_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.setenv("UOPD_HOME", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "math_verify" else real(name, *a))
    with pytest.raises(ConfigError, match=r"data\.verifier.*math-verify.*pip install math-verify"):
        _check(["data.verifier=math"])
    assert not any(tmp_path.iterdir())  # nothing built or loaded before the error


def test_math_verifier_passes_the_check_when_installed(tmp_path, monkeypatch):
    pytest.importorskip("math_verify")
    monkeypatch.setenv("UOPD_HOME", str(tmp_path))
    _check(["data.verifier=math"])
