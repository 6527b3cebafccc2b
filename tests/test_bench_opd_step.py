"""`benchmarks/opd_step.py --profile`: our trainer's steps under cProfile, written as a table whose
top rows include the rollout (sampler) and the training step."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_profile_writes_the_step_breakdown(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import opd_step

    opd_step.main(["--profile", "sampled", "--steps", "3", "--work", str(tmp_path / "work"), "--out", str(tmp_path)])
    md = (tmp_path / "opd_step_profile.md").read_text()
    assert "3 steps after 2 warm-up steps" in md
    assert "train_step" in md and "sampler.py" in md and "ncalls" in md
