"""The agent student: a causal LM that plays episodes and scores its whole transcripts.

The teacher is the LM layer's `LMTeacher`: the agent rollout's view is a right-padded
transcript with `prompt_len = 0`, so the teacher scores every transcript in one forward pass
with the same position alignment as the student.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, Sequence

import torch
from rich.console import Console

from unified_opd.domains.lm import LMPolicy, Sampling
from unified_opd.rollout import Rollout

from .episodes import Episode, Limits, outcome, run_episodes, summarise
from .transcript import to_rollout

console = Console(stderr=True)


def episodes_rollout(episodes: Sequence[Episode], pad_id: int, device, outcome_kind: str) -> Rollout:
    """Pack played episodes into a `Rollout` (outcome per episode; decoded actions in `meta`)."""
    return to_rollout(
        [ep.transcript for ep in episodes],
        pad_id,
        device,
        outcome=torch.tensor([outcome(ep, outcome_kind) for ep in episodes], device=device),
        meta={
            "seeds": [ep.seed for ep in episodes],
            "actions": [[a for _, a in ep.history] for ep in episodes],
            "errors": [ep.error for ep in episodes],
        },
    )


class AgentPolicy(LMPolicy):
    """Student causal LM acting in `make_env()` environments, one episode per record (an env seed)."""

    def __init__(self, lm, tokenizer, fmt, make_env: Callable, sampling: Sampling, limits: Limits, outcome_kind: str, lazy: bool = True,
                 engine=None):
        super().__init__(lm, tokenizer, lazy)
        self.engine = engine  # training episodes' sampler when set (`rollout.engine: vllm`); evaluation keeps ours
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.make_env = make_env
        self.sampling = sampling
        self.limits = limits
        self.outcome_kind = outcome_kind
        self.last_metrics: Dict[str, float] = {}
        self._warned: Counter = Counter()

    def play(self, seeds: Sequence[int], sampling: Sampling | None = None, lm=None, make_env: Callable | None = None):
        """Episodes for `seeds` in `make_env()` envs (default: the training envs), acted by this
        student (or by `lm`, e.g. the teacher's model)."""
        envs = make_env or self.make_env
        return run_episodes(lm or self.lm, self.tokenizer, self.fmt, envs, seeds, sampling or self.sampling, self.limits)

    def rollout(self, batch: Sequence[int]) -> Rollout:
        if self.engine is None:
            episodes = self.play(batch)
        else:
            with self.engine.serving(self.rollout_weights):
                episodes = run_episodes(self.lm, self.tokenizer, self.fmt, self.make_env, batch, self.sampling, self.limits, self.engine)
        self.last_metrics = summarise(episodes, "episode/")
        self._warn(episodes)
        return episodes_rollout(episodes, self.tokenizer.pad_token_id, next(self.lm.parameters()).device, self.outcome_kind)

    def _warn(self, episodes: Sequence[Episode]) -> None:
        # one line per kind of failure, so a broken env is visible without flooding the log
        for ep in episodes:
            if ep.error:
                kind = ep.error.split(":")[0]
                if not self._warned[kind]:
                    console.print(f"[yellow]warning[/yellow]: episode (seed {ep.seed}) ended as failed: {ep.error}")
                self._warned[kind] += 1
