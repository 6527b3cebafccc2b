"""Shared fixtures of the vision tests (imported by test_vision*.py): tiny LLaVA models built from
configs and saved with save_pretrained, and a few finedetail records written as PNG files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unified_opd.domains.vision.zoo import finedetail_data as finedetail
from unified_opd.domains.vision.zoo.tiny import TinySpec, build_processor, build_tokenizer, save_tiny

STUDENT = TinySpec(image_size=16, patch_size=8, vision_hidden=32, vision_layers=1, text_hidden=32, text_layers=1, heads=2)
TEACHER = TinySpec(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, text_hidden=48, text_layers=1, heads=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # these models are tiny: a second thread only adds synchronisation on a busy CPU
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def write_records(path: Path, records) -> Path:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def save_image_dependent(path: Path, spec: TinySpec, seed: int, scale: float = 8.0) -> None:
    """An untrained model whose answers depend on the image: at the default initialisation the
    image barely moves the logits (full and crop views would agree from the start), so the
    attention value/output maps, the projector and the head are scaled up."""
    torch.manual_seed(seed)
    tok = build_tokenizer(finedetail.WORDS)
    model = spec.build(tok)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and any(k in name for k in ("v_proj", "o_proj", "multi_modal_projector", "lm_head")):
                p.mul_(scale)
    model.save_pretrained(path)
    build_processor(tok, spec.image_size, spec.patch_size).save_pretrained(path)


@pytest.fixture(scope="session")
def tiny_vision(tmp_path_factory):
    """student/ (16 px), teacher/ (32 px, wider), train.jsonl, eval.jsonl and images/."""
    root = tmp_path_factory.mktemp("tiny_vision")
    write_records(root / "train.jsonl", finedetail.make_records(48, seed=1, image_dir=root / "images", prefix="train", held_out=False))
    write_records(root / "eval.jsonl", finedetail.make_records(12, seed=2, image_dir=root / "images", prefix="eval", held_out=True))
    save_image_dependent(root / "student", STUDENT, seed=0)
    save_tiny(root / "teacher", TEACHER, finedetail.WORDS, seed=1)
    return root


def vision_overrides(root: Path, out: Path, **extra) -> list:
    base = {
        "domain": "vision",
        "student.path": root / "student",
        "data.path": root / "train.jsonl",
        "data.eval_path": root / "eval.jsonl",
        "rollout.batch_size": 8,
        "rollout.num_samples": 2,
        "rollout.max_new_tokens": 2,
        "trainer.max_steps": 4,
        "trainer.lr": 3e-3,
        "trainer.output_dir": out,
        "trainer.save_every": 0,
        "eval.size": 12,
        "eval.batch_size": 12,
        "eval.examples": 2,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
