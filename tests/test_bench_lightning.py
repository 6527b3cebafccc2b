"""Smoke run of `benchmarks/lightning.py --quick` on the tiny test models: the cache is written,
every case trains in turn and is evaluated, and the report has a throughput ratio and memory per case."""

from __future__ import annotations

from pathlib import Path

from conftest import text_overrides

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PATHS = ("student.path", "teacher.path", "data.path", "data.eval_path")


def test_lightning_benchmark_quick(tiny_text, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import lightning

    paths = [o for o in text_overrides(tiny_text, tmp_path) if o.split("=")[0] in PATHS]
    extra = [*paths, "rollout.max_new_tokens=4", "eval.batch_size=8"]
    rows = lightning.main(["--quick", "--out", str(tmp_path / "docs"), "--out-runs", str(tmp_path / "runs"), "--set", *extra])
    last = rows[-1]
    assert last["step"] == 4 and len(rows) == 2  # evaluated at steps 2 and 4
    for case in ("online", "lightning"):
        assert len(last["times"][case]) == 4 and all(t > 0 for t in last["times"][case])
        assert [s for s, _ in last["curve"][case]] == [0, 2, 4]
    md = (tmp_path / "docs" / "lightning.md").read_text()
    assert "| Lightning OPD (cache, top-8 analytic) |" in md and "Cache write (" in md
    assert (tmp_path / "runs" / "cache" / "manifest.json").is_file()
