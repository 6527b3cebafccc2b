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
from typing import Dict, List, Sequence

import torch
from omegaconf import OmegaConf

from unified_opd.data import write_jsonl
from unified_opd.domains.lm import Sampling
from unified_opd.supervised import SupervisedPlan, fit, model_loss
from unified_opd.zoo import console, register_zoo

from ..config import DataConfig, TeacherConfig
from ..crops import Cropper
from ..data import load_image, load_records
from ..generation import format_prompts, generate_rollout
from . import finedetail_data as finedetail
from .tiny import TinySpec, build_processor, build_tokenizer


@dataclass
class Recipe:
    spec: TinySpec
    steps: int
    crop_fraction: float  # share of training examples shown as crops (the rest full images)
    lr: float = 2e-3
    batch: int = 64


# init_std 0.1 (~1/sqrt(width)): at transformers' 0.02 the image path starts near zero and the
# student stayed near chance on crops for 400 steps; at 0.1 it reads crops in ~150 (docs/vision.md).
# The student sees crops only: it reads crops and has never learnt to find and read the glyph
# on the full image, the gap Vision-OPD closes.
STUDENT = Recipe(TinySpec(image_size=64, patch_size=8, init_std=0.1), steps=300, crop_fraction=1.0)
TEACHER = Recipe(
    TinySpec(image_size=64, patch_size=16, vision_hidden=96, text_hidden=96, init_std=0.1), steps=400, crop_fraction=0.5
)
N_TRAIN, N_EVAL = 4000, 400


def default_data_cfg():
    return OmegaConf.structured(DataConfig(path="train.jsonl"))


def encode_views(processor, records: Sequence[Dict], data_cfg, cropper) -> Dict[str, torch.Tensor]:
    """Prompt+answer+EOS ids with labels on the answer only, and the full and crop pixels.

    Every finedetail prompt has the same length, so no padding is needed."""
    tok = processor.tokenizer
    images = [load_image(r) for r in records]
    prompts = format_prompts(processor, records, data_cfg)
    full = processor(text=prompts, images=images, return_tensors="pt")
    crops = processor(images=[cropper(r, im) for r, im in zip(records, images)], return_tensors="pt")
    answers = torch.tensor([[tok.convert_tokens_to_ids(r["answer"]), tok.eos_token_id] for r in records])
    ids = torch.cat([full["input_ids"], answers], 1)
    labels = torch.full_like(ids, -100)
    labels[:, -2:] = answers
    return {"input_ids": ids, "labels": labels, "full": full["pixel_values"], "crop": crops["pixel_values"]}


def train_supervised(model, views: Dict[str, torch.Tensor], recipe: Recipe, seed: int, label: str) -> None:
    """Next-token training on the answers; each example is shown as a crop with probability
    `crop_fraction`, else as the full image (`unified_opd.supervised.fit`: AdamW, warm-up then cosine)."""
    n = views["input_ids"].shape[0]

    def draw(generator: torch.Generator) -> Dict[str, torch.Tensor]:
        idx = torch.randint(n, (recipe.batch,), generator=generator)
        use_crop = (torch.rand(recipe.batch, generator=generator) < recipe.crop_fraction).view(-1, 1, 1, 1)
        pixels = torch.where(use_crop, views["crop"][idx], views["full"][idx])
        return {"input_ids": views["input_ids"][idx], "pixel_values": pixels, "labels": views["labels"][idx]}

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
    cropper = Cropper(OmegaConf.structured(TeacherConfig()), data_cfg)
    torch.manual_seed(seed)
    tok = build_tokenizer(finedetail.WORDS)
    processor = build_processor(tok, recipe.spec.image_size, recipe.spec.patch_size)
    model = recipe.spec.build(tok)
    train_supervised(model, encode_views(processor, train, data_cfg, cropper), recipe, seed, name)
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


@register_zoo("finedetail")
def build_finedetail(dest: Path) -> None:
    """Images, train/held-out records, the student and the full-image teacher."""
    t0 = time.time()
    write_jsonl(dest / "train.jsonl", finedetail.make_records(N_TRAIN, seed=1, image_dir=dest / "images", prefix="train", held_out=False))
    write_jsonl(dest / "eval.jsonl", finedetail.make_records(N_EVAL, seed=2, image_dir=dest / "images", prefix="eval", held_out=True))
    data_cfg = default_data_cfg()
    cropper = Cropper(OmegaConf.structured(TeacherConfig()), data_cfg)
    train, _ = load_records(str(dest / "train.jsonl"), data_cfg, cropper)
    held, _ = load_records(str(dest / "eval.jsonl"), data_cfg, cropper)
    card = {"task": "finedetail", "train_records": len(train), "eval_records": len(held), "canvas_px": finedetail.CANVAS}
    card["student"] = build_model(dest, "student", STUDENT, train, held, seed=1)
    card["teacher"] = build_model(dest, "teacher", TEACHER, train, held, seed=2)
    card["build_seconds"] = round(time.time() - t0, 1)
    (dest / "card.json").write_text(json.dumps(card, indent=1))
