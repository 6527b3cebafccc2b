"""Image-question records: reading, validating, and loading their images.

A record is a JSONL object with an image path (relative to the JSONL file, or absolute) or a
list of them (several images per prompt; the box is on the first), a prompt or chat `messages`
(their image parts, `{"type": "image"}`, one per image in order), an optional answer, an optional evidence box and an optional task tag. Every record is
checked when the run is built (the image opens and decodes; with a crop teacher, its box
overlaps the image), so bad input fails before training starts and before anything is written:
`data.on_error=raise` stops with a `UserError` naming the record and the field,
`data.on_error=skip` drops the record and reports how many were dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from PIL import Image, UnidentifiedImageError

from unified_opd.data import read_jsonl
from unified_opd.errors import UserError, require_one_of
from unified_opd.zoo import console

from .crops import BoxError

IMAGE_PATH = "_image_path"  # the resolved image path stored on each loaded record
ON_ERROR = ("raise", "skip")


class RecordError(ValueError):
    """A record cannot be used; `field` names the offending record field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _open(path: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise RecordError("image", f"image file not found: {path}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise RecordError("image", f"cannot read image {path}: {e}") from e


def load_images(record: Dict[str, Any]) -> List[Image.Image]:
    """The record's images as RGB, fully decoded (truncated files fail here, not mid-training)."""
    paths = record[IMAGE_PATH]
    return [_open(p) for p in (paths if isinstance(paths, list) else [paths])]


def load_image(record: Dict[str, Any]) -> Image.Image:
    """The record's first image: the one its box is on."""
    return load_images(record)[0]


def _image_paths(record: Dict[str, Any], base: Path, data_cfg) -> Union[str, List[str]]:
    """The record's image path (a string) or paths (a list, one per image part), resolved."""
    image = record.get(data_cfg.image_field)
    names = image if isinstance(image, list) else [image]
    if not names or not all(isinstance(x, str) and x for x in names):
        raise RecordError(
            data_cfg.image_field,
            f"no {data_cfg.image_field!r} field (a path or a list of paths); the vision student needs an image for every prompt",
        )
    paths = [str(Path(x) if Path(x).is_absolute() else base / x) for x in names]
    return paths if isinstance(image, list) else paths[0]


def _check_messages(record: Dict[str, Any], data_cfg, images: int) -> None:
    messages = record[data_cfg.messages_field]
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), list) for m in messages):
        raise RecordError(data_cfg.messages_field, "expected a list of chat messages, each with a 'role' and a 'content' list")
    parts = [c for m in messages for c in m["content"] if isinstance(c, dict)]
    shown = sum(c.get("type") == "image" for c in parts)
    if shown != images:
        raise RecordError(data_cfg.messages_field, f"{shown} image parts in the messages, but {images} images in {data_cfg.image_field!r}")


def _check(record: Dict[str, Any], base: Path, data_cfg, cropper: Optional[Callable]) -> Dict[str, Any]:
    paths = _image_paths(record, base, data_cfg)
    if data_cfg.messages_field in record:
        _check_messages(record, data_cfg, len(paths) if isinstance(paths, list) else 1)
    elif not isinstance(record.get(data_cfg.prompt_field), str):
        raise RecordError(data_cfg.prompt_field, f"no string {data_cfg.prompt_field!r} field (nor {data_cfg.messages_field!r})")
    out = {**record, IMAGE_PATH: paths}
    loaded = load_images(out)
    if cropper is not None:
        try:
            cropper(out, loaded[0])
        except BoxError as e:
            raise RecordError(data_cfg.box_field, str(e)) from e
    return out


def load_records(
    path: str, data_cfg, cropper: Optional[Callable], field: str = "data.path"
) -> Tuple[List[Dict[str, Any]], int]:
    """Read and validate a JSONL file of image records; returns (usable records, number skipped)."""
    require_one_of("data.on_error", data_cfg.on_error, ON_ERROR)
    raw = read_jsonl(path, (), field)
    base = Path(path).resolve().parent
    records, skipped, first = [], 0, None
    for i, rec in enumerate(raw):
        try:
            records.append(_check(rec, base, data_cfg, cropper))
        except RecordError as e:
            message = f"{field}: record {i} of {path}, field {e.field!r}: {e}"
            if data_cfg.on_error == "raise":
                raise UserError(message + " (set data.on_error=skip to drop bad records)") from e
            skipped += 1
            first = first or message
    if skipped:
        console.print(f"[yellow]warning[/yellow]: skipped {skipped} of {len(raw)} records in {path}; first: {first}")
    if not records:
        raise UserError(f"{field}: no usable records in {path} ({skipped} skipped)")
    return records, skipped
