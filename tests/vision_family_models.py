"""Tiny image-text models of every supported family, built from configs and written with
save_pretrained (imported by tests/test_vision_families.py). Each is untrained, with widths of
16-32, over the finedetail vocabulary; `build(model_type, path)` writes model and processor."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import torch

from unified_opd.domains.vision.zoo import finedetail_data as finedetail
from unified_opd.domains.vision.zoo.tiny import TinySpec, save_tiny
from unified_opd.domains.vision.zoo.tiny_qwen import QwenSpec, save_tiny_qwen

WORDS = finedetail.WORDS


def _qwen(model_type: str) -> Callable[[Path], None]:
    # 4 px patches merged 2x2: an 8 px token; 64 px images -> 64 tokens, smaller crops fewer
    return lambda path: save_tiny_qwen(path, QwenSpec(model_type=model_type, max_pixels=48 * 48), WORDS)


def _llava(path: Path) -> None:
    save_tiny(path, TinySpec(image_size=16, patch_size=8, vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=1, heads=2), WORDS)


BUILDERS: Dict[str, Callable[[Path], None]] = {
    "qwen2_vl": _qwen("qwen2_vl"),
    "qwen2_5_vl": _qwen("qwen2_5_vl"),
    "qwen3_vl": _qwen("qwen3_vl"),
    "llava": _llava,
}


def build(model_type: str, path: Path) -> Path:
    torch.manual_seed(0)
    BUILDERS[model_type](path)
    return path
