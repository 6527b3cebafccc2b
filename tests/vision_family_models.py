"""Tiny image-text models of every supported family, built from configs and written with
save_pretrained (imported by tests/test_vision_families.py). Each is untrained, with widths of
16-32, over the finedetail vocabulary; `build(model_type, path)` writes model and processor."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import pytest
import torch
from tokenizers import pre_tokenizers
from transformers import (
    Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor, Idefics3Config,
    Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor, LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration, LlavaOnevisionImageProcessorPil, PaliGemmaConfig, PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor, SiglipImageProcessorPil, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil,
)

from unified_opd.domains.lm.tiny import SPECIALS as LM_SPECIALS
from unified_opd.domains.lm.tiny import word_level_tokenizer
from unified_opd.domains.vision.processors import IMAGE_ONLY
from unified_opd.domains.vision.zoo import finedetail_data as finedetail
from unified_opd.domains.vision.zoo.tiny import ROLES, TinySpec, chat_template, save_tiny
from unified_opd.domains.vision.zoo.tiny_qwen import QwenSpec, save_tiny_qwen

WORDS = finedetail.WORDS


def _qwen(model_type: str) -> Callable[[Path], None]:
    # 4 px patches merged 2x2: an 8 px token; 64 px images -> 64 tokens, smaller crops fewer
    return lambda path: save_tiny_qwen(path, QwenSpec(model_type=model_type, max_pixels=48 * 48), WORDS)


def _llava(path: Path) -> None:
    save_tiny(path, TinySpec(image_size=16, patch_size=8, vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=1, heads=2), WORDS)


def _tokenizer(specials, **extra):
    """The finedetail words, the chat roles and `specials` as single tokens, `<s>` prepended."""
    vocab = {w: i for i, w in enumerate(dict.fromkeys([*LM_SPECIALS, *specials, *ROLES, *WORDS]))}
    return word_level_tokenizer(vocab, pre_tokenizers.WhitespaceSplit(), extra_special_tokens=extra)


def _siglip(image_size: int, patch_size: int) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=image_size, patch_size=patch_size)


def _text(tok, **extra) -> dict:
    return dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **extra,
    )


def _save(path: Path, model, processor) -> None:
    model.save_pretrained(path)
    processor.save_pretrained(path)


def _onevision(path: Path) -> None:
    # anyres tiling: a 16 px base view plus 16 px tiles of the grid pinpoint that fits the image
    tok = _tokenizer(["<image>", "<video>"], image_token="<image>", video_token="<video>")
    images = LlavaOnevisionImageProcessorPil(
        size={"height": 16, "width": 16}, crop_size={"height": 16, "width": 16}, image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]],
    )
    processor = IMAGE_ONLY["llava_onevision"](
        image_processor=images, tokenizer=tok, video_processor=None, num_image_tokens=4, vision_feature_select_strategy="full",
        chat_template=chat_template("<image>"),
    )
    config = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", **_siglip(16, 8)}, text_config={"model_type": "qwen2", **_text(tok)},
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=[[16, 32], [32, 16], [32, 32]], vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_4",
    )
    _save(path, LlavaOnevisionForConditionalGeneration(config), processor)


IDEFICS_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", "<video>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]


def _idefics(model_type: str) -> Callable[[Path], None]:
    # image splitting: a 32 px image becomes 2x2 tiles of 16 px plus the 16 px global view
    def save(path: Path) -> None:
        if model_type == "smolvlm":
            pytest.importorskip("num2words")  # SmolVLM's processor spells numbers with it
        tok = _tokenizer(IDEFICS_TOKENS, image_token="<image>", fake_image_token="<fake_token_around_image>", global_image_token="<global-img>")
        image_class, processor_class, config_class, model_class = {
            "idefics3": (Idefics3ImageProcessorPil, Idefics3Processor, Idefics3Config, Idefics3ForConditionalGeneration),
            "smolvlm": (SmolVLMImageProcessorPil, IMAGE_ONLY["smolvlm"], SmolVLMConfig, SmolVLMForConditionalGeneration),
        }[model_type]
        images = image_class(do_image_splitting=True, size={"longest_edge": 32}, max_image_size={"longest_edge": 16})
        video = {"video_processor": None} if model_type == "smolvlm" else {}
        processor = processor_class(image_processor=images, tokenizer=tok, image_seq_len=4, chat_template=chat_template("<image>"), **video)
        config = config_class(
            vision_config=_siglip(16, 4), text_config={"model_type": "llama", **_text(tok)}, scale_factor=2,
            image_token_id=tok.convert_tokens_to_ids("<image>"),
        )
        _save(path, model_class(config), processor)

    return save


def _paligemma(path: Path) -> None:
    tok = _tokenizer(["<image>"], image_token="<image>")
    images = SiglipImageProcessorPil(size={"height": 16, "width": 16})
    images.image_seq_length = 4
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tok)
    config = PaliGemmaConfig(
        vision_config={**_siglip(16, 8), "projection_dim": 32}, text_config={"model_type": "gemma", **_text(tok, head_dim=16)},
        image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=32, hidden_size=32,
    )
    _save(path, PaliGemmaForConditionalGeneration(config), processor)


def _gemma3(path: Path) -> None:
    tok = _tokenizer(["<start_of_image>", "<end_of_image>", "<image_soft_token>"],
                     boi_token="<start_of_image>", eoi_token="<end_of_image>", image_token="<image_soft_token>")
    images = Gemma3ImageProcessorPil(size={"height": 16, "width": 16})
    processor = Gemma3Processor(image_processor=images, tokenizer=tok, image_seq_length=4, chat_template=chat_template("<start_of_image>"))
    config = Gemma3Config(
        vision_config=_siglip(16, 4), text_config=_text(tok, head_dim=16, query_pre_attn_scalar=16, sliding_window=8),
        mm_tokens_per_image=4, boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"), image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
    )
    _save(path, Gemma3ForConditionalGeneration(config), processor)


BUILDERS: Dict[str, Callable[[Path], None]] = {
    "qwen2_vl": _qwen("qwen2_vl"),
    "qwen2_5_vl": _qwen("qwen2_5_vl"),
    "qwen3_vl": _qwen("qwen3_vl"),
    "llava": _llava,
    "llava_onevision": _onevision,
    "idefics3": _idefics("idefics3"),
    "smolvlm": _idefics("smolvlm"),
    "paligemma": _paligemma,
    "gemma3": _gemma3,
}


def build(model_type: str, path: Path) -> Path:
    torch.manual_seed(0)
    BUILDERS[model_type](path)
    return path
