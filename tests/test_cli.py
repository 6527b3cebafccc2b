"""The `uopd` command: help, and bad input as one line on stderr with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import text_overrides


def _uopd(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "unified_opd.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_commands():
    r = _uopd("--help")
    assert r.returncode == 0
    for cmd in ("train", "eval", "zoo"):
        assert cmd in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "configs/text/opd_arith.yaml", "trainer.max_stepz=3"], "trainer.max_stepz: unknown config key"),
        (["train", "configs/text/missing.yaml"], "config: file not found"),
        (["train", "configs/text/opd_arith.yaml", "divergence.name=kl_reverse"], "divergence.name"),
        (["train", "configs/text/opd_arith.yaml", "student.path=/nonexistent/model"], "student.path: path not found"),
        (["zoo", "build", "arithmetic"], "did you mean 'arith'"),
    ],
)
def test_errors_are_one_line_exit_2(args, needle):
    r = _uopd(*args)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0]


def test_empty_data_file(tiny_text, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = _uopd("train", "configs/text/opd_arith.yaml", *text_overrides(tiny_text, tmp_path / "o", **{"data.path": empty}))
    assert r.returncode == 2 and "holds no records" in r.stderr
    assert not (tmp_path / "o").exists()


def test_train_and_eval_commands(tiny_text, tmp_path):
    ov = text_overrides(tiny_text, tmp_path / "o", **{"trainer.max_steps": 2})
    r = _uopd("train", "configs/text/opd_arith.yaml", *ov, "--profile")
    assert r.returncode == 0, r.stderr
    assert '"after"' in r.stdout and "where the step time goes" in r.stderr
    r = _uopd("eval", "configs/text/opd_arith.yaml", *ov, f"student.path={tmp_path / 'o' / 'final'}")
    assert r.returncode == 0, r.stderr
    assert '"accuracy"' in r.stdout and '"reverse_kl"' in r.stdout
