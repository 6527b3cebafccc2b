"""The zoo: small teachers and students the project trains itself for its built-in tasks.

Entries are built once and cached under `$UOPD_HOME/zoo` (default `~/.cache/unified_opd/zoo`).
Config paths like `zoo:arith/teacher` resolve into that cache and build the entry on first use.
Each entry has a version, written into its completion marker; a cached entry built by another
version (the builder's data, models or training changed since) is rebuilt on its next use.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console

from .domain import BUILTIN_DOMAINS
from .errors import ConfigError, UserError
from .hub import check_hub_model, looks_like_hub_id
from .registry import Registry

ZOO = Registry("zoo entry", "zoo")
PREFIX = "zoo:"
DONE = "ZOO_COMPLETE"
console = Console(stderr=True)


def zoo_home() -> Path:
    home = os.environ.get("UOPD_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "unified_opd"
    return base / "zoo"


def register_zoo(name: str, version: int = 1) -> Callable:
    """Decorator: `builder(dest: Path) -> None` writes entry `name` into `dest`.

    Bump `version` whenever what the builder writes changes, so caches of the old models are
    rebuilt instead of silently reused."""

    def add(builder: Callable) -> Callable:
        builder.zoo_version = version
        return ZOO.register(name, builder)

    return add


def cached_version(dest: Path) -> int | None:
    """The version of the entry cached in `dest`; None if no complete build is there.

    Markers written before entries had versions hold `ok` and count as version 1."""
    marker = dest / DONE
    if not marker.is_file():
        return None
    text = marker.read_text().strip()
    return int(text) if text.isdigit() else 1


def _load_builtin_entries() -> None:
    for d in BUILTIN_DOMAINS:
        try:
            importlib.import_module(f"unified_opd.domains.{d}")
        except ImportError:
            continue


def builder_of(name: str) -> Callable:
    """The registered builder of entry `name` (its `zoo_version` is the current version)."""
    if name not in ZOO:
        _load_builtin_entries()
    return ZOO.get(name, "zoo")


def mark_built(dest: Path, name: str) -> None:
    """Mark `dest` as a complete build of entry `name` at the current version."""
    (dest / DONE).write_text(f"{builder_of(name).zoo_version}\n")


def build(name: str, force: bool = False) -> Path:
    """Build zoo entry `name` (unless cached at the current version) and return its directory."""
    builder = builder_of(name)
    dest = zoo_home() / name
    cached = cached_version(dest)
    if cached == builder.zoo_version and not force:
        return dest
    if cached is not None and not force:
        console.print(
            f"[yellow]zoo[/yellow] {name}: the cache holds version {cached}, "
            f"this code builds version {builder.zoo_version}; rebuilding"
        )
    tmp = dest.parent / f".tmp_{name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        builder(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    mark_built(tmp, name)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    console.print(f"[green]zoo[/green] {name} ready at {dest}")
    return dest


def resolve(path: str, field: str) -> str:
    """`zoo:NAME/sub/path` -> a real path (building NAME if needed); other paths must exist."""
    if path.startswith(PREFIX):
        rest = path[len(PREFIX) :]
        name, _, sub = rest.partition("/")
        entry = zoo_home() / name
        if cached_version(entry) is None:
            console.print(f"[yellow]zoo[/yellow] {name} is not built yet; building it now (one time only)")
        root = build(name)
        target = root / sub if sub else root
        if not target.exists():
            raise UserError(f"{field}: zoo entry {name!r} has no {sub!r}")
        return str(target)
    if not Path(path).exists():
        raise UserError(f"{field}: path not found: {path}")
    return path


def check_eval_data(data) -> None:
    """Your own `data.path` with the zoo's held-out set would evaluate your model on another task
    (and build that zoo entry first): an error, before anything is built."""
    own, held_out = str(data.path), data.eval_path
    if held_out and str(held_out).startswith(PREFIX) and not own.startswith(PREFIX):
        raise ConfigError(
            f"data.eval_path: {held_out} is a zoo task's held-out set but data.path is your own data ({own}); "
            f"set data.eval_path to your held-out records, or data.eval_path=null to evaluate on data.path"
        )


def check_local_paths(paths: dict, models: Optional[dict] = None) -> None:
    """Fail fast on a missing local path before any (slow) zoo build starts.

    `paths` maps dotted config fields to values; `None` and `zoo:` values are skipped. `models`
    maps the model fields that may also name a Hub model (`owner/name`) to their revision; such a
    value must be fetchable or in the Hugging Face cache (`hub.check_hub_model`, a 3 s probe)."""
    models = models or {}
    for field, path in paths.items():
        if field in models and path and looks_like_hub_id(path):
            check_hub_model(str(path), models[field], field)
        elif path and not str(path).startswith(PREFIX) and not Path(path).exists():
            raise UserError(f"{field}: path not found: {path}")
