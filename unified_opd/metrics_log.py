"""Where a run's metrics go: `metrics.jsonl` (one JSON object per logged step) and TensorBoard
when it is installed and `trainer.tensorboard` is on (only the main process writes); the phase
timer and the progress bar."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Dict

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class MetricsLog:
    def __init__(self, out: Path, enabled: bool, tensorboard: bool):
        self.out, self.enabled, self._want_tb = Path(out), enabled, tensorboard
        self._tb = None

    def write(self, step: int, metrics: Dict[str, float]) -> None:
        if not self.enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._tb is None and self._want_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb:
            self._tb.close()


class PhaseTimer:
    """Seconds spent per phase (rollout, teacher, update), in the current step and in all.

    `with timer("rollout"): ...`; with `sync_cuda` the GPU is synchronised around each phase so
    the times are exact (only when profiling: it stalls the pipeline)."""

    def __init__(self, sync_cuda: bool = False):
        self.sync_cuda = sync_cuda
        self.total: Dict[str, float] = defaultdict(float)
        self.this_step: Dict[str, float] = defaultdict(float)

    def new_step(self) -> None:
        self.this_step = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        if self.sync_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync_cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            self.total[phase] += dt
            self.this_step[phase] += dt


def progress_bar(show: bool, console: Console) -> Progress:
    """The training progress bar (main process only); `info` shows `progress_info`."""
    columns = [TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}")]
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not show)


def progress_info(m: Dict[str, float]) -> str:
    info = f"loss {m.get('loss', 0):.4f} kl {m.get('kl', 0):.4f}"
    return info + (f" reward {m['reward']:.3f}" if "reward" in m else "")
