"""Smoke run of `benchmarks/divergence.py --quick`: the script works end to end, and our lazy
path's values and gradients equal dense logits when it takes several tiles."""

from __future__ import annotations

from pathlib import Path

from unified_opd import tiled

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_divergence_benchmark_quick(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    # the correctness check runs in this process: small tiles make it span 4 x 4 and 4 x 16 of them
    monkeypatch.setattr(tiled, "ROW_TILE", 16)
    monkeypatch.setattr(tiled, "VOCAB_TILE", 256)
    import divergence

    # TRL is left out: importing it alone takes longer than this whole run
    rows = divergence.main(["--quick", "--repeats", "1", "--methods", "ours", "--out", str(tmp_path)])
    assert len(rows) == 2 * 3
    for row in rows:
        assert row["errors"]["ours"] < 1e-4
        assert row["ours"]["peak_mb"] > 0 and row["dense"]["peak_mb"] > 0
    assert "| 4096 | jsd |" in (tmp_path / "divergence.md").read_text()
