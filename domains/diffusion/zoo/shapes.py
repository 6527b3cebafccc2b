"""Built-in text-to-image task `shapes`: "a red circle at the top left", rendered with pillow.

36 prompts (3 colours × 3 shapes × 4 positions), 32×32 RGB images on black, each with random
jitter of position, size and colour. `uopd zoo build shapes` trains on CPU, from scratch, a real
`StableDiffusion3Pipeline` (`zoo_pipelines.py`): a small `AutoencoderKL` (32×32×3 -> 8×8×4), text
encoders (two CLIPs and a T5 with a word-level tokenizer) trained with the student's transformer,
one expert per shape (the student trained further on that shape) (routing by the record's `task`, the shape), a briefly trained
student, and the prompt-following judge (colour, shape and position heads, with reference
renders for FD). `prompts.jsonl` holds every prompt with its task tag.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from unified_opd.supervised import SupervisedPlan, fit
from unified_opd.zoo import console, register_zoo

from .threads import one_thread

from ..judges import save_attribute_judge
from .classifier import DigitClassifier, save_classifier, shift_augment

COLORS = {"red": (220, 50, 40), "green": (40, 200, 60), "blue": (50, 90, 235)}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}
ATTRIBUTES = {"color": list(COLORS), "shape": list(SHAPES), "position": list(POSITIONS)}
SIZE = 32
WORDS = ("a", "at", "the", *COLORS, *SHAPES, "top", "bottom", "left", "right")


def prompt_of(color: str, shape: str, position: str) -> str:
    return f"a {color} {shape} at the {position}"


def all_prompts() -> List[Tuple[str, str]]:
    """(prompt, task tag = its shape) for every combination, in a fixed order."""
    return [(prompt_of(c, s, p), s) for s in SHAPES for c in COLORS for p in POSITIONS]


def render(color: str, shape: str, position: str, rng: np.random.Generator) -> Tensor:
    """One `[3, 32, 32]` image in [-1, 1]: the shape in its quadrant, jittered by ±2 px, radius
    5-7 px, colour ±20 per channel."""
    img = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    qx, qy = POSITIONS[position]
    cx, cy = 8 + 16 * qx + rng.integers(-2, 3), 8 + 16 * qy + rng.integers(-2, 3)
    r = int(rng.integers(5, 8))
    fill = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLORS[color])
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r + 1, cy - r + 1, cx + r - 1, cy + r - 1], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    arr = torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1)
    return arr / 127.5 - 1


def shapes_images(per_prompt: int, seed: int) -> Tuple[Tensor, List[str]]:
    """`per_prompt` renders of every prompt, `[n, 3, 32, 32]`, and their prompts."""
    rng = np.random.default_rng(seed)
    images, prompts = [], []
    for c in COLORS:
        for s in SHAPES:
            for p in POSITIONS:
                images += [render(c, s, p, rng) for _ in range(per_prompt)]
                prompts += [prompt_of(c, s, p)] * per_prompt
    return torch.stack(images), prompts


def attribute_targets(prompts: List[str]) -> Tensor:
    """`[n, 3]` class ids (colour, shape, position) of each prompt."""
    rows = []
    for p in prompts:
        rest = p[len("a ") :]
        color, shape, position = rest.split(" ", 2)[0], rest.split(" ", 2)[1], rest.split(" at the ", 1)[1]
        rows.append([ATTRIBUTES["color"].index(color), SHAPES.index(shape), ATTRIBUTES["position"].index(position)])
    return torch.tensor(rows)


def train_judge(images: Tensor, prompts: List[str], steps: int = 300, batch: int = 64, seed: int = 0) -> DigitClassifier:
    """The prompt-following judge: one CNN, its 10 logits split into colour (3), shape (3) and
    position (4), the sum of the three cross-entropies; shift and pixel-noise augmentation."""
    torch.manual_seed(seed)
    n_values = [len(v) for v in ATTRIBUTES.values()]
    model = DigitClassifier(size=SIZE, channels=3, width=16, features=64, num_classes=sum(n_values))
    targets = attribute_targets(prompts)

    def draw(g: torch.Generator):
        idx = torch.randint(len(images), (batch,), generator=g)
        x = shift_augment(images[idx], g) + 0.15 * torch.randn(batch, *images.shape[1:], generator=g)
        return x, targets[idx]

    def loss(model, xy):
        groups = model(xy[0]).split(n_values, dim=-1)
        return sum(F.cross_entropy(lg, xy[1][:, k]) for k, lg in enumerate(groups))

    plan = SupervisedPlan(steps, 2e-3, seed, weight_decay=1e-4, betas=(0.9, 0.999), schedule="constant",
                          warmup_steps=0, clip_norm=None, title="zoo shapes judge")
    fit(model, loss, draw, plan)
    return model.eval().requires_grad_(False)


@register_zoo("shapes")
def build_shapes(dest: Path) -> None:
    """Judge, VAE, text encoders, experts per shape, student and `card.json` for `shapes`."""
    with one_thread():
        _build(dest)


def _build(dest: Path) -> None:
    from .zoo_pipelines import build_pipelines

    t0 = time.time()
    images, prompts = shapes_images(per_prompt=40, seed=0)
    judge = train_judge(images, prompts)
    save_classifier(judge, dest / "judge")
    ref_images, ref_prompts = shapes_images(per_prompt=16, seed=99)
    reference: Dict[str, Tensor] = {}
    for p in dict.fromkeys(ref_prompts):
        reference[p] = ref_images[[i for i, q in enumerate(ref_prompts) if q == p]]
    save_attribute_judge(dest / "judge", ATTRIBUTES, reference)
    with open(dest / "prompts.jsonl", "w") as f:
        for p, task in all_prompts():
            f.write(json.dumps({"prompt": p, "task": task}) + "\n")
    card = build_pipelines(dest, images, prompts, judge, reference)
    card["build_seconds"] = round(time.time() - t0, 1)
    (dest / "card.json").write_text(json.dumps(card, indent=1))
    console.print(f"zoo shapes: built in {card['build_seconds']:.0f} s")
