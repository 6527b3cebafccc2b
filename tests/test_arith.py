"""The built-in `arith` task: padded problems with correct reversed answers, disjoint splits, and
the zoo's accuracy-based stop for the student."""

from __future__ import annotations

import random

import pytest

from unified_opd.domains.text.zoo import arith


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_problems_are_padded_and_answers_are_reversed_results(op):
    rng = random.Random(0)
    for _ in range(300):
        p = arith.make_problem(rng, op, max_digits=2)
        a, b = p["prompt"].rstrip("=").split(arith.OPS[op])
        assert len(a) == 2 and len(b) == (1 if op == "mul" else 2), p
        value = {"add": int(a) + int(b), "sub": int(a) - int(b), "mul": int(a) * int(b)}[op]
        assert value >= 0 and p["answer"] == str(value)[::-1], p
        assert p["task"] == op


def test_splits_are_disjoint():
    train, held = arith.make_splits(n_train=2000, n_eval=100, seed=3)
    assert len({r["prompt"] for r in held}) == 100
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}


def test_student_stops_at_the_first_probe_that_reaches_the_accuracy(monkeypatch):
    readings = iter([0.10, 0.20, 0.30, 0.90])
    monkeypatch.setattr(arith, "greedy_accuracy", lambda *a, **k: next(readings))
    tok = arith.build_tokenizer()
    spec = arith.ModelSpec(hidden=32, layers=1, heads=2, steps=100, batch=8, stop_accuracy=0.25, check_every=5)
    train, _ = arith.make_splits(n_train=200, n_eval=10, seed=0)
    steps = arith.train_supervised(spec.build(tok), tok, train, spec, seed=0, label="test", probe=train[:10])
    assert steps == 15  # checks at 5 (0.1), 10 (0.2), 15 (0.3 >= 0.25)


def test_accuracy_stop_without_probe_problems_is_an_error():
    tok = arith.build_tokenizer()
    spec = arith.ModelSpec(hidden=32, layers=1, heads=2, steps=10, batch=8, stop_accuracy=0.25)
    train, _ = arith.make_splits(n_train=50, n_eval=5, seed=0)
    with pytest.raises(ValueError, match="stop_accuracy needs probe"):
        arith.train_supervised(spec.build(tok), tok, train, spec, seed=0, label="test")
