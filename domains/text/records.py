"""The text run's records: `data.path` / `data.eval_path` read through `unified_opd.data_sources`
(JSONL, JSON, parquet, CSV, a `save_to_disk` directory, a Hub dataset name, or a `zoo:` entry).
Each record holds exactly one of a `prompt` string and a chat `messages` list."""

from __future__ import annotations

from typing import Any, Dict, List

from unified_opd.data_sources import is_hub_dataset, read_records
from unified_opd.zoo import resolve

from .generation import chat_turns


def local_or_hub(path: str, field: str) -> str:
    """`path` with a `zoo:` entry resolved (built if needed); Hub dataset names pass through."""
    return path if is_hub_dataset(path) else resolve(path, field)


def load_split(data_cfg, which: str = "path") -> List[Dict[str, Any]]:
    """The records of `data.path` (split `data.split`) or `data.eval_path` (split `data.eval_split`)."""
    field = f"data.{which}"
    split = data_cfg.split if which == "path" else data_cfg.eval_split
    required = ((data_cfg.prompt_field, data_cfg.messages_field),)
    records = read_records(local_or_hub(data_cfg[which], field), required, field, split, data_cfg.name)
    for i, r in enumerate(records):  # malformed turns fail here, before any model loads
        if data_cfg.messages_field in r:
            chat_turns(r[data_cfg.messages_field], i, data_cfg.messages_field)
    return records
