"""Training the `shapes` zoo's SD3 pipelines on CPU: VAE, then text encoders with the student's
transformer, then one expert per shape: the student's transformer trained further on that shape
alone, on the frozen encoders.

Every generator is flow matching in the VAE's latent space (latents = (z − shift)·scale with
the VAE's own `shift_factor` / `scaling_factor`, set to the data's mean and 1/std, as SD3's
pipeline decodes them), with 10% of the prompts dropped to "" so classifier-free guidance has an
unconditional branch to push against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unified_opd.supervised import SupervisedPlan, fit
from unified_opd.zoo import console

from ..families import velocity
from ..generator import load_generator
from ..judges import AttributeJudge
from ..sampler import SamplerSpec, sample_trajectory
from ..policy import DiffusionPolicy
from .flow_matching import flow_matching_loss
from .shapes import ATTRIBUTES, SHAPES, WORDS
from .tiny_pipelines import TinySizes, tiny_sd3_pipeline

SIZES = TinySizes(text_width=32, width=64, heads=4, layers=2, sample_size=8, latent_channels=4,
                  vae_channels=(8, 16, 16), max_length=12, words=WORDS)
SEQ = 12  # T5 tokens per prompt (the longest prompt has 9)
PROMPT_DROPOUT = 0.1
EVAL_STEPS = 10


@dataclass(frozen=True)
class Stage:
    steps: int
    lr: float
    batch: int = 64


# Sized for a few minutes on a busy 2-core CPU; experts start from the student (its text
# conditioning already learnt) and specialise on their shape.
VAE = Stage(steps=500, lr=2e-3, batch=16)
STUDENT = Stage(steps=200, lr=2e-3, batch=32)
EXPERT = Stage(steps=700, lr=2e-3, batch=32)


def train_vae(vae: nn.Module, images: Tensor, stage: Stage, seed: int = 0, kl_weight: float = 1e-4) -> None:
    """AutoencoderKL on the renders: ‖decode(z) − x‖² + kl_weight·KL(q(z|x) ‖ N(0, I)), z ~ q(z|x)."""

    def draw(g: torch.Generator):
        return images[torch.randint(len(images), (stage.batch,), generator=g)], g

    def loss(vae, drawn):
        x, g = drawn
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        return F.mse_loss(rec, x) + kl_weight * post.kl().mean() / x[0].numel()

    fit(vae, loss, draw, SupervisedPlan(stage.steps, stage.lr, seed, title="zoo shapes vae"))
    vae.eval().requires_grad_(False)


@torch.no_grad()
def scale_latents(vae: nn.Module, images: Tensor) -> Tensor:
    """The posterior means, normalised; the VAE's config records the shift and scale used."""
    z = torch.cat([vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)])
    shift, scale = float(z.mean()), float(1 / z.std())
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return (z - shift) * scale


def text_fm_loss(pipe, latents: Tensor, prompts: List[str], g: torch.Generator) -> Tensor:
    """Flow matching of `pipe.transformer` with the prompts encoded by the pipeline's own
    `encode_prompt` (gradients reach the text encoders when they train)."""
    drop = torch.rand(len(prompts), generator=g) < PROMPT_DROPOUT
    prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
    pe, _, pooled, _ = pipe.encode_prompt(prompts, prompts, prompts, device="cpu", do_classifier_free_guidance=False, max_sequence_length=SEQ)
    cond = {"encoder_hidden_states": pe, "pooled_projections": pooled}
    return flow_matching_loss(lambda x, s: velocity(pipe.transformer, x, s, cond, 1000), latents, g)


def train_generator(pipe, trainable: nn.Module, latents: Tensor, prompts: List[str], stage: Stage, seed: int, title: str) -> float:
    def draw(g: torch.Generator):
        idx = torch.randint(len(latents), (stage.batch,), generator=g)
        return latents[idx], [prompts[i] for i in idx.tolist()], g

    def loss(_, drawn):
        return text_fm_loss(pipe, *drawn)

    tail = fit(trainable, loss, draw, SupervisedPlan(stage.steps, stage.lr, seed, title=title)).losses[-max(1, stage.steps // 10) :]
    return sum(tail) / len(tail)


@torch.no_grad()
def judge_generator(path: Path, judge, reference: Dict[str, Tensor], per_prompt: int = 4, seed: int = 1234) -> Dict[str, float]:
    """The judge's figures of a saved pipeline's ODE samples of every prompt."""
    gen = load_generator(str(path), "zoo shapes", "cpu", 0, SEQ)
    policy = DiffusionPolicy(gen, SamplerSpec(num_steps=EVAL_STEPS, mode="ode"), 1, "cpu")
    prompts = [p for p in reference for _ in range(per_prompt)]
    noise = torch.randn(len(prompts), *gen.spec.shape, generator=torch.Generator().manual_seed(seed))
    latents = sample_trajectory(gen.field(prompts, "cpu"), policy.sigmas, noise, policy.sampler).image
    return AttributeJudge(judge, ATTRIBUTES, reference)(gen.decode(latents), prompts)


def build_pipelines(dest: Path, images: Tensor, prompts: List[str], judge, reference: Dict[str, Tensor]) -> Dict[str, dict]:
    """VAE, text encoders + student, experts per shape; each saved as a pipeline and judged."""
    pipe = tiny_sd3_pipeline(seed=7, sizes=SIZES, shift=1.0)
    train_vae(pipe.vae, images, VAE)
    latents = scale_latents(pipe.vae, images)
    encoders = nn.ModuleList([pipe.transformer, pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3])
    card: Dict[str, dict] = {}
    card["student"] = {"train_loss": train_generator(pipe, encoders, latents, prompts, STUDENT, 7, "zoo shapes student")}
    for m in (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
        m.eval().requires_grad_(False)
    pipe.save_pretrained(dest / "student")
    student = pipe.transformer
    for i, shape in enumerate(SHAPES):
        keep = [k for k, p in enumerate(prompts) if f" {shape} " in p]
        pipe.register_modules(transformer=copy.deepcopy(student))
        loss = train_generator(pipe, pipe.transformer, latents[keep], [prompts[k] for k in keep], EXPERT, 11 + i, f"zoo shapes expert {shape}")
        pipe.save_pretrained(dest / f"expert_{shape}")
        card[f"expert_{shape}"] = {"task": shape, "train_loss": loss}
    for name in card:
        task = card[name].get("task")  # an expert is judged on its own shape's prompts
        shown = {p: r for p, r in reference.items() if task is None or f" {task} " in p}
        card[name].update(judge_generator(dest / name, judge, shown))
        console.print(f"zoo shapes {name}: score {card[name]['score']:.3f}, FD {card[name]['fd']:.2f}")
    return card
