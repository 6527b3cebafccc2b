"""Smoke run of `benchmarks/divergence.py --quick`: the script works end to end, and our lazy
path's values and gradients equal dense logits when it takes several chunks."""

from __future__ import annotations

from pathlib import Path

from unified_opd import distributions

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_divergence_benchmark_quick(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    # the correctness check runs in this process: small chunks make it span 4 and 16 of them
    monkeypatch.setattr(distributions, "CHUNK_ELEMENTS", 16 * 1024)
    import divergence

    # TRL is left out: importing it alone takes longer than this whole run
    rows = divergence.main(["--quick", "--repeats", "1", "--methods", "ours", "--out", str(tmp_path)])
    assert len(rows) == 2 * 3
    for row in rows:
        assert row["errors"]["ours"] < 1e-4
        assert row["ours"]["peak_mb"] > 0 and row["dense"]["peak_mb"] > 0
    assert "| 4096 | jsd |" in (tmp_path / "divergence.md").read_text()
