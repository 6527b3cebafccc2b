"""Zoo entry `finedetail`: data, a student that reads crops far better than full images, and a
larger, higher-resolution teacher for the separate-teacher (`view: full`) recipe.

`uopd zoo build finedetail` writes `images/`, `train.jsonl`, `eval.jsonl` (held out: another seed, and
(position, glyph) pairs the training split never shows), `student/` (64 px input, 8 px patches, so a glyph stays legible on the full image;
supervised on crops only, so it cannot yet read the full image: the gap Vision-OPD closes),
`teacher/` (64 px input, 16 px patches, wider; supervised on full images and crops alike) and
`card.json` with both models' held-out accuracies on full images and crops.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from omegaconf import OmegaConf

from unified_opd.data import write_jsonl
from unified_opd.domains.lm import Sampling
from unified_opd.supervised import SupervisedPlan, fit, model_loss
from unified_opd.zoo import console, register_zoo

from ..config import DataConfig, TeacherConfig
from ..crops import Cropper
from ..data import load_image, load_records
from ..families import Family, continue_token_types, family_of
from ..generation import format_prompts, generate_rollout
from . import finedetail_data as finedetail
from .tiny import TinySpec
from .tiny_qwen import QwenSpec


@dataclass
class Recipe:
    spec: TinySpec
    steps: int
    crop_fraction: float  # share of training examples shown as crops (the rest full images)
    lr: float = 2e-3
    batch: int = 64
    crop_upscale: float = 1.0  # the crop's resize before the processor (teacher.crop_upscale of its recipe)


# init_std 0.1 (~1/sqrt(width)): at transformers' 0.02 the image path starts near zero and the
# student stayed near chance on crops for 400 steps; at 0.1 it reads crops in ~150 (docs/vision.md).
# The student sees crops only: it reads crops and has never learnt to find and read the glyph
# on the full image, the gap Vision-OPD closes.
STUDENT = Recipe(TinySpec(image_size=64, patch_size=8, init_std=0.1), steps=300, crop_fraction=1.0)
TEACHER = Recipe(
    TinySpec(image_size=64, patch_size=16, vision_hidden=96, text_hidden=96, init_std=0.1), steps=400, crop_fraction=0.5
)
# The Qwen2-VL-architecture student (dynamic resolution, M-RoPE): 8 px patches, not merged
# (merge_size 1; 4 px patches merged 2x2 read as well but cost 4x the vision compute on CPU), so a
# 64 px image is 64 tokens like the LLaVA student's. Its crops are upscaled 2x (a 30 px crop ->
# 60 px -> 64 px after the processor's rounding to whole patches): the evidence gets 64 tokens
# instead of the ~16 it has inside the full image, and as many as a full image, so supervised
# batches mix them without padding. Trained on crops only, like the LLaVA student.
QWEN_STUDENT = Recipe(
    QwenSpec(
        model_type="qwen2_vl", patch_size=8, merge_size=1, min_pixels=16 * 16, max_pixels=64 * 64,
        vision_hidden=64, text_hidden=64, layers=2, heads=4, init_std=0.1,
    ),
    steps=300, crop_fraction=1.0, crop_upscale=2.0,
)
N_TRAIN, N_EVAL = 4000, 400


def default_data_cfg():
    return OmegaConf.structured(DataConfig(path="train.jsonl"))


def encode_views(processor, family: Family, records: Sequence[Dict], data_cfg, cropper) -> Dict[str, Any]:
    """Prompt+answer+EOS ids with labels on the answer only, and the full and crop image inputs
    (one row per record, `Family.pack`), with the family's token types over the whole sequence.

    Every finedetail prompt has the same length and every full image (and every crop) the same
    number of image tokens, so no padding is needed; full and crop must match in token count."""
    tok = processor.tokenizer
    images = [load_image(r) for r in records]
    prompts = format_prompts(processor, records, data_cfg)
    full = processor(text=prompts, images=images, return_tensors="pt")
    crops = processor(text=prompts, images=[cropper(r, im) for r, im in zip(records, images)], return_tensors="pt")
    if not torch.equal(full["input_ids"], crops["input_ids"]):
        raise ValueError("finedetail: a crop must give as many image tokens as the full image (zoo recipe's crop_upscale)")
    answers = torch.tensor([[tok.convert_tokens_to_ids(r["answer"]), tok.eos_token_id] for r in records])
    ids = torch.cat([full["input_ids"], answers], 1)
    labels = torch.full_like(ids, -100)
    labels[:, -2:] = answers
    ones = [1] * len(records)
    views = {k: family.pack(dict(enc), ones, 1, "zoo") for k, enc in (("full", full), ("crop", crops))}
    for packed in views.values():
        if family.token_types in packed:
            packed[family.token_types] = continue_token_types(packed[family.token_types], ids.shape[1], family.completion_type)
    return {"input_ids": ids, "labels": labels, **views}


def train_supervised(model, views: Dict[str, Any], recipe: Recipe, seed: int, label: str, family: Family) -> None:
    """Next-token training on the answers; each example is shown as a crop with probability
    `crop_fraction`, else as the full image (`unified_opd.supervised.fit`: AdamW, warm-up then cosine)."""
    n = views["input_ids"].shape[0]

    def draw(generator: torch.Generator) -> Dict[str, torch.Tensor]:
        idx = torch.randint(n, (recipe.batch,), generator=generator)
        use_crop = torch.rand(recipe.batch, generator=generator) < recipe.crop_fraction
        rows = {}
        for k, full in views["full"].items():
            pick = use_crop.view(-1, *[1] * (full.dim() - 1))
            rows[k] = torch.where(pick, views["crop"][k][idx], full[idx])
        return {"input_ids": views["input_ids"][idx], **family.unpack(rows), "labels": views["labels"][idx]}

    fit(model, model_loss, draw, SupervisedPlan(recipe.steps, recipe.lr, seed, title=f"zoo finedetail {label}"))


@torch.no_grad()
def greedy_accuracy(model, processor, records: Sequence[Dict], data_cfg, cropper=None, batch: int = 200) -> float:
    """Held-out exact-match accuracy of greedy answers, through the domain's own rollout code."""
    greedy = Sampling(num_samples=1, max_new_tokens=2, greedy=True)
    hits: List[float] = []
    for i in range(0, len(records), batch):
        r = generate_rollout(model, processor, records[i : i + batch], data_cfg, greedy, image_transform=cropper)
        hits += r.outcome.tolist()
    return sum(hits) / len(hits)


