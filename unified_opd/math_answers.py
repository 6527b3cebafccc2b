"""The `math` verifier's engine: GSM8K / MATH-style answers compared as mathematical values.

Parsing and comparison are Hugging Face's `math-verify` (the optional extra `math`), which
normalises LaTeX (`\\boxed{}`, `\\frac`, `\\dfrac`, `\\left(`), thousands separators (`1,000`),
units and currency (`cm`, `dollars`, `$`), percent signs, a trailing period and `x = ...`
equations, then compares the values with sympy (`0.75` equals `3/4`, to 6 decimal places).
GSM8K's reference format (`reasoning ... #### 42`) is cut to the part after the last `####`,
on both sides, since a student trained on GSM8K answers in the same format.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .errors import ConfigError

INSTALL = "pip install math-verify  (or: pip install 'unified-opd[math]')"
GSM8K_MARK = "####"


def check_available(field: str = "data.verifier") -> None:
    """A ConfigError naming the package and its install command when `math-verify` is absent."""
    if importlib.util.find_spec("math_verify") is None:
        raise ConfigError(f"{field}: the math verifier needs the package math-verify, which is not installed; {INSTALL}")


def _final_answer(text: Any) -> str:
    text = str(text)
    return text.rsplit(GSM8K_MARK, 1)[1].strip() if GSM8K_MARK in text else text


def math_equal(completion: str, answer: Any) -> bool:
    """Whether the completion's final answer equals the reference answer as a value."""
    from math_verify import parse, verify

    gold = parse(_final_answer(answer))
    pred = parse(_final_answer(completion))
    return bool(gold and pred and verify(gold, pred))
