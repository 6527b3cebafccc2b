"""How each supported denoiser family is called, and which sigmas its pipeline samples on.

A family is what differs between diffusers denoisers once latents `[B, C, H, W]`, noise levels
σ `[B]` and a conditioning dict (batch-first tensors, named as the model's keyword arguments)
are given:

| family | models | call |
|---|---|---|
| `class` | `UNet2DModel`, `DiTTransformer2DModel` | `model(x, σ·T, class_labels=y)` |
| `sd3` | `SD3Transformer2DModel` (SD3, SD3.5) | `model(hidden_states=x, timestep=σ·T, encoder_hidden_states, pooled_projections)` |
| `flux` | `FluxTransformer2DModel` | packed 2×2 latents, `timestep=σ·T/1000`, text / image position ids, `guidance` when embedded |

T is the scheduler's `num_train_timesteps`; each call is exactly the one its diffusers pipeline
makes, so a student trained here samples the same way from `DiffusionPipeline.from_pretrained`.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import torch
from torch import Tensor, nn

from unified_opd.lora import inner_model

FAMILY_OF_CLASS = {
    "UNet2DModel": "class",
    "DiTTransformer2DModel": "class",
    "SD3Transformer2DModel": "sd3",
    "FluxTransformer2DModel": "flux",
}


def unwrapped(module: nn.Module) -> nn.Module:
    """The model inside a DDP / accelerate wrapper and a PEFT (LoRA) wrapper: its class decides the family."""
    return inner_model(getattr(module, "module", module))


def family_of(module: nn.Module) -> str:
    return FAMILY_OF_CLASS[type(unwrapped(module)).__name__]


def _class_call(model: nn.Module, x: Tensor, t: Tensor, cond: Dict[str, Tensor]) -> Tensor:
    return model(x, t, **cond).sample


def _sd3_call(model: nn.Module, x: Tensor, t: Tensor, cond: Dict[str, Tensor]) -> Tensor:
    return model(hidden_states=x, timestep=t, **cond, return_dict=False)[0]


def _flux_call(model: nn.Module, x: Tensor, t: Tensor, cond: Dict[str, Tensor]) -> Tensor:
    from diffusers.pipelines.flux.pipeline_flux import FluxPipeline  # pipelines import transformers' image processors (slow, noisy)

    b, c, h, w = x.shape
    packed = FluxPipeline._pack_latents(x, b, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x.device, x.dtype)
    txt_ids = torch.zeros(cond["encoder_hidden_states"].shape[1], 3, device=x.device, dtype=x.dtype)
    out = model(hidden_states=packed, timestep=t / 1000, img_ids=img_ids, txt_ids=txt_ids, **cond, return_dict=False)[0]
    return out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


CALLS: Dict[str, Callable[[nn.Module, Tensor, Tensor, Dict[str, Tensor]], Tensor]] = {
    "class": _class_call,
    "sd3": _sd3_call,
    "flux": _flux_call,
}


def velocity(model: nn.Module, x: Tensor, sigma: Tensor, cond: Dict[str, Tensor], num_train_timesteps: int) -> Tensor:
    """v(x, σ, c): the model called as its pipeline calls it, at timestep σ·num_train_timesteps
    (the scheduler's `timesteps`); `cond` holds the model's conditioning keyword arguments."""
    t = sigma.to(x.dtype) * num_train_timesteps
    return CALLS[family_of(model)](model, x, t, cond)


def _mu(family: str, scheduler, seq_len: int) -> float:
    """The resolution-dependent shift of a dynamic-shifting scheduler, as each pipeline computes it."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift as flux_shift
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift as sd3_shift

    c = scheduler.config
    shift = flux_shift if family == "flux" else sd3_shift
    return shift(seq_len, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                 c.get("base_shift", 0.5), c.get("max_shift", 1.15 if family == "flux" else 1.16))


def pipeline_sigmas(family: str, scheduler, num_steps: int, model: nn.Module, latent_size: int) -> Tensor:
    """σ_0 … σ_S (float32, S + 1 values) from the scheduler's own `set_timesteps`, called as the
    family's pipeline calls it: FLUX passes σ = linspace(1, 1/S, S) and the shift μ of its
    packed sequence length; SD3 (and the class models) pass S, plus μ when the scheduler shifts
    dynamically."""
    c = scheduler.config
    if family == "flux":
        seq = (latent_size // 2) ** 2
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        scheduler.set_timesteps(sigmas=sigmas, mu=_mu(family, scheduler, seq))
    elif c.get("use_dynamic_shifting", False):
        patch = int(getattr(unwrapped(model).config, "patch_size", 1) or 1)
        scheduler.set_timesteps(num_steps, mu=_mu(family, scheduler, (latent_size // patch) ** 2))
    else:
        scheduler.set_timesteps(num_steps)
    return scheduler.sigmas.detach().float().cpu()
