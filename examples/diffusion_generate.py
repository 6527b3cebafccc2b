"""Generate digits with a distilled diffusion student, using diffusers only.

    uopd train configs/diffusion/opd_digits.yaml
    python examples/diffusion_generate.py runs/diffusion_opd_digits/final --out digits.png

The student directory is plain diffusers format: the denoiser's `save_pretrained` files plus the
flow-matching scheduler's `scheduler_config.json`. Sampling below is the scheduler's own Euler loop.
"""

import argparse
import json
from pathlib import Path

import diffusers
import torch
from PIL import Image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("student", help="a directory written by Policy.save (e.g. runs/.../final)")
    p.add_argument("--out", default="digits.png")
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    name = json.loads((Path(args.student) / "config.json").read_text())["_class_name"]
    model = getattr(diffusers, name).from_pretrained(args.student).eval()
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(args.student)
    classes = model.config.get("num_class_embeds") or model.config.get("num_embeds_ada_norm")
    size, channels = model.config.sample_size, model.config.in_channels

    labels = torch.arange(classes).repeat_interleave(args.per_class)
    x = torch.randn(len(labels), channels, size, size, generator=torch.Generator().manual_seed(args.seed))
    scheduler.set_timesteps(args.steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            v = model(x, t.expand(len(labels)), class_labels=labels).sample
            x = scheduler.step(v, t, x).prev_sample

    # one row per class, images in [-1, 1] -> uint8, upscaled 4x for viewing
    img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = img.reshape(classes, args.per_class, channels, size, size).permute(0, 3, 1, 4, 2)
    grid = grid.reshape(classes * size, args.per_class * size, channels).squeeze(-1).numpy()
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(args.out)
    print(f"wrote {args.out}: {classes} classes x {args.per_class} samples, {args.steps} Euler steps")


if __name__ == "__main__":
    main()
