"""Pieces shared by the benchmark scripts: memory readings and the measure-and-report loop."""

from __future__ import annotations

import os
import resource
import sys
from typing import Callable, Iterable, List, Optional


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> int:
    """Linux: make the peak RSS (ru_maxrss) start again from the current RSS; returns that RSS,
    the base a case's peak is measured above."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_bytes()


def peak_rss_above(base: int) -> int:
    """Peak RSS of this process since the last `reset_peak_rss`, minus `base`."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base


def collect(script: str, argv: Optional[list], rows: Iterable[dict], write: Callable[[list, str, tuple], None]) -> List[dict]:
    """Gather `rows`, rewriting the report after each one so a run cut short keeps what it measured.
    `write(rows, command, load_before)` gets the command line that reproduces the run."""
    command = " ".join(["python", f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])])
    load_before = os.getloadavg()
    done: List[dict] = []
    for row in rows:
        done.append(row)
        write(done, command, load_before)
    return done
