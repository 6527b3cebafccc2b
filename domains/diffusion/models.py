"""Load, check, call and save diffusers denoisers and their flow-matching scheduler.

A model directory holds a diffusers model (`config.json` + weights, from `save_pretrained`) and,
next to it, the scheduler's `scheduler_config.json`; both `from_pretrained` calls read the
same directory. Supported denoisers are class-conditioned `UNet2DModel` (`num_class_embeds`)
and `DiTTransformer2DModel` (`num_embeds_ada_norm`), in pixel space (text-to-image pipelines:
`generator.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import diffusers
from diffusers import DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler, UNet2DModel
from diffusers.models.embeddings import LabelEmbedding
from torch import nn

from unified_opd.errors import ConfigError, UserError

MODEL_CLASSES = {"UNet2DModel": UNet2DModel, "DiTTransformer2DModel": DiTTransformer2DModel}
SCHEDULER_FILE = "scheduler_config.json"


@dataclass(frozen=True)
class LatentSpec:
    """What a denoiser consumes: latent shape `[C, H, W]` and the number of class ids."""

    channels: int
    size: int
    num_classes: int

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (self.channels, self.size, self.size)


def latent_spec(model: nn.Module, field: str) -> LatentSpec:
    """Read the latent shape and class count from a supported model's config."""
    c = model.config
    if isinstance(model, UNet2DModel):
        classes = c.num_class_embeds
        out_channels = c.out_channels
    elif isinstance(model, DiTTransformer2DModel):
        classes = c.num_embeds_ada_norm
        out_channels = c.out_channels or c.in_channels
    else:
        raise UserError(f"{field}: unsupported denoiser {type(model).__name__}; use one of {sorted(MODEL_CLASSES)}")
    if not classes:
        raise UserError(f"{field}: the denoiser is not class-conditioned (set num_class_embeds / num_embeds_ada_norm)")
    if out_channels != c.in_channels:
        raise UserError(f"{field}: the denoiser predicts {out_channels} channels for {c.in_channels} input channels")
    size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
    return LatentSpec(int(c.in_channels), int(size), int(classes))


def no_label_dropout(model: nn.Module) -> nn.Module:
    """Switch off classifier-free label dropout (DiT drops 10% of labels in train mode): OPD
    compares student and teacher under the *same* condition at every transition."""
    for m in model.modules():
        if isinstance(m, LabelEmbedding):
            m.dropout_prob = 0.0
    return model


def check_scheduler(scheduler, field: str) -> FlowMatchEulerDiscreteScheduler:
    if not isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        raise ConfigError(
            f"{field}: scheduler {type(scheduler).__name__} is not a flow-matching scheduler; "
            f"expected FlowMatchEulerDiscreteScheduler"
        )
    return scheduler


def load_scheduler(path: str, field: str) -> FlowMatchEulerDiscreteScheduler:
    """The directory's scheduler (it must be flow matching), or the default flow-matching one."""
    cfg_file = Path(path) / SCHEDULER_FILE
    if not cfg_file.is_file():
        return FlowMatchEulerDiscreteScheduler()
    name = json.loads(cfg_file.read_text()).get("_class_name", "")
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ConfigError(f"{field}: unknown scheduler class {name!r} in {cfg_file}")
    return check_scheduler(cls.from_pretrained(path), field)


def load_denoiser(path: str, field: str) -> Tuple[nn.Module, FlowMatchEulerDiscreteScheduler, LatentSpec]:
    """Model + scheduler + latent spec from a directory written by `save_denoiser`."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{field}: {path} holds no diffusers model (config.json is missing)")
    name = json.loads(cfg_file.read_text()).get("_class_name", "")
    if name not in MODEL_CLASSES:
        raise UserError(f"{field}: unsupported denoiser {name!r} in {cfg_file}; use one of {sorted(MODEL_CLASSES)}")
    model = no_label_dropout(MODEL_CLASSES[name].from_pretrained(path))
    return model, load_scheduler(path, field), latent_spec(model, field)


def save_denoiser(model: nn.Module, scheduler, path: str) -> None:
    """diffusers format: the model's `save_pretrained` and the scheduler's, in one directory."""
    model.save_pretrained(path)
    scheduler.save_pretrained(path)
