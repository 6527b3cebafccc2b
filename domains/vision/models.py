"""Loading image-text-to-text models with their processors, and checking they fit together."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedModel

from unified_opd.domains.lm import load_pretrained, model_dir, prepare_tokenizer, weights_options
from unified_opd.errors import UserError

from .families import family_of
from .processors import load_processor

LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError)


def load_vision_lm(path: str, dtype: str, trust_remote_code: bool, field: str) -> Tuple[PreTrainedModel, Any]:
    """Load an `AutoModelForImageTextToText` and its processor; errors name `field`. The model
    type must be a known family (`families.FAMILIES`), checked from config.json before any weights load."""
    local = model_dir(path, dtype, field)
    what = "an image-text model"
    model_type = load_pretrained(AutoConfig, local, field, what, LOAD_ERRORS, trust_remote_code=trust_remote_code).model_type
    family_of(model_type, f"{field}.path")
    processor = load_processor(local, model_type, field, LOAD_ERRORS, trust_remote_code)
    model = load_pretrained(AutoModelForImageTextToText, local, field, what, LOAD_ERRORS, **weights_options(dtype, trust_remote_code))
    if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
        raise UserError(f"{field}.path: {local} has no multimodal processor (a tokenizer and an image processor)")
    prepare_tokenizer(processor.tokenizer)
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
    # Gemma 3's processor names its begin-of-image token image_token; the placeholder the model
    # fills with image features is its tokenizer's image token
    ours = getattr(processor.tokenizer, "image_token_id", None) or getattr(processor, "image_token_id", None)
    theirs = image_token_id(model)
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
