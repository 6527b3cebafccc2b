"""The shapes figure: prompts × (zoo student before distillation | the run's exported student |
the routed experts), every cell from the run's fixed evaluation noise.

    uopd train configs/diffusion/opd_shapes.yaml
    python docs/benchmarks/diffusion_shapes_grid.py runs/diffusion_opd_shapes --out docs/benchmarks/diffusion_shapes_grid.png

The "after" column is sampled by `DiffusionPipeline.from_pretrained(run/final)` itself (diffusers
only), from the same latents as the run's evaluation; the others by this package's ODE sampler.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image, ImageDraw

from unified_opd.domains.diffusion.evaluate import eval_noise
from unified_opd.domains.diffusion.generator import load_generator
from unified_opd.domains.diffusion.metrics import image_grid
from unified_opd.domains.diffusion.policy import DiffusionPolicy
from unified_opd.domains.diffusion.sampler import SamplerSpec, sample_trajectory
from unified_opd.domains.diffusion.zoo.shapes import all_prompts
from unified_opd.zoo import resolve

SHOWN = ["a red circle at the top left", "a green circle at the bottom right", "a blue circle at the top right",
         "a red square at the bottom left", "a green square at the top left", "a blue square at the bottom right",
         "a red triangle at the top right", "a green triangle at the bottom left", "a blue triangle at the top left"]


@torch.no_grad()
def ode_images(path: str, prompts, noise, steps: int, seq: int) -> torch.Tensor:
    gen = load_generator(path, "grid", "cpu", 0, seq)
    policy = DiffusionPolicy(gen, SamplerSpec(num_steps=steps, mode="ode"), 1, "cpu")
    return gen.decode(sample_trajectory(gen.field(prompts, "cpu"), policy.sigmas, noise, policy.sampler).image)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="the run's output_dir (with final/)")
    p.add_argument("--out", default="docs/benchmarks/diffusion_shapes_grid.png")
    p.add_argument("--per-prompt", type=int, default=4, help="samples shown per prompt (<= eval.samples_per_class)")
    p.add_argument("--eval-per-prompt", type=int, default=8, help="the run's eval.samples_per_class")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=1234, help="the run's eval.seed")
    args = p.parse_args()

    order = [q for q, _ in all_prompts()]
    k, n = args.per_prompt, args.eval_per_prompt
    rows = torch.tensor([order.index(q) * n + j for q in SHOWN for j in range(k)])
    prompts = [q for q in SHOWN for _ in range(k)]
    noise = eval_noise(args.seed, len(order) * n, (4, 8, 8))[rows]
    zoo = Path(resolve("zoo:shapes", "grid"))
    before = ode_images(str(zoo / "student"), prompts, noise, args.steps, 12)
    pipe = DiffusionPipeline.from_pretrained(str(Path(args.run) / "final"))
    after = pipe(prompts, latents=noise, num_inference_steps=args.steps, guidance_scale=1.0, max_sequence_length=12,
                 output_type="pt").images * 2 - 1
    teacher = torch.cat([ode_images(str(zoo / f"expert_{q.split()[2]}"), prompts[i * k : (i + 1) * k], noise[i * k : (i + 1) * k],
                                    args.steps, 12) for i, q in enumerate(SHOWN)])
    # [model, prompt, sample] -> rows of prompts, each: k before | k after | k teacher
    cells = torch.stack([before, after, teacher]).reshape(3, len(SHOWN), k, 3, 32, 32).transpose(0, 1)
    grid = image_grid(cells.reshape(-1, 3, 32, 32), len(SHOWN))
    scale, label_w, head = 3, 230, 24
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (grid.width + label_w, grid.height + head), "white")
    canvas.paste(grid, (label_w, head))
    draw = ImageDraw.Draw(canvas)
    col = grid.width // 3
    for i, title in enumerate(["before (zoo student)", "after (exported student)", "teacher (routed expert)"]):
        draw.text((label_w + i * col + 8, 6), title, fill="black")
    for r, q in enumerate(SHOWN):
        draw.text((6, head + r * grid.height // len(SHOWN) + grid.height // len(SHOWN) // 2 - 6), q, fill="black")
    canvas.save(args.out)
    print(f"wrote {args.out}")
    print(f"exported student vs the run's last evaluation grid: max pixel difference {regenerated_difference(pipe, args)} / 255")


def regenerated_difference(pipe, args) -> int:
    """Regenerate every evaluation sample with the exported pipeline and compare the run's grid
    (rows: prompts, the first `grid_per_class` = --per-prompt samples each, upscaled 4×)."""
    order = [q for q, _ in all_prompts()]
    n, k = args.eval_per_prompt, args.per_prompt
    prompts = [q for q in order for _ in range(n)]
    noise = eval_noise(args.seed, len(prompts), (4, 8, 8))
    images = torch.cat([pipe(prompts[i : i + 96], latents=noise[i : i + 96], num_inference_steps=args.steps, guidance_scale=1.0,
                             max_sequence_length=12, output_type="pt").images * 2 - 1 for i in range(0, len(prompts), 96)])
    keep = torch.arange(len(images)).reshape(len(order), n)[:, :k].reshape(-1)
    ours = np.asarray(image_grid(images[keep], len(order))).astype(int)
    last = sorted((Path(args.run) / "samples").glob("step_*.png"))[-1]
    png = Image.open(last)
    png = np.asarray(png.resize((png.width // 4, png.height // 4), Image.NEAREST)).astype(int)
    return int(np.abs(ours - png).max())


if __name__ == "__main__":
    main()
