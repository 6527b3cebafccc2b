"""The crop view: where the evidence is (a box) and the image the crop teacher reads.

A box is `(x0, y0, x1, y1)` in pixels with x1 > x0, y1 > y0 (x right, y down, x1/y1 exclusive).
`crop_box` maps a record's box to the pixel box actually cropped: to pixels, grown by a margin,
made square (image processors resize the short side and centre-crop, which would cut a
non-square crop), slid inside the image, then clipped to it.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Sequence, Tuple

from PIL import Image

from unified_opd.errors import ConfigError
from unified_opd.registry import Registry

Box = Tuple[float, float, float, float]

# crop_fn(record, image, data_cfg) -> box in the record's box_format; `metadata` reads data.box_field
CROP_FNS = Registry("crop function", "teacher.crop_fn")


class BoxError(ValueError):
    """The box is malformed or does not overlap the image; the caller names the record."""


@CROP_FNS.register("metadata")
def box_from_metadata(record: Dict[str, Any], image: Image.Image, data_cfg) -> Sequence[float]:
    if data_cfg.box_field not in record:
        raise BoxError(f"no {data_cfg.box_field!r} field")
    return record[data_cfg.box_field]


def to_pixels(box: Sequence[float], width: int, height: int, fmt: str) -> Box:
    """`normalized` boxes are fractions of the width/height; `pixels` boxes are taken as is."""
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        raise BoxError(f"expected [x0, y0, x1, y1] numbers, got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise BoxError(f"box {list(box)} is empty (need x1 > x0 and y1 > y0)")
    if fmt == "normalized":
        return x0 * width, y0 * height, x1 * width, y1 * height
    if fmt != "pixels":
        raise BoxError(f"unknown box format {fmt!r} (pixels | normalized)")
    return x0, y0, x1, y1


def grow(box: Box, margin: float, square: bool) -> Box:
    """Grow each side by `margin` × the box's size; with `square`, then grow the short side to
    the long one, both about the centre."""
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) * (1 + 2 * margin), (y1 - y0) * (1 + 2 * margin)
    if square:
        w = h = max(w, h)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def slide_inside(box: Box, width: int, height: int) -> Box:
    """Translate the box so it lies inside the image where it fits (keeps its size and so its
    squareness); a box larger than the image is centred on it."""

    def axis(lo: float, hi: float, size: int) -> Tuple[float, float]:
        span = hi - lo
        if span >= size:
            return (size - span) / 2, (size + span) / 2
        shift = max(0.0, -lo) - max(0.0, hi - size)
        return lo + shift, hi + shift

    x0, x1 = axis(box[0], box[2], width)
    y0, y1 = axis(box[1], box[3], height)
    return x0, y0, x1, y1


def clip(box: Box, width: int, height: int) -> Tuple[int, int, int, int]:
    """Integer pixel box within the image (floor the start, ceil the end); an error if the box
    and the image do not overlap."""
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"box {[round(v, 2) for v in box]} lies outside the {width}x{height} image")
    return x0, y0, x1, y1


def crop_box(box: Sequence[float], width: int, height: int, fmt: str, margin: float, square: bool) -> Tuple[int, int, int, int]:
    """The pixel box cropped for a record box (see the module docstring for the order).

    The record's own box must overlap the image; growth past the border is slid back or clipped.
    """
    px = to_pixels(box, width, height, fmt)
    clip(px, width, height)  # the evidence itself must be in the image
    return clip(slide_inside(grow(px, margin, square), width, height), width, height)


def crop_image(image: Image.Image, box: Tuple[int, int, int, int], upscale: float) -> Image.Image:
    """The cropped region, resized by `upscale` (bicubic) when it is not 1."""
    out = image.crop(box)
    if upscale != 1.0:
        out = out.resize((max(1, round(out.width * upscale)), max(1, round(out.height * upscale))), Image.BICUBIC)
    return out


class Cropper:
    """The crop teacher's image for a record: `box(record, image)` is the pixel box cropped,
    `cropper(record, image)` the cropped (and resized) image. Bad boxes raise `BoxError`."""

    def __init__(self, teacher_cfg, data_cfg):
        self.find = CROP_FNS.get(teacher_cfg.crop_fn, "teacher.crop_fn")
        if teacher_cfg.crop_margin < 0:
            raise ConfigError(f"teacher.crop_margin: expected a non-negative number, got {teacher_cfg.crop_margin}")
        if teacher_cfg.crop_upscale <= 0:
            raise ConfigError(f"teacher.crop_upscale: expected a positive number, got {teacher_cfg.crop_upscale}")
        self.teacher_cfg, self.data_cfg = teacher_cfg, data_cfg

    def box(self, record: Dict[str, Any], image: Image.Image) -> Tuple[int, int, int, int]:
        t = self.teacher_cfg
        raw = self.find(record, image, self.data_cfg)
        return crop_box(raw, image.width, image.height, self.data_cfg.box_format, t.crop_margin, t.crop_square)

    def __call__(self, record: Dict[str, Any], image: Image.Image) -> Image.Image:
        return crop_image(image, self.box(record, image), self.teacher_cfg.crop_upscale)
