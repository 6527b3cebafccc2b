"""Built-in task `digits`: scikit-learn's 8×8 handwritten digits, upsampled to 16×16 in [-1, 1].

`uopd zoo build digits` trains on CPU, from scratch: two expert teachers (classes 0–4 and 5–9),
a briefly trained student initialisation (all classes), and the CNN digit classifier that judges
samples. Generators are class-conditioned `DiTTransformer2DModel`s with a flow-matching scheduler,
saved with `save_pretrained`; the classifier as safetensors + JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler
from torch import Tensor

from unified_opd.zoo import console, register_zoo

from .threads import one_thread

from .classifier import accuracy, save_classifier, train_classifier
from .flow_matching import train_flow_matching
from ..conditioning import ClassConditioner
from ..generator import Generator
from ..metrics import feature_stats, frechet_distance
from ..models import latent_spec, no_label_dropout, save_denoiser
from ..sampler import SamplerSpec, sample_trajectory, scheduler_sigmas

SIZE = 16
EXPERT_CLASSES = {"expert_0_4": [0, 1, 2, 3, 4], "expert_5_9": [5, 6, 7, 8, 9]}
EVAL_STEPS = 10


def digits_images(size: int = SIZE) -> Tuple[Tensor, Tensor]:
    """All 1797 digits as `[n, 1, size, size]` floats in [-1, 1] (bilinear upsampling) and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x * 2 - 1, torch.tensor(d.target, dtype=torch.long)


def split(n: int, held_fraction: float = 0.2, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """A fixed random train / held-out split of `n` items."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(n * held_fraction)
    return perm[k:], perm[:k]


@dataclass
class GeneratorSpec:
    """A class-conditioned DiT on 16×16×1 latents (patch 4: 16 tokens, fast on CPU)."""

    width: int
    layers: int
    steps: int
    heads: int = 4
    patch: int = 4
    lr: float = 2e-3
    batch: int = 128

    def build(self) -> DiTTransformer2DModel:
        model = DiTTransformer2DModel(
            num_attention_heads=self.heads,
            attention_head_dim=self.width // self.heads,
            in_channels=1,
            num_layers=self.layers,
            sample_size=SIZE,
            patch_size=self.patch,
            num_embeds_ada_norm=10,
            norm_num_groups=1,
        )
        return no_label_dropout(model)


EXPERT = GeneratorSpec(width=64, layers=4, steps=1200, lr=3e-3)
STUDENT = GeneratorSpec(width=64, layers=4, steps=200, lr=3e-3)


@torch.no_grad()
def generate(model, scheduler, labels: Tensor, num_steps: int = EVAL_STEPS, seed: int = 0) -> Tensor:
    """ODE samples of `model` for `labels`, from a seeded noise draw."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(labels), 1, SIZE, SIZE, generator=g)
    spec = SamplerSpec(num_steps=num_steps, mode="ode")
    sigmas = scheduler_sigmas(scheduler, num_steps)
    field = class_generator(model.eval(), scheduler).field(labels, labels.device)
    return sample_trajectory(field, sigmas, noise, spec).image


def class_generator(model, scheduler) -> Generator:
    """A zoo denoiser as a `Generator` (class-conditioned, pixel space)."""
    spec = latent_spec(model, "zoo digits")
    return Generator(model, scheduler, spec, ClassConditioner(spec.num_classes))


def judge(classifier, images: Tensor, labels: Tensor, real_stats) -> Dict[str, float]:
    """Class-conditional accuracy and Fréchet distance (classifier features) vs the real digits."""
    with torch.no_grad():
        fd = frechet_distance(*feature_stats(classifier.features(images)), *real_stats)
    return {"accuracy": accuracy(classifier, images, labels), "fd": fd}


def _fit(name: str, spec: GeneratorSpec, images: Tensor, labels: Tensor, seed: int):
    torch.manual_seed(seed)
    model = spec.build()
    scheduler = FlowMatchEulerDiscreteScheduler()
    gen = class_generator(model, scheduler)

    def field_of(m, index):
        return gen.field(labels[index], images.device, module=m)

    loss = train_flow_matching(model, images, field_of, spec.steps, spec.batch, spec.lr, seed, f"zoo digits {name}")
    return model, scheduler, loss


@register_zoo("digits")
def build_digits(dest: Path) -> None:
    """Experts (0–4, 5–9), student init, classifier and `card.json` for the `digits` task."""
    with one_thread():
        _build(dest)


def _build(dest: Path) -> None:
    t0 = time.time()
    images, labels = digits_images()
    train_idx, held_idx = split(len(images))
    x_tr, y_tr = images[train_idx], labels[train_idx]
    clf = train_classifier(x_tr, y_tr)
    save_classifier(clf, dest / "classifier")
    card: Dict[str, dict] = {"classifier": {"held_out_accuracy": accuracy(clf, images[held_idx], labels[held_idx])}}
    console.print(f"zoo digits classifier: held-out accuracy {card['classifier']['held_out_accuracy']:.3f}")
    jobs = [(name, EXPERT, classes, 1 + i) for i, (name, classes) in enumerate(EXPERT_CLASSES.items())]
    jobs.append(("student", STUDENT, list(range(10)), 7))
    for name, spec, classes, seed in jobs:
        keep = torch.isin(y_tr, torch.tensor(classes))
        model, scheduler, loss = _fit(name, spec, x_tr[keep], y_tr[keep], seed)
        save_denoiser(model, scheduler, str(dest / name))
        probe = torch.tensor(classes).repeat_interleave(50)
        with torch.no_grad():  # FD against the real digits of the same classes
            real = feature_stats(clf.features(images[torch.isin(labels, torch.tensor(classes))]))
        card[name] = {"classes": classes, "train_loss": loss, **judge(clf, generate(model, scheduler, probe), probe, real)}
        console.print(f"zoo digits {name}: classes {classes}, accuracy {card[name]['accuracy']:.3f}, FD {card[name]['fd']:.2f}")
    card["build_seconds"] = round(time.time() - t0, 1)
    (dest / "card.json").write_text(json.dumps(card, indent=1))

