"""Built-in task `finedetail`: a small glyph in a coloured box on a larger canvas.

Each canvas holds one box (red, green, blue or yellow) framing one glyph drawn in the box's
colour: a digit, a letter (from a 3x5 pixel font, drawn at `GLYPH_SCALE`) or a shape. The
question names the box by colour and the glyph's kind ("what digit is in the red box ?"); the
answer is one word; the box is the evidence region (`box`, pixels) and `task` is the glyph kind.
On the full image the glyph is small (9x15 px of a 64 px canvas: each font pixel is a fraction of
an 8 px patch) and may sit at any of `len(GRID) ** 2` places; the crop of its box is centred and
enlarged about 2x. Both views hold the information: which one a model reads well depends on
which one it was trained on (see docs/vision.md). The held-out split shows each glyph only at
positions where the training split never has it (`held_out_pair`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Tuple

from PIL import Image, ImageDraw

CANVAS = 64
PATCH = 8  # the zoo student's patch size (px)
CELL = 16  # the glyph's cell: 2x2 patches
FRAME = 2  # the box is the cell grown by FRAME px: a 1 px gap and a 1 px coloured line
GLYPH_SCALE = 3  # font pixel -> canvas pixels (a glyph is 9x15 px)
# cell corners on the patch grid (8..40 px): a glyph looks the same to a patch embedding
# wherever it sits, so reading the full image is learnable by a tiny ViT in a few hundred steps;
# at arbitrary offsets it barely was (docs/vision.md). The frame stays inside the canvas.
GRID = list(range(PATCH, CANVAS - CELL - FRAME + 1, PATCH))
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (230, 200, 0)}
FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001010010",
    "8": "111101111101111", "9": "111101111001111", "A": "010101111101101", "C": "111100100100111",
    "E": "111100111100111", "F": "111100111100100", "H": "101101111101101", "L": "100100100100111",
    "P": "111101111100100", "U": "101101101101111",
}
DIGITS = [c for c in FONT if c.isdigit()]
LETTERS = [c for c in FONT if c.isalpha()]
SHAPES = ["circle", "square", "triangle", "cross"]
KINDS = {"digit": DIGITS, "letter": LETTERS, "shape": SHAPES}
GLYPHS = [*DIGITS, *LETTERS, *SHAPES]
WORDS = ["what", "is", "in", "the", "box", "?", *KINDS, *COLOURS, *DIGITS, *LETTERS, *SHAPES]


def draw_glyph(draw: ImageDraw.ImageDraw, name: str, x: int, y: int, fill=(0, 0, 0)) -> None:
    """A 3x5 font glyph (each font pixel a `GLYPH_SCALE` square) or a shape, in colour `fill`, in
    the 3s x 5s cell whose top-left is (x, y)."""
    s = GLYPH_SCALE
    if name in FONT:
        for i, bit in enumerate(FONT[name]):
            if bit == "1":
                r, c = divmod(i, 3)
                draw.rectangle([x + c * s, y + r * s, x + (c + 1) * s - 1, y + (r + 1) * s - 1], fill=fill)
        return
    # shapes fill a (3s+2) square centred in the glyph cell
    x0, y0, x1, y1 = x - 1, y + 1, x + 3 * s, y + 4 * s
    if name == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=fill)
    elif name == "square":
        draw.rectangle([x0 + 1, y0 + 1, x1 - 1, y1 - 1], fill=fill)
    elif name == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    else:
        mid_x, mid_y = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle([mid_x - 1, y0, mid_x, y1], fill=fill)
        draw.rectangle([x0, mid_y - 1, x1, mid_y], fill=fill)


def held_out_pair(x: int, y: int, glyph: str) -> bool:
    """Whether the glyph at cell corner (x, y) is reserved for the held-out split: one (position,
    glyph) pair in five, in a Latin pattern so each glyph is held out at 5 of the 25 positions
    and each position holds out a fifth of the glyphs. Held-out records show every glyph only
    where no training image had it, so full-image reading must be position-invariant."""
    return (GRID.index(x) + 2 * GRID.index(y) + GLYPHS.index(glyph)) % 5 == 0


def render(rng: random.Random, held_out: bool) -> Tuple[Image.Image, Dict]:
    """A canvas and its object `{colour, kind, glyph, box}`, at a (position, glyph) pair of the
    held-out split or of the training split."""
    image = Image.new("RGB", (CANVAS, CANVAS), tuple(rng.randint(225, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    colour = rng.choice(list(COLOURS))
    kind = rng.choice(list(KINDS))
    glyph = rng.choice(KINDS[kind])
    x, y = rng.choice([(x, y) for x in GRID for y in GRID if held_out_pair(x, y, glyph) == held_out])
    x0, y0, x1, y1 = x - FRAME, y - FRAME, x + CELL + FRAME, y + CELL + FRAME
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=COLOURS[colour], width=1)
    draw_glyph(draw, glyph, x + (CELL - 3 * GLYPH_SCALE) // 2, y + (CELL - 5 * GLYPH_SCALE) // 2, COLOURS[colour])
    return image, {"colour": colour, "kind": kind, "glyph": glyph, "box": [x0, y0, x1, y1]}


def make_records(n: int, seed: int, image_dir: Path, prefix: str, held_out: bool) -> List[Dict]:
    """`n` records of the held-out or training split with their PNGs written to `image_dir`
    (paths relative to its parent)."""
    rng = random.Random(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        image, target = render(rng, held_out)
        name = f"{prefix}_{i:05d}.png"
        image.save(image_dir / name)
        records.append(
            {
                "image": f"{image_dir.name}/{name}",
                "prompt": f"what {target['kind']} is in the {target['colour']} box ?",
                "answer": target["glyph"],
                "box": target["box"],
                "task": target["kind"],
            }
        )
    return records
