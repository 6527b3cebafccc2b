"""Offline teacher caches (Lightning OPD): a teacher's top-k log-probs on fixed rollouts.

On disk a cache is a directory of safetensors shards plus `manifest.json`, which records the
layout and the SHA-256 fingerprints of what the numbers depend on (teacher weights, tokenizer,
data and options). Training compares those fingerprints with its own config's and refuses a
cache that was written for something else. Domains register a writer in `CACHE_WRITERS`
(`uopd cache-teacher CONFIG` calls the one of the config's domain).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Mapping

import torch
from safetensors.torch import load_file, save_file

from .errors import UserError
from .registry import Registry

CACHE_WRITERS = Registry("teacher cache writer", "domain")
MANIFEST = "manifest.json"
FORMAT = 1


def digest_files(paths: Iterable[Path]) -> str:
    """SHA-256 over the files' names and bytes, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def digest_json(obj) -> str:
    """SHA-256 of an object's canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def write_cache(directory: str, shards: Iterable[Mapping[str, torch.Tensor]], manifest: Dict) -> Path:
    """Write shards and the manifest into a temporary sibling, then rename it into place."""
    dest = Path(directory)
    tmp = dest.parent / f".tmp_{dest.name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    names: List[str] = []
    try:
        for i, shard in enumerate(shards):
            name = f"shard_{i:05d}.safetensors"
            save_file({k: v.detach().contiguous().cpu() for k, v in shard.items()}, str(tmp / name))
            names.append(name)
        (tmp / MANIFEST).write_text(json.dumps({**manifest, "format": FORMAT, "shards": names}, indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def read_manifest(directory: str, field: str) -> Dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise UserError(f"{field}: {directory} is not a teacher cache (no {MANIFEST}); write one with `uopd cache-teacher CONFIG`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise UserError(f"{field}: cache format {manifest.get('format')!r} is not {FORMAT}; rewrite it with `uopd cache-teacher`")
    return manifest


def check_fingerprints(manifest: Mapping, expected: Mapping[str, str], field: str) -> None:
    """Refuse a cache whose recorded fingerprints differ from the ones the config implies."""
    for key, value in expected.items():
        got = manifest.get("fingerprints", {}).get(key)
        if got != value:
            raise UserError(
                f"{field}: the cache was written for a different {key} (hash {str(got)[:12]} != {value[:12]}); "
                f"rewrite it with `uopd cache-teacher CONFIG`"
            )


def load_shards(directory: str, manifest: Mapping) -> Dict[str, torch.Tensor]:
    """All shards concatenated along dimension 0, by tensor name."""
    parts = [load_file(str(Path(directory) / name)) for name in manifest["shards"]]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
