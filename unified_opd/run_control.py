"""Run control: when training stops, and what every process agrees on before deciding it.

A stop request (SIGTERM/SIGINT), the time budget (`trainer.max_time_minutes`) and a non-finite
loss each end or skip a step. Under DDP each process reads its own clock and a signal may reach
the ranks at different steps, so these decisions are taken together: the largest clock reading,
any rank's stop request and any rank's non-finite loss hold for all. Otherwise a time-budgeted
LR schedule would give the ranks different learning rates (their weights drift apart) and a rank
leaving the loop or skipping a backward alone would leave the others waiting in an all-reduce.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Dict, Optional

import torch
from rich.console import Console

console = Console(stderr=True)


class StopSignal:
    """SIGTERM/SIGINT set `requested`; the loop saves a checkpoint after the current step and exits.
    A second signal raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no handler
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        console.print(f"[yellow]signal {signum}: saving a checkpoint after this step, then stopping[/yellow]")

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class TrainClock:
    """Training wall-clock seconds, summed over resumed launches; evaluation is not counted.

    `agreed` is the reading all processes share (`RankAgreement.clock_and_stop` sets it); the
    time budget and the LR-by-time schedule read only that one.
    """

    def __init__(self, budget_minutes: float):
        self.budget = 60.0 * budget_minutes
        self.before = 0.0  # seconds of earlier launches and segments
        self.agreed = 0.0
        self._start: Optional[float] = None

    def start(self) -> None:
        self._start = time.perf_counter()

    def pause(self) -> None:
        self.before, self._start = self.seconds(), None

    def restore(self, seconds: float) -> None:
        self.before = self.agreed = float(seconds)

    def seconds(self) -> float:
        running = 0.0 if self._start is None else time.perf_counter() - self._start
        return self.before + running

    def fraction(self) -> float:
        """Share of the time budget used (0 without a budget)."""
        return self.agreed / self.budget if self.budget > 0 else 0.0

    def out_of_time(self) -> bool:
        return self.budget > 0 and self.fraction() >= 1.0


class RankAgreement:
    """Decisions every process takes together (a no-op with one process)."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.alone = accelerator.num_processes == 1

    def clock_and_stop(self, clock: TrainClock, stop_requested: bool) -> bool:
        """Set `clock.agreed` to the largest reading; returns whether any rank asked to stop."""
        seconds = clock.seconds()
        if not self.alone:
            mine = torch.tensor([seconds, float(stop_requested)], device=self.accelerator.device)
            seconds, stop = self.accelerator.gather(mine).view(-1, 2).max(0).values.tolist()
            stop_requested = stop > 0
        clock.agreed = seconds
        return stop_requested

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every process."""
        finite = bool(torch.isfinite(loss))
        if not self.alone:
            mine = torch.tensor([float(finite)], device=self.accelerator.device)
            finite = bool(self.accelerator.gather(mine).min() > 0)
        return finite
