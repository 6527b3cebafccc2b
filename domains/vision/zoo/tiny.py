"""Tiny LLaVA-style models built from configs (no downloads): a word-level tokenizer made with
the `tokenizers` library, a CLIP image processor, a `LlavaProcessor` with a chat template, and a
`LlavaForConditionalGeneration` with a CLIP vision tower and a Llama text model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tokenizers import pre_tokenizers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from unified_opd.domains.lm.tiny import SPECIALS as LM_SPECIALS
from unified_opd.domains.lm.tiny import tiny_llama_config, word_level_tokenizer

SPECIALS = [*LM_SPECIALS, "<image>"]
ROLES = ["USER:", "ASSISTANT:", "SYSTEM:"]


def chat_template(image_part: str) -> str:
    """user turn = "USER: <image part> question ASSISTANT:"; the answer follows, then </s>."""
    return (
        "{% for m in messages %}"
        "{% if m['role'] == 'system' %}SYSTEM: {% for c in m['content'] %}{{ c['text'] }} {% endfor %}"
        "{% elif m['role'] == 'user' %}USER: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}" + image_part + " {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
        "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }} {% endfor %}</s> {% endif %}"
        "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )


CHAT_TEMPLATE = chat_template("<image>")


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer over `words` (one token each), `<s>` prepended."""
    vocab = {w: i for i, w in enumerate(dict.fromkeys([*SPECIALS, *ROLES, *words]))}
    return word_level_tokenizer(vocab, pre_tokenizers.WhitespaceSplit(), extra_special_tokens={"image_token": "<image>"})


def build_processor(tokenizer: PreTrainedTokenizerFast, image_size: int, patch_size: int) -> LlavaProcessor:
    """CLIP-normalised square inputs of `image_size` px; one image token per patch (CLS dropped)."""
    images = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


@dataclass
class TinySpec:
    image_size: int = 32
    patch_size: int = 4
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    heads: int = 4
    # weight init std of every linear/embedding (transformers' default 0.02 is sized for wide
    # models; at width 64 it shrinks each projection ~6x, so the image path starts near zero)
    init_std: float = 0.02

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def tokenizer(self, words: Sequence[str]) -> PreTrainedTokenizerFast:
        return build_tokenizer(words)

    def processor(self, tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
        return build_processor(tokenizer, self.image_size, self.patch_size)

    def build(self, tokenizer: PreTrainedTokenizerFast) -> LlavaForConditionalGeneration:
        vision = CLIPVisionConfig(
            hidden_size=self.vision_hidden,
            intermediate_size=2 * self.vision_hidden,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            initializer_range=self.init_std,
        )
        text = tiny_llama_config(
            tokenizer, self.text_hidden, self.text_layers, self.heads, self.image_tokens + 64, ffn_ratio=2,
            initializer_range=self.init_std,
        )
        cfg = LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            image_seq_length=self.image_tokens,
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
            pad_token_id=tokenizer.pad_token_id,
        )
        return LlavaForConditionalGeneration(cfg)


def save_tiny(path, spec: TinySpec, words: Sequence[str], seed: int = 0) -> None:
    """An untrained tiny model with its processor, written with `save_pretrained`."""
    torch.manual_seed(seed)
    tok = build_tokenizer(words)
    spec.build(tok).save_pretrained(path)
    build_processor(tok, spec.image_size, spec.patch_size).save_pretrained(path)
