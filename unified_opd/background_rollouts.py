"""Asynchronous rollouts (`rollout.max_staleness: k > 0`): one background thread samples the
next steps' rollouts while the current step scores and updates.

Every rollout is submitted from the training thread with the data stream's next batch and a
snapshot of the student's weights as they are at that step (`Policy.snapshot`), and sampled in
the background from that snapshot (`Policy.rollout_from`), never from the weights the optimiser is
changing. The queue holds `k · grad_accum` rollouts beyond the one being consumed, so a rollout
consumed at step t was sampled with the weights of step t − s, 0 ≤ s ≤ k (`staleness`). The
engine's log-probs of the sampled tokens (`meta["engine_logprobs"]`) come from that snapshot, so
the truncated importance weights correct the lag as they correct the engine mismatch.

Randomness: the worker reseeds the global torch generator before each rollout with a seed drawn,
in submission order, from a generator of its own (seeded by `trainer.seed` and the start step), so
a run repeats itself whatever the threads' timing, as long as the training thread draws nothing
from the global generator while a rollout is sampled (`paused()` around evaluations, which restore it).

Checkpoints: `data_state()` is the data stream's position before the oldest rollout not yet
consumed, so a resumed run draws the in-flight batches again and samples them from the restored
weights: the rollouts in flight at a checkpoint are dropped and regenerated, and a resumed run is
not bit-identical to an uninterrupted one (k = 0, `LiveRollouts`, is).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from . import fsdp
from .data import DataStream
from .interfaces import Policy
from .rollout import Rollout


def rollout_source(cfg: DictConfig, policy: Policy, data: DataStream, start_step: int):
    """Where the trainer's rollouts come from: sampled in the background when the domain's
    `rollout.max_staleness` is above 0, otherwise from the live module at each step."""
    staleness = OmegaConf.select(cfg, "rollout.max_staleness", default=0)
    if staleness:
        return BackgroundRollouts(policy, data, staleness, cfg.trainer.grad_accum, cfg.trainer.seed, start_step)
    return LiveRollouts(policy, data)


class LiveRollouts:
    """The synchronous default: each step samples from the weights it is about to update."""

    def __init__(self, policy: Policy, data: DataStream):
        self.policy, self.data = policy, data

    def next(self, step: int) -> Rollout:
        self.policy.module.eval()
        with torch.no_grad(), fsdp.gathered(self.policy.module):
            rollout = self.policy.rollout(self.data.next())
        self.policy.module.train()
        return rollout

    def data_state(self) -> Dict[str, int]:
        return self.data.state()

    def paused(self):
        return nullcontext()

    def close(self) -> None:
        """Nothing runs in the background to stop."""


@dataclass
class _Pending:
    result: Future
    weights_step: int  # the training step whose weights sample it
    data_state: Dict[str, int]  # the data stream's position before its batch was drawn


class BackgroundRollouts:
    """Rollouts sampled ahead in one background thread, at most `max_staleness` steps behind."""

    def __init__(self, policy: Policy, data: DataStream, max_staleness: int, per_step: int, seed: int, start_step: int):
        self.policy, self.data = policy, data
        self.ahead = max_staleness * per_step
        self.seeds = torch.Generator().manual_seed(seed * 1_000_003 + start_step)
        self.queue: Deque[_Pending] = deque()
        self.snapshot: Any = None
        self.snapshot_step = -1
        self.busy = threading.Lock()  # held while a rollout is sampled
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollouts")

    def next(self, step: int) -> Rollout:
        """The next rollout, its staleness (steps between its weights and `step`'s) in
        `meta["staleness"]`; tops the queue up first, so the rollouts after it are sampled while
        the caller trains on it."""
        if step != self.snapshot_step:
            self.snapshot, self.snapshot_step = self.policy.snapshot(), step
        while len(self.queue) < self.ahead + 1:
            before = self.data.state()
            batch = self.data.next()
            seed = int(torch.randint(0, 2**62, (1,), generator=self.seeds))
            job = self.worker.submit(self._sample, batch, self.snapshot, seed)
            self.queue.append(_Pending(job, step, before))
        pending = self.queue.popleft()
        rollout = pending.result.result()
        rollout.meta["staleness"] = step - pending.weights_step
        return rollout

    def _sample(self, batch, snapshot, seed: int) -> Rollout:
        with self.busy, torch.no_grad():
            torch.manual_seed(seed)
            return self.policy.rollout_from(batch, snapshot)

    def data_state(self) -> Dict[str, int]:
        """Where a resumed run's data stream starts: before the oldest batch not yet trained on."""
        return self.queue[0].data_state if self.queue else self.data.state()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No rollout is being sampled inside (the one running finishes first; the next waits)."""
        with self.busy:
            yield

    def close(self) -> None:
        """Drop the rollouts not started and wait for the one running."""
        for pending in self.queue:
            pending.result.cancel()
        self.queue.clear()
        self.worker.shutdown(wait=True)
