"""Built-in task `finedetail`: a small glyph in a coloured box on a larger canvas.

Each canvas holds `OBJECTS` boxes (red, green, blue, yellow), each in its own quadrant at a random
offset, each framing one glyph drawn in the box's colour: a digit, a letter (from a 3x5 pixel
font, drawn at `GLYPH_SCALE`) or a shape. The question names a box by colour and the glyph's kind
("what digit is in the red box ?"); the answer is one word; the box is the evidence region
(`box`, pixels) and `task` is the glyph kind. On the full image the glyph is small (9x15 px of a
64 px canvas) and may sit anywhere, so reading it takes position-invariant fine-detail features;
the crop of its box is centred and enlarged about 2x, so it reads easily. Both views hold the
information: the full image is harder to read, not unreadable.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Tuple

from PIL import Image, ImageDraw

CANVAS = 64
BOX = 20  # outer box size (px); the glyph sits inside a 2 px coloured frame
GLYPH_SCALE = 3  # font pixel -> canvas pixels (a glyph is 9x15 px)
# one box: with four, a tiny student trained on full images with true labels stayed at chance
# (it must bind the colour word to a frame and then read the glyph in it); see docs/vision.md
OBJECTS = 1
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


def render(rng: random.Random) -> Tuple[Image.Image, List[Dict]]:
    """A canvas and its objects: `{colour, kind, glyph, box}` for each of the `OBJECTS` boxes."""
    image = Image.new("RGB", (CANVAS, CANVAS), tuple(rng.randint(225, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    half = CANVAS // 2
    colours = list(COLOURS)
    rng.shuffle(colours)
    quadrants = rng.sample(range(4), OBJECTS)
    objects = []
    for q, colour in zip(quadrants, colours):
        x = (q % 2) * half + rng.randint(0, half - BOX)
        y = (q // 2) * half + rng.randint(0, half - BOX)
        draw.rectangle([x, y, x + BOX - 1, y + BOX - 1], outline=COLOURS[colour], width=2)
        kind = rng.choice(list(KINDS))
        glyph = rng.choice(KINDS[kind])
        gx = x + (BOX - 3 * GLYPH_SCALE) // 2 + rng.randint(-1, 1)
        gy = y + (BOX - 5 * GLYPH_SCALE) // 2 + rng.randint(-1, 1)
        draw_glyph(draw, glyph, gx, gy, COLOURS[colour])
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
