"""The text student: any Hugging Face causal LM (the teacher is `unified_opd.domains.lm.LMTeacher`)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional, Sequence

from unified_opd.domains.lm import LMPolicy, Sampling
from unified_opd.rollout import Rollout

from .generation import generate_rollout
from .views import ViewFn, privileged_view


class TextPolicy(LMPolicy):
    """Student causal LM: samples completions with the KV-cache sampler, scores them with one forward pass."""

    def __init__(self, lm, tokenizer, data_cfg, sampling: Sampling, lazy: bool = True, teacher_view: Optional[ViewFn] = None,
                 engine=None):
        super().__init__(lm, tokenizer, lazy)
        self.engine = engine  # training rollouts' sampler when set (`rollout.engine: vllm`); evaluation keeps ours
        self.tokenizer = tokenizer
        self.data_cfg = data_cfg
        self.sampling = sampling
        self.teacher_view = teacher_view
        # a fixed rollout source (an offline teacher cache) replaces sampling during training;
        # evaluation passes its own `sampling` and always generates
        self.replay: Optional[Callable[[Sequence[Dict[str, Any]]], Rollout]] = None

    def rollout(self, batch: Sequence[Dict[str, Any]], sampling: Sampling | None = None) -> Rollout:
        if self.replay is not None and sampling is None:
            return self.replay(batch)
        engine = self.engine if sampling is None else None
        with engine.serving(self.rollout_weights) if engine else nullcontext():
            r = generate_rollout(self.lm, self.tokenizer, batch, self.data_cfg, sampling or self.sampling, engine)
        if self.teacher_view is not None:
            r.teacher_view = privileged_view(self.tokenizer, r.meta["records"], r, self.data_cfg, self.teacher_view)
        return r
