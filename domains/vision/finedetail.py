"""Built-in task `finedetail`: small glyphs in coloured boxes on a larger canvas.

Each canvas holds four boxes (red, green, blue, yellow), one per quadrant at a random offset,
each framing one glyph: a digit, a letter (from a 3x5 pixel font, drawn at `GLYPH_SCALE`) or a
shape. The question names a box by colour and the glyph's kind ("what digit is in the red box
?"); the answer is one word; the box is the evidence region (`box`, pixels) and `task` is the
glyph kind. At the student's input resolution the whole canvas is shrunk by CANVAS/32 and a glyph
becomes a blurred 3x5 blob among three others, while the crop of its box is enlarged to the full
input and reads easily: fine detail is degraded on the full image, legible on the crop.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Tuple

from PIL import Image, ImageDraw

CANVAS = 64
BOX = 16  # outer box size (px); the glyph sits inside a 2 px coloured frame
GLYPH_SCALE = 2  # font pixel -> canvas pixels (a glyph is 6x10 px)
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
WORDS = ["what", "is", "in", "the", "box", "?", *KINDS, *COLOURS, *DIGITS, *LETTERS, *SHAPES]


def draw_glyph(draw: ImageDraw.ImageDraw, name: str, x: int, y: int) -> None:
    """A 3x5 font glyph or a shape, black, in the 6x10 cell whose top-left is (x, y)."""
    s = GLYPH_SCALE
    if name in FONT:
        for i, bit in enumerate(FONT[name]):
            if bit == "1":
                r, c = divmod(i, 3)
                draw.rectangle([x + c * s, y + r * s, x + (c + 1) * s - 1, y + (r + 1) * s - 1], fill=(0, 0, 0))
        return
    # shapes fill an 8x8 square centred in the 6x10 glyph cell
    x0, y0, x1, y1 = x - 1, y + 1, x + 3 * s, y + 4 * s
    if name == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=(0, 0, 0))
    elif name == "square":
        draw.rectangle([x0 + 1, y0 + 1, x1 - 1, y1 - 1], fill=(0, 0, 0))
    elif name == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=(0, 0, 0))
    else:
        mid_x, mid_y = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle([mid_x - 1, y0, mid_x, y1], fill=(0, 0, 0))
        draw.rectangle([x0, mid_y - 1, x1, mid_y], fill=(0, 0, 0))


def render(rng: random.Random) -> Tuple[Image.Image, List[Dict]]:
    """A canvas and its objects: `{colour, kind, glyph, box}` for each of the four boxes."""
    image = Image.new("RGB", (CANVAS, CANVAS), tuple(rng.randint(225, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    half = CANVAS // 2
    colours = list(COLOURS)
    rng.shuffle(colours)
    objects = []
    for q, colour in enumerate(colours):
        x = (q % 2) * half + rng.randint(0, half - BOX)
        y = (q // 2) * half + rng.randint(0, half - BOX)
        draw.rectangle([x, y, x + BOX - 1, y + BOX - 1], outline=COLOURS[colour], width=2)
        kind = rng.choice(list(KINDS))
        glyph = rng.choice(KINDS[kind])
        gx = x + (BOX - 3 * GLYPH_SCALE) // 2 + rng.randint(-1, 1)
        gy = y + (BOX - 5 * GLYPH_SCALE) // 2 + rng.randint(-1, 1)
        draw_glyph(draw, glyph, gx, gy)
        objects.append({"colour": colour, "kind": kind, "glyph": glyph, "box": [x, y, x + BOX, y + BOX]})
    return image, objects


def make_records(n: int, seed: int, image_dir: Path, prefix: str) -> List[Dict]:
    """`n` records with their PNGs written to `image_dir` (paths relative to its parent)."""
    rng = random.Random(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        image, objects = render(rng)
        target = rng.choice(objects)
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
