"""A PNG of example images: the full image with the crop box drawn, the crop the teacher reads,
and the answers (ground truth, the student's full-image answer before training and now, and its
answer from the crop)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence

from PIL import Image, ImageDraw, ImageFont

from .crops import Cropper
from .data import load_image

TILE = 128
CAPTION = 52


def example_grid(records: Sequence[Dict], cropper: Cropper, before: List[str], now: List[str], crop: List[str], data_cfg) -> Image.Image:
    """One row per record: [full image + box | crop], a caption underneath."""
    font = ImageFont.load_default()
    sheet = Image.new("RGB", (2 * TILE + 8, len(records) * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(records):
        image = load_image(r)
        box = cropper.box(r, image)
        sx, sy = TILE / image.width, TILE / image.height
        top = i * (TILE + CAPTION)
        sheet.paste(image.resize((TILE, TILE), Image.NEAREST), (0, top))
        draw.rectangle([box[0] * sx, top + box[1] * sy, box[2] * sx - 1, top + box[3] * sy - 1], outline=(255, 0, 255), width=2)
        sheet.paste(cropper(r, image).resize((TILE, TILE), Image.NEAREST), (TILE + 8, top))
        draw.text((2, top + TILE + 2), str(r[data_cfg.prompt_field])[:44], fill=(0, 0, 0), font=font)
        draw.text((2, top + TILE + 17), f"truth {r.get(data_cfg.answer_field)} | before {before[i]}", fill=(0, 0, 160), font=font)
        draw.text((2, top + TILE + 32), f"now {now[i]} | crop {crop[i]}", fill=(0, 0, 160), font=font)
    return sheet


def save_png(image: Image.Image, path: Path) -> None:
    """Write atomically (temporary file then rename), so a reader never sees a partial PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
