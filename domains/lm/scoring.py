"""Scoring sequences with a language model: one module call from token ids (and, for image-text
models, the image tensors) to what the loss needs, and the alignment of a view to the student's
positions.

A view is `{input_ids, attention_mask, prompt_len}` (left-padded prompt, then the completion),
plus `images` (the processor's image tensors, one row per trajectory) for image-text models.
Position p of a rollout is the prediction of token p+1.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
from transformers import PreTrainedModel

from unified_opd.distributions import Categorical
from unified_opd.lora import inner_model

from .loading import text_config


def _uses_plain_lm_head(lm: PreTrainedModel) -> bool:
    """True when logits = lm_head(hidden) exactly, so the lazy chunked projection is valid
    (multimodal configs keep logit soft-capping/scaling on the text sub-config)."""
    configs = (lm.config, text_config(lm))
    scaled = any(getattr(c, k, None) not in (None, 1.0) for c in configs for k in ("final_logit_softcapping", "logit_scale"))
    return not scaled and isinstance(lm.get_output_embeddings(), nn.Linear)


class HiddenStates(nn.Module):
    """Wraps a language model so its forward returns what the loss needs, through one module call
    (so a DDP wrapper around it synchronises gradients): the last hidden states when the lazy
    projection is valid, else the full logits."""

    def __init__(self, lm: PreTrainedModel, lazy: bool = True):
        super().__init__()
        self.lm = lm
        self.lazy = lazy and _uses_plain_lm_head(lm)

    def model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **images: torch.Tensor) -> Dict[str, Any]:
        """The model's keyword arguments; an image-text domain overrides it to lay out its image
        inputs and positions (`images`: the view's image tensors, e.g. `pixel_values`)."""
        # generate() derives positions from the attention mask; a plain forward must do the
        # same for left-padded prompts, or teacher and student score different positions
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        return dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **images)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **images: torch.Tensor) -> torch.Tensor:
        kwargs = self.model_inputs(input_ids, attention_mask, **images)
        if self.lazy:
            # under a PEFT wrapper `base_model` is PEFT's tuner, not the transformer's backbone
            return inner_model(self.lm).base_model(**kwargs).last_hidden_state
        return self.lm(**kwargs).logits

    def head(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        h = self.lm.get_output_embeddings()
        return h.weight, h.bias


def view_distribution(module: nn.Module, wrapper: HiddenStates, view: Dict[str, Any], student_prompt_len: int) -> Categorical:
    """Score a view's sequence with `module` (the `HiddenStates` `wrapper`, or a DDP wrapper of
    it) and align it to the student's positions.

    A teacher view may carry a different (e.g. privileged) prompt followed by the same
    completion; both are left-padded, so the completion starts at each view's `prompt_len` and
    student position p maps to view position p + (prompt_len_view − prompt_len_student).
    """
    out = module(view["input_ids"], view["attention_mask"], **view.get("images", {}))[:, :-1]
    shift = view["prompt_len"] - student_prompt_len
    if shift > 0:
        out = out[:, shift:]
    elif shift < 0:
        out = torch.nn.functional.pad(out, (0, 0, -shift, 0))
    if wrapper.lazy:
        weight, bias = wrapper.head()
        return Categorical.from_hidden(out, weight, bias)
    return Categorical.from_logits(out)
