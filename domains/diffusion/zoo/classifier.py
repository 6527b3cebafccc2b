"""A small CNN digit classifier: the judge of generated samples (accuracy and the feature
space of the Fréchet distance). Saved as `model.safetensors` + `config.json`; never pickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from unified_opd.errors import UserError
from unified_opd.supervised import SupervisedPlan, fit

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class DigitClassifier(nn.Module):
    """conv-pool-conv-pool -> `features`-dim embedding (the FD space) -> class logits."""

    def __init__(self, size: int = 16, channels: int = 1, width: int = 16, features: int = 64, num_classes: int = 10):
        super().__init__()
        self.config = {"size": size, "channels": channels, "width": width, "features": features, "num_classes": num_classes}
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.embed = nn.Linear(2 * width * (size // 4) ** 2, features)
        self.head = nn.Linear(features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.embed(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def save_classifier(model: DigitClassifier, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path / WEIGHTS_FILE))
    (path / CONFIG_FILE).write_text(json.dumps(model.config, indent=1))


def load_classifier(path: str, field: str) -> DigitClassifier:
    p = Path(path)
    if not (p / CONFIG_FILE).is_file() or not (p / WEIGHTS_FILE).is_file():
        raise UserError(f"{field}: {path} holds no digit classifier ({CONFIG_FILE} + {WEIGHTS_FILE})")
    model = DigitClassifier(**json.loads((p / CONFIG_FILE).read_text()))
    model.load_state_dict(load_file(str(p / WEIGHTS_FILE)))
    return model.eval().requires_grad_(False)


def shift_augment(x: Tensor, generator: torch.Generator, max_shift: int = 1) -> Tensor:
    """Random translation by up to `max_shift` pixels (edge padding), so the judge does not
    depend on pixel-exact placement that generated digits lack."""
    b, _, h, w = x.shape
    pad = F.pad(x, [max_shift] * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator).tolist()
    return torch.stack([pad[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


def train_classifier(
    images: Tensor, labels: Tensor, steps: int = 600, batch: int = 128, lr: float = 2e-3, seed: int = 0
) -> DigitClassifier:
    """Cross-entropy with shift augmentation and light Gaussian pixel noise (`unified_opd.supervised.fit`:
    AdamW at a constant LR, no gradient clipping)."""
    torch.manual_seed(seed)
    model = DigitClassifier(size=images.shape[-1], channels=images.shape[1])

    def draw(generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        idx = torch.randint(len(images), (batch,), generator=generator)
        x = shift_augment(images[idx], generator) + 0.1 * torch.randn(batch, *images.shape[1:], generator=generator)
        return x, labels[idx]

    def loss(model: DigitClassifier, xy: Tuple[Tensor, Tensor]) -> Tensor:
        return F.cross_entropy(model(xy[0]), xy[1])

    plan = SupervisedPlan(
        steps, lr, seed, weight_decay=1e-4, betas=(0.9, 0.999), schedule="constant", warmup_steps=0, clip_norm=None,
        title="zoo digits classifier",
    )
    fit(model, loss, draw, plan)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(model: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    return float((model(images).argmax(-1) == labels).float().mean())