def build_model(dest: Path, name: str, recipe: Recipe, train: List[Dict], held: List[Dict], seed: int) -> Dict[str, float]:
    data_cfg = default_data_cfg()
    cropper = Cropper(OmegaConf.structured(TeacherConfig(crop_upscale=recipe.crop_upscale)), data_cfg)
    torch.manual_seed(seed)
    tok = recipe.spec.tokenizer(finedetail.WORDS)
    processor = recipe.spec.processor(tok)
    model = recipe.spec.build(tok)
    family = family_of(model.config.model_type)
    train_supervised(model, encode_views(processor, family, train, data_cfg, cropper), recipe, seed, name, family)
    model.save_pretrained(dest / name)
    processor.save_pretrained(dest / name)
    card = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_px": recipe.spec.image_size,
        "accuracy_full": greedy_accuracy(model, processor, held, data_cfg),
        "accuracy_crop": greedy_accuracy(model, processor, held, data_cfg, cropper),
    }
    console.print(f"zoo finedetail {name}: {card}")
    return card


def write_data(dest: Path) -> tuple:
    """Images, train/held-out records (written and loaded back) and the card's data fields."""
    write_jsonl(dest / "train.jsonl", finedetail.make_records(N_TRAIN, seed=1, image_dir=dest / "images", prefix="train", held_out=False))
    write_jsonl(dest / "eval.jsonl", finedetail.make_records(N_EVAL, seed=2, image_dir=dest / "images", prefix="eval", held_out=True))
    data_cfg = default_data_cfg()
    cropper = Cropper(OmegaConf.structured(TeacherConfig()), data_cfg)
    train, _ = load_records(str(dest / "train.jsonl"), data_cfg, cropper)
    held, _ = load_records(str(dest / "eval.jsonl"), data_cfg, cropper)
    card = {"task": "finedetail", "train_records": len(train), "eval_records": len(held), "canvas_px": finedetail.CANVAS}
    return train, held, card


@register_zoo("finedetail")
def build_finedetail(dest: Path) -> None:
    """Images, train/held-out records, the student and the full-image teacher."""
    t0 = time.time()
    train, held, card = write_data(dest)
    card["student"] = build_model(dest, "student", STUDENT, train, held, seed=1)
    card["teacher"] = build_model(dest, "teacher", TEACHER, train, held, seed=2)
    card["build_seconds"] = round(time.time() - t0, 1)
    (dest / "card.json").write_text(json.dumps(card, indent=1))


@register_zoo("finedetail_qwen2vl")
def build_finedetail_qwen2vl(dest: Path) -> None:
    """The same data as `finedetail` (same seeds) and a Qwen2-VL-architecture student."""
    t0 = time.time()
    train, held, card = write_data(dest)
    card["student"] = build_model(dest, "student", QWEN_STUDENT, train, held, seed=1)
    card["build_seconds"] = round(time.time() - t0, 1)
    (dest / "card.json").write_text(json.dumps(card, indent=1))
