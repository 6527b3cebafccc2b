"""Smoke run of `benchmarks/scaling.py --quick`: every sweep runs end to end, the base point is
measured once, and the report has a growth exponent per axis."""

from __future__ import annotations

import math
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_scaling_benchmark_quick(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import scaling

    assert abs(scaling.slope([1, 2, 4], [3, 6, 12]) - 1.0) < 1e-9
    assert abs(scaling.slope([1, 2, 4], [1, 4, 16]) - 2.0) < 1e-9
    rows = scaling.main(["--quick", "--repeats", "1", "--out", str(tmp_path)])
    assert len(rows) == 3 + 3 + 3 + 2
    for row in rows:
        assert row["seconds"] > 0 and row["peak_mb"] > 0
    base = [r for r in rows if (r["T"], r["B"], r["V"], r["K"]) == (16, 2, 256, 1)]
    assert len(base) == 4 and len({r["seconds"] for r in base}) == 1  # one measurement, shared
    md = (tmp_path / "scaling.md").read_text()
    for axis in ("sequence length T", "batch B", "vocabulary V", "teachers K"):
        assert f"| {axis} |" in md
    assert not math.isnan(scaling.growth(rows, "V", "seconds"))
