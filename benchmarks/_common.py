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


def add_arith_run_args(parser, steps: int = 200) -> None:
    """The options every arith comparison shares: its budget, schedule and held-out evaluation."""
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=64, help="prompts per step (one sample each), every case")
    parser.add_argument("--lr", type=float, default=5e-4, help="every case (configs/text/opd_arith.yaml's)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up steps, every case")
    parser.add_argument("--eval-size", type=int, default=600)
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides for every case (key=value)")
    parser.add_argument("--out", default="docs/benchmarks")


def arith_overrides(args, run_dir) -> list:
    """What every case of an arith comparison shares: batch, steps, constant lr after warm-up, seed 0, no checkpoints."""
    return [
        f"rollout.batch_size={args.batch}", "rollout.num_samples=1", f"trainer.max_steps={args.steps}",
        f"trainer.lr={args.lr}", f"trainer.warmup_steps={args.warmup}", "trainer.lr_schedule=constant",
        "trainer.max_time_minutes=0", "trainer.save_every=0", "trainer.seed=0",
        f"trainer.output_dir={run_dir}", f"eval.size={args.eval_size}", "eval.teacher=false", *args.set,
    ]
