"""Shared fixtures: tiny models built from configs and saved/loaded with save_pretrained, so the
real loading code runs; small generated data; an isolated zoo cache per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from unified_opd.domains.text.zoo import arith


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    os.environ["UOPD_HOME"] = str(tmp_path_factory.mktemp("uopd_home"))
    torch.set_num_threads(2)


def save_tiny_lm(path: Path, hidden: int = 32, layers: int = 1, seed: int = 0, tok=None, vocab_extra: int = 0):
    tok = tok or arith.build_tokenizer()
    torch.manual_seed(seed)
    spec = arith.ModelSpec(hidden=hidden, layers=layers, heads=2, steps=0)
    model = spec.build(tok)
    if vocab_extra:
        model.resize_token_embeddings(len(tok) + vocab_extra)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory):
    """A tiny student, a slightly larger teacher briefly trained on arith, and arith data files."""
    root = tmp_path_factory.mktemp("tiny_text")
    tok = arith.build_tokenizer()
    train, held = arith.make_splits(n_train=3000, n_eval=64, seed=1, max_digits=2)
    for name, recs in (("train.jsonl", train), ("eval.jsonl", held)):
        with open(root / name, "w") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
    save_tiny_lm(root / "student", hidden=32, layers=1, seed=0, tok=tok)
    torch.manual_seed(1)
    spec = arith.ModelSpec(hidden=64, layers=2, heads=2, steps=30, batch=32, lr=3e-3)
    teacher = spec.build(tok)
    arith.train_supervised(teacher, tok, train, spec, seed=1, label="test-teacher")
    teacher.save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    return root


def text_overrides(root: Path, out: Path, **extra) -> list:
    base = {
        "student.path": root / "student",
        "teacher.path": root / "teacher",
        "data.path": root / "train.jsonl",
        "data.eval_path": root / "eval.jsonl",
        "rollout.batch_size": 8,
        "rollout.num_samples": 2,
        "rollout.max_new_tokens": 4,
        "trainer.max_steps": 6,
        "trainer.lr": 3e-3,
        "trainer.output_dir": out,
        "trainer.save_every": 3,
        "eval.size": 32,
        "eval.batch_size": 32,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
