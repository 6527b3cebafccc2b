"""A generator: a flow-matching denoiser with everything needed to call, condition and export it.

`load_generator(path, ...)` reads either a diffusers **pipeline** directory (`model_index.json`:
`StableDiffusion3Pipeline`, `FluxPipeline`, with their VAE, text encoders and tokenizers) or a
class-conditioned **denoiser** directory (`models.py`: DiT / UNet in pixel space). Either way the
result is a `Generator`: the trainable denoiser `module`, its flow-matching scheduler, the latent
spec, its conditioner, and, for pipelines, the pipeline itself (VAE decoding, export).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from torch import Tensor, nn

from unified_opd.errors import UserError
from unified_opd.lora import adapted_model

from .conditioning import ClassConditioner, Conditions, PromptConditioner, repeat_cond
from .families import FAMILY_OF_CLASS, family_of, unwrapped, velocity
from .models import LatentSpec, check_scheduler, load_denoiser, save_denoiser

PIPELINE_FILE = "model_index.json"
PIPELINES = {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}
DEFAULT_MAX_SEQUENCE_LENGTH = {"sd3": 256, "flux": 512}

VelocityField = Callable[[Tensor, Tensor], Tensor]


def guided_velocity(call: Callable, x: Tensor, sigma: Tensor, cond: Dict[str, Tensor],
                    uncond: Optional[Dict[str, Tensor]], scale: float) -> Tensor:
    """Classifier-free guidance, as the SD3 pipeline (and FLUX's true CFG) computes it:
    v = v(x, σ, ∅) + w·(v(x, σ, c) − v(x, σ, ∅)), both branches in one batched call;
    without an unconditional branch (w = 1, or guidance embedded in the model) v = v(x, σ, c)."""
    if uncond is None:
        return call(x, sigma, cond)
    both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
    v_uncond, v_cond = call(torch.cat([x, x]), torch.cat([sigma, sigma]), both).chunk(2)
    return v_uncond + scale * (v_cond - v_uncond)


@dataclass
class Generator:
    module: nn.Module
    scheduler: object
    spec: LatentSpec
    conditioner: object
    pipeline: Optional[object] = None

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def family(self) -> str:
        return family_of(self.module)

    def embeds_guidance(self, module: Optional[nn.Module] = None) -> bool:
        """FLUX-dev style: the guidance scale is an input of the model, not a second branch."""
        m = unwrapped(module if module is not None else self.module)
        return bool(getattr(m.config, "guidance_embeds", False))

    def field(self, conditions: Conditions, device, guidance_scale: float = 1.0,
              module: Optional[nn.Module] = None, repeat: int = 1) -> VelocityField:
        """`v(x, σ)` under `conditions` (each repeated `repeat` times: one row per step), with
        guidance `guidance_scale`, computed by `module` (default: this generator's)."""
        m = module if module is not None else self.module
        cond = repeat_cond(self.conditioner.encode(conditions, device), repeat)
        rows = next(iter(cond.values())).shape[0]
        uncond = None
        if self.embeds_guidance(m):
            cond["guidance"] = torch.full((rows,), float(guidance_scale), device=device, dtype=torch.float32)
        elif guidance_scale != 1.0:
            uncond = self.conditioner.null(rows, device)
        n = self.num_train_timesteps

        def call(x: Tensor, sigma: Tensor, c: Dict[str, Tensor]) -> Tensor:
            return velocity(m, x, sigma, c, n)

        return lambda x, sigma: guided_velocity(call, x, sigma, cond, uncond, guidance_scale)

    def check_guidance(self, scale: float, field: str) -> None:
        if scale != 1.0 and self.conditioner.kind == "class":
            raise UserError(f"{field}: guidance {scale} needs a text-to-image pipeline; class-conditioned denoisers take 1.0")

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Images in [-1, 1]: the pipeline's VAE decoding (x / scaling_factor + shift_factor), or
        the latents themselves for pixel-space denoisers."""
        if self.pipeline is None:
            return latents
        vae = self.pipeline.vae
        z = latents / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        return vae.decode(z.to(vae.dtype), return_dict=False)[0].float().clamp(-1, 1)

    def save(self, path: str) -> None:
        """A pipeline student is written as a complete pipeline directory (`model_index.json`,
        its VAE, text encoders, tokenizers, scheduler and the trained transformer), which
        `DiffusionPipeline.from_pretrained` loads; a denoiser as `save_denoiser` writes it.
        A LoRA student is saved merged into its base (so the directory loads as usual), with
        its adapter alone in `lora/` (`PeftModel.from_pretrained(base_transformer, path/lora)`)."""
        module = self.module
        if adapted_model(module) is not None:
            module.save_pretrained(str(Path(path) / LORA_DIR))
            module = copy.deepcopy(module).merge_and_unload()  # a copy: the student keeps training unmerged
        if self.pipeline is None:
            save_denoiser(module, self.scheduler, path)
            return
        self.pipeline.register_modules(transformer=module)
        self.pipeline.save_pretrained(path)


LORA_DIR = "lora"
# the attention projections of diffusers' transformers and UNets: what their LoRA fine-tuning adapts
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


def is_pipeline(path: str) -> bool:
    return (Path(path) / PIPELINE_FILE).is_file()


def load_generator(path: str, field: str, device, resolution: int = 0, max_sequence_length: int = 0) -> Generator:
    """A `Generator` from a pipeline or a denoiser directory (already `zoo.resolve`d).
    `resolution` (pixels, 0 = the pipeline's default) and `max_sequence_length` (tokens, 0 = the
    pipeline's default) apply to pipelines only."""
    if not is_pipeline(path):
        model, scheduler, spec = load_denoiser(path, field)
        return Generator(model.to(device), scheduler, spec, ClassConditioner(spec.num_classes))
    return _load_pipeline(path, field, device, resolution, max_sequence_length)


def _load_pipeline(path: str, field: str, device, resolution: int, max_sequence_length: int) -> Generator:
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()  # one bar per component and per weight file
    transformers_logging.disable_progress_bar()
    name = json.loads((Path(path) / PIPELINE_FILE).read_text()).get("_class_name", "")
    if name not in PIPELINES:
        raise UserError(f"{field}: unsupported pipeline {name!r} in {path}; use one of {sorted(PIPELINES)}")
    pipe = DiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    family = PIPELINES[name]
    if FAMILY_OF_CLASS.get(type(pipe.transformer).__name__) != family:
        raise UserError(f"{field}: {name} holds a {type(pipe.transformer).__name__}, not its family's transformer")
    check_scheduler(pipe.scheduler, field)
    for part in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        m = getattr(pipe, part, None)
        if m is not None:
            m.to(device).eval().requires_grad_(False)
    pipe.transformer.to(device)
    conditioner = PromptConditioner(pipe, family, max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH[family], device)
    return Generator(pipe.transformer, pipe.scheduler, pipeline_spec(pipe, family, resolution, field), conditioner, pipe)


def pipeline_spec(pipe, family: str, resolution: int, field: str) -> LatentSpec:
    """Latent channels from the VAE, latent size from the resolution as the pipeline rounds it
    (FLUX: to a multiple of 2·vae_scale_factor, for its 2×2 packing)."""
    f = pipe.vae_scale_factor
    res = int(resolution) or int(pipe.default_sample_size) * f
    size = 2 * (res // (2 * f)) if family == "flux" else res // f
    if size < 1 or (family == "sd3" and size % pipe.transformer.config.patch_size):
        raise UserError(f"{field}: resolution {res} gives latents of size {size}, which the transformer cannot patch")
    return LatentSpec(int(pipe.vae.config.latent_channels), int(size), 0)
