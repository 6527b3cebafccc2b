"""`rollout.engine: hf` with asynchronous rollouts (`rollout.max_staleness` > 0): our KV-cache
sampler on a private copy of the student.

The background thread must not read the weights the optimiser is changing, so it samples with a
copy (one more model's memory) loaded from each rollout's weight snapshot. It has `VLLMEngine`'s
interface (`serving`, `sample`, `is_cap`), so the domains' rollout code is the same for both, and
like it returns log π_snapshot of each sampled token: the behaviour policy's log-probs, which the
truncated importance weights compare with the current weights' (the policy lag).
"""

from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .engine_sync import SyncedEngine, Weights, weights_state
from .sampler import EosIds, Sampling, completion_mask, sample
from .scoring import HiddenStates, view_distribution
from .stopping import stop_string_check


class SnapshotEngine(SyncedEngine):
    """Samples with a copy of the student whose weights are each rollout's snapshot (`LMPolicy.snapshot`)."""

    def __init__(self, lm: nn.Module, tokenizer, is_cap: Optional[float]):
        super().__init__(sync_every=1, is_cap=is_cap)
        self.lm = copy.deepcopy(lm).eval().requires_grad_(False)
        self.scorer = HiddenStates(self.lm)
        self.tokenizer = tokenizer

    def sync(self, weights: Weights) -> None:
        self.lm.load_state_dict(weights_state(weights))

    @torch.no_grad()
    def sample(self, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int, eos_id: EosIds, pad_id: int,
               sampling: Sampling) -> Tuple[Tensor, Tensor]:
        """`sampler.sample`'s output `[B, P + new]` and log π_snapshot of every next token `[B, P + new − 1]`
        (the caller masks it to the completion)."""
        seq = sample(
            self.lm, input_ids, attention_mask, max_new_tokens, eos_id, pad_id, temperature=sampling.temperature,
            top_k=sampling.top_k, top_p=sampling.top_p, greedy=sampling.greedy,
            stopped=stop_string_check(self.tokenizer, sampling.stop),
        )
        p = input_ids.shape[1]
        view = {"input_ids": seq, "attention_mask": torch.cat([attention_mask, completion_mask(seq[:, p:], eos_id)], 1), "prompt_len": p}
        return seq, view_distribution(self.scorer, self.scorer, view, p).log_prob(seq[:, 1:])
