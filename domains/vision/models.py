"""Loading image-text-to-text models with their processors, and checking they fit together."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Tuple

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel

from unified_opd.domains.text.models import DTYPES, HiddenStates
from unified_opd.errors import UserError
from unified_opd.zoo import resolve


def load_vision_lm(path: str, dtype: str, trust_remote_code: bool, field: str) -> Tuple[PreTrainedModel, Any]:
    """Load an `AutoModelForImageTextToText` and its `AutoProcessor`; errors name `field`."""
    local = resolve(path, f"{field}.path")
    if not Path(local).is_dir():
        raise UserError(f"{field}.path: expected a model directory, got {path}")
    if dtype not in DTYPES:
        raise UserError(f"{field}.dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        processor = AutoProcessor.from_pretrained(local, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            local, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{field}.path: cannot load an image-text model from {local}: {str(e).splitlines()[0]}") from e
    if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
        raise UserError(f"{field}.path: {local} has no multimodal processor (a tokenizer and an image processor)")
    tok = processor.tokenizer
    if tok.pad_token_id is None:
        # generation needs a pad id; reusing EOS is the usual convention and is masked out
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    check_processor(model, processor, field)
    return model, processor


def image_token_id(model: PreTrainedModel) -> Optional[int]:
    cfg = model.config
    value = getattr(cfg, "image_token_id", None)
    return getattr(cfg, "image_token_index", None) if value is None else value


def check_processor(model: PreTrainedModel, processor, field: str) -> None:
    """The processor must emit the model's image token and as many image tokens as the vision
    tower yields features: checked with one forward on a blank image (a mismatched processor
    otherwise fails deep inside the first rollout)."""
    ours, theirs = getattr(processor, "image_token_id", None), image_token_id(model)
    if ours is not None and theirs is not None and ours != theirs:
        raise UserError(
            f"{field}.path: the processor's image token id {ours} differs from the model's {theirs} (mismatched processor)"
        )
    token = getattr(processor, "image_token", None)
    if token is None:
        return
    probe = processor(text=[f"{token} ?"], images=[Image.new("RGB", (64, 64))], return_tensors="pt")
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(**{k: v.to(device) for k, v in probe.items() if isinstance(v, torch.Tensor)})
    except (ValueError, RuntimeError) as e:
        raise UserError(
            f"{field}.path: the processor's images do not fit the model (mismatched processor?): {str(e).splitlines()[0]}"
        ) from e


class VisionHiddenStates(HiddenStates):
    """`HiddenStates` for image-text models: one module call from token ids + pixels to the last
    hidden states (lazy projection) or the logits, so DDP sees one forward."""

    def __init__(self, lm: PreTrainedModel, lazy: bool = True):
        super().__init__(lm, lazy)
        # multimodal configs keep logit soft-capping/scaling on the text sub-config
        text = getattr(lm.config, "text_config", None)
        scaled = any(getattr(text, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logit_scale"))
        self.lazy = self.lazy and not scaled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **images: torch.Tensor) -> torch.Tensor:
        """`images`: the processor's image tensors (`pixel_values`, and e.g. `image_sizes`)."""
        # positions follow the attention mask, as in generate(), so left padding does not shift them
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **images)
        if self.lazy:
            return self.lm.base_model(**kwargs).last_hidden_state
        return self.lm(**kwargs).logits
