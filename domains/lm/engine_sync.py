"""What the vLLM rollout engines share (in-process `VLLMEngine`, served `ServerEngine`): when the
trained weights go into the engine, and the `sampler.sample` layout of their completions."""

from __future__ import annotations

import abc

from contextlib import contextmanager
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

Weights = Union[nn.Module, Mapping[str, Tensor]]  # a live module, or an asynchronous rollout's snapshot


def weights_state(weights: Weights) -> Mapping[str, Tensor]:
    """Name -> tensor in the checkpoint's names (what `save_pretrained` writes and vLLM loads)."""
    return weights.state_dict() if isinstance(weights, nn.Module) else weights


class SyncedEngine(abc.ABC):
    """Weights synced on a schedule: before the first training rollout and every `sync_every`-th
    after it; a snapshot already loaded is not synced again. Subclasses implement `sync`, and
    `wake`/`rest` when the engine frees memory between rollouts."""

    def __init__(self, sync_every: int, is_cap: Optional[float]):
        self.sync_every, self.is_cap = sync_every, is_cap
        self.rollouts = 0
        self.loaded: Optional[Mapping[str, Tensor]] = None  # the snapshot last synced

    @contextmanager
    def serving(self, weights: Weights) -> Iterator[None]:
        """One training rollout (however many `sample` calls it makes), with `weights` synced on schedule."""
        self.wake()
        if self.rollouts % self.sync_every == 0 and weights is not self.loaded:
            self.sync(weights)
            self.loaded = None if isinstance(weights, nn.Module) else weights
        self.rollouts += 1
        try:
            yield
        finally:
            self.rest()

    @abc.abstractmethod
    def sync(self, weights: Weights) -> None:
        """Load `weights` (the live model or a snapshot) into the engine."""

    def wake(self) -> None:
        """Before a rollout (an engine asleep between rollouts wakes up)."""

    def rest(self) -> None:
        """After a rollout."""


def pack_completions(input_ids: Tensor, tokens: Sequence[List[int]], logps: Sequence[List[float]], pad_id: int) -> Tuple[Tensor, Tensor]:
    """Completions right-padded with `pad_id` after the prompts; their log-probs at the positions that predict them."""
    b, p = input_ids.shape
    new = max(1, max(len(t) for t in tokens))
    gen = torch.full((b, new), pad_id, dtype=input_ids.dtype)
    engine_logp = torch.zeros(b, p - 1 + new)
    for row, (ids, lp) in enumerate(zip(tokens, logps)):
        gen[row, : len(ids)] = torch.tensor(ids, dtype=input_ids.dtype)
        engine_logp[row, p - 1 : p - 1 + len(lp)] = torch.tensor(lp)
    return torch.cat([input_ids, gen.to(input_ids.device)], 1), engine_logp.to(input_ids.device)
