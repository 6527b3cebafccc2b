"""Task records from wherever a user keeps them: JSONL / JSON files, parquet and CSV files, a
`Dataset.save_to_disk` directory, or a Hugging Face Hub dataset name.

Every source becomes the same list of dicts (columns that are null in a row are dropped, so a
parquet file and the JSONL it came from give identical records), in file order, so `DataStream`'s
resumable shuffling works unchanged. JSONL keeps its own line-numbered reader (`read_jsonl`);
the other formats go through `datasets`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .data import check_fields, read_jsonl
from .errors import UserError
from .hub import HUB_ID, hub_unreachable

Required = Sequence[Union[str, tuple]]
# file suffix -> the `datasets` builder that reads it
BUILDERS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}
DATA_SUFFIXES = (".jsonl", ".json", ".arrow", ".txt", *BUILDERS)


def is_hub_dataset(path: str) -> bool:
    """`owner/name` that is not a local path or a data file name (a missing `data/train.jsonl` stays "path not found")."""
    p = str(path)
    return bool(HUB_ID.match(p)) and not Path(p).exists() and not p.lower().endswith(DATA_SUFFIXES)


def read_records(
    path: str, required: Required = ("prompt",), field: str = "data.path", split: str = "train", name: Optional[str] = None
) -> List[Dict[str, Any]]:
    """The records of `path` (a local file or directory, already `zoo.resolve`d, or a Hub dataset name)."""
    if is_hub_dataset(path):
        return _checked(_rows(_load_hub(path, name, split, field)), required, field, path)
    p = Path(path)
    if p.is_dir():
        return _checked(_rows(_load_disk(p, split, field)), required, field, path)
    suffix = p.suffix.lower()
    if suffix == ".json" and p.is_file() and _first_char(p) == "[":
        return _checked(_json_array(p, field), required, field, path)
    if suffix in BUILDERS and p.is_file():
        return _checked(_rows(_load_file(p, BUILDERS[suffix], field)), required, field, path)
    return read_jsonl(path, required, field)  # JSONL and JSON lines; also names a missing file


def _first_char(p: Path) -> str:
    with open(p, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.strip()[0]
    return ""


def _json_array(p: Path, field: str) -> List[Any]:
    try:
        rows = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{field}: {p} is not valid JSON ({e.msg} at line {e.lineno})") from e
    return rows


def _load_file(p: Path, builder: str, field: str):
    datasets = _datasets()

    try:
        # CSV cells stay strings: an answer "007" or "3/4" must not become a number
        options = _csv_options(p) if builder == "csv" else {}
        return datasets.load_dataset(builder, data_files=str(p), split="train", **options)
    except Exception as e:  # pyarrow / pandas parse errors have no common base class
        raise UserError(f"{field}: cannot read {p} as {builder}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def _datasets():
    """`datasets`, imported on first use (it costs a second at start-up), its per-file progress bars off."""
    import datasets

    datasets.disable_progress_bars()
    return datasets


def _csv_options(p: Path) -> Dict[str, Any]:
    """Every column read as strings (the header names them), comma- or tab-separated by suffix."""
    import csv

    datasets = _datasets()
    sep = "\t" if p.suffix.lower() == ".tsv" else ","
    with open(p, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f, delimiter=sep), [])
    return {"sep": sep, "features": datasets.Features({c: datasets.Value("string") for c in header})}


def _load_disk(p: Path, split: str, field: str):
    datasets = _datasets()

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError as e:
        raise UserError(f"{field}: {p} is a directory but not one written by Dataset.save_to_disk") from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"{field}: {p} has no split {split!r} (it has {sorted(ds)}); set data.split")
        ds = ds[split]
    return ds


def _load_hub(repo: str, name: Optional[str], split: str, field: str):
    from huggingface_hub import constants

    datasets = _datasets()
    args = f"{repo!r}" + (f", {name!r}" if name else "")
    how = (
        f"download it on a connected machine (datasets.load_dataset({args}).save_to_disk(DIR)) and set "
        f"{field}=DIR or a parquet/JSONL file; with a copy in the Hugging Face cache, set HF_DATASETS_OFFLINE=1"
    )
    offline = constants.HF_HUB_OFFLINE or datasets.config.HF_DATASETS_OFFLINE
    if not offline and hub_unreachable():
        raise UserError(f"{field}: Hub dataset {repo!r} cannot be fetched: the Hub is unreachable; {how}")
    try:
        return datasets.load_dataset(repo, name, split=split)
    except Exception as e:  # offline, unknown repo, bad config or split: all end the run the same way
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{field}: cannot load Hub dataset {repo!r} (name={name}, split={split}): {msg}; {how}") from e


def _rows(ds) -> List[Dict[str, Any]]:
    return [{k: v for k, v in row.items() if v is not None} for row in ds]


def _checked(rows: List[Any], required: Required, field: str, path: str) -> List[Dict[str, Any]]:
    if not rows:
        raise UserError(f"{field}: {path} holds no records")
    for i, rec in enumerate(rows):
        where = f"{path} record {i}"
        if not isinstance(rec, dict):
            raise UserError(f"{field}: {where} must be a JSON object")
        check_fields(rec, required, field, where)
    return rows
