"""Tiny Qwen-VL models built from configs (no downloads): Qwen2-VL, Qwen2.5-VL and Qwen3-VL with a
word-level tokenizer holding the vision special tokens, and the family's processor with the PIL
image processor (`Qwen2VLImageProcessorPil`; see `..processors` for why not `AutoProcessor`).

Dynamic resolution: an image is resized (aspect kept) to a multiple of `patch_size × merge_size`
with between `min_pixels` and `max_pixels` pixels; each `merge_size²` patches become one token, so
a larger image (or a crop shown at its native resolution) yields more visual tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tokenizers import pre_tokenizers
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from unified_opd.domains.lm.tiny import SPECIALS as LM_SPECIALS
from unified_opd.domains.lm.tiny import word_level_tokenizer

from ..processors import IMAGE_ONLY
from .tiny import ROLES, chat_template

# the special tokens the Qwen-VL processors read from their tokenizer (`<name>_token`)
QWEN_TOKENS = {"image": "<|image_pad|>", "video": "<|video_pad|>", "vision_start": "<|vision_start|>", "vision_end": "<|vision_end|>"}
IMAGE_PART = "<|vision_start|><|image_pad|><|vision_end|>"
MODELS = {
    "qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration),
    "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
    "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration),
}


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer over `words` plus the Qwen-VL vision tokens, `<s>` prepended."""
    vocab = {w: i for i, w in enumerate(dict.fromkeys([*LM_SPECIALS, *QWEN_TOKENS.values(), *ROLES, *words]))}
    extra = {f"{name}_token": token for name, token in QWEN_TOKENS.items()}
    return word_level_tokenizer(vocab, pre_tokenizers.WhitespaceSplit(), extra_special_tokens=extra)


@dataclass
class QwenSpec:
    model_type: str = "qwen2_vl"
    patch_size: int = 4
    merge_size: int = 2
    min_pixels: int = 16 * 16
    max_pixels: int = 64 * 64
    vision_hidden: int = 32
    text_hidden: int = 32
    layers: int = 1
    heads: int = 2
    context: int = 512
    init_std: float = 0.02

    @property
    def image_size(self) -> int:
        """The largest square input side (px) the processor gives a 64 px or larger image."""
        return int(self.max_pixels**0.5)

    def tokenizer(self, words: Sequence[str]) -> PreTrainedTokenizerFast:
        return build_tokenizer(words)

    def processor(self, tokenizer: PreTrainedTokenizerFast):
        images = Qwen2VLImageProcessorPil(
            min_pixels=self.min_pixels, max_pixels=self.max_pixels, patch_size=self.patch_size, merge_size=self.merge_size,
            temporal_patch_size=2,
        )
        processor = IMAGE_ONLY[self.model_type]
        return processor(image_processor=images, tokenizer=tokenizer, video_processor=None, chat_template=chat_template(IMAGE_PART))

    def build(self, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
        config_class, model_class = MODELS[self.model_type]
        head_dim = self.text_hidden // self.heads
        text = dict(
            vocab_size=len(tokenizer), hidden_size=self.text_hidden, intermediate_size=2 * self.text_hidden,
            num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.heads, head_dim=head_dim,
            max_position_embeddings=self.context, initializer_range=self.init_std,
            # M-RoPE: the rotary frequencies are shared out between time, height and width
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _sections(head_dim // 2)},
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
        # Qwen2-VL names the ViT width embed_dim and the merger's output hidden_size; later versions
        # name them hidden_size and out_hidden_size
        widths = (
            dict(embed_dim=self.vision_hidden, hidden_size=self.text_hidden) if self.model_type == "qwen2_vl"
            else dict(hidden_size=self.vision_hidden, out_hidden_size=self.text_hidden)
        )
        vision = dict(
            depth=self.layers, intermediate_size=2 * self.vision_hidden, **widths,
            num_heads=self.heads, patch_size=self.patch_size, spatial_merge_size=self.merge_size, temporal_patch_size=2,
            fullatt_block_indexes=[0], window_size=2 * self.patch_size * self.merge_size,
            deepstack_visual_indexes=[], num_position_embeddings=64, initializer_range=self.init_std,
        )
        ids = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(token) for name, token in QWEN_TOKENS.items()}
        return model_class(config_class(text_config=text, vision_config=vision, **ids))


def _sections(half: int) -> list:
    """`mrope_section`: `half` rotary frequency pairs split between time, height and width."""
    t = half // 4 + half % 4 // 3
    return [half - 2 * ((half - t) // 2), (half - t) // 2, (half - t) // 2]


def save_tiny_qwen(path, spec: QwenSpec, words: Sequence[str], seed: int = 0) -> None:
    """An untrained tiny Qwen-VL model with its processor, written with `save_pretrained`."""
    torch.manual_seed(seed)
    tok = build_tokenizer(words)
    spec.build(tok).save_pretrained(path)
    spec.processor(tok).save_pretrained(path)
