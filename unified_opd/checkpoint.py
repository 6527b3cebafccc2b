"""Atomic checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is a directory `step_00000100/` holding `model.safetensors`, `optimizer.safetensors`
+ `optimizer.json`, `teacher.safetensors` (only for stateful teachers), `rng.safetensors`, and
`state.json` (scheduler, RNG, data position, trainer counters); a sharded (FSDP) student's weights
and optimizer state are `sharded/` instead; with several processes (DDP, FSDP) each rank's RNG is in `rng_rank<i>.*`. It is written into a temporary
sibling directory, every file fsynced, then renamed into place, and only counts once its
`COMPLETE` marker exists, so a crash mid-save leaves the previous checkpoint usable. Checkpoints
are deleted (pruned, or replaced by a re-save of the same step) by first renaming them out of the
`step_*` namespace, so a crash mid-delete never leaves a half-deleted directory that still looks
complete. Nothing is ever unpickled on load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file

from .errors import UserError
from .lora import checkpoint_state, load_checkpoint_state

COMPLETE = "COMPLETE"
PREFIX = "step_"
TMP = ".tmp_"  # a checkpoint being written
TRASH = ".trash_"  # a checkpoint being deleted


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _save_tensors(path: Path, tensors: Dict[str, torch.Tensor]) -> None:
    # safetensors refuses shared storage (tied weights); contiguous clones are exact copies
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# ------------------------------------------------------------------ optimizer <-> flat tensors
def flatten_optimizer(state: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Split an optimizer state_dict into tensors (safetensors) and JSON-able structure."""
    tensors: Dict[str, torch.Tensor] = {}
    meta_state: Dict[str, Dict[str, Any]] = {}
    for pid, slots in state["state"].items():
        meta_state[str(pid)] = {}
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value
                meta_state[str(pid)][name] = {"tensor": f"{pid}.{name}"}
            else:
                meta_state[str(pid)][name] = {"value": value}
    return tensors, {"state": meta_state, "param_groups": state["param_groups"]}


def unflatten_optimizer(tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Dict[str, Any]:
    state = {}
    for pid, slots in meta["state"].items():
        state[int(pid)] = {
            name: tensors[s["tensor"]] if "tensor" in s else s["value"] for name, s in slots.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


# ------------------------------------------------------------------ RNG
def capture_rng(generators: Sequence[torch.Generator] = ()) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The global Python, NumPy, torch (and CUDA) generators' states, and those of `generators`
    (a domain's own, `Components.generators`)."""
    tensors = {"torch": torch.get_rng_state()}
    tensors.update({f"generator{i}": g.get_state() for i, g in enumerate(generators)})
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def restore_rng(tensors: Dict[str, torch.Tensor], meta: Dict[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    torch.set_rng_state(tensors["torch"])
    for i, g in enumerate(generators):
        g.set_state(tensors[f"generator{i}"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def seed_rank(seed: int, rank: int, generators: Sequence[torch.Generator] = ()) -> None:
    """Give process `rank` of a multi-process run its own random stream, `seed + rank`, once every
    rank has built the same models from `seed`: with one stream everywhere, row i of every rank's
    batch would be sampled from the same uniforms (the same noise, in diffusion)."""
    set_seed(seed + rank)
    for g in generators:
        g.manual_seed(g.initial_seed() + rank)


@contextmanager
def rng_preserved(generators: Sequence[torch.Generator] = ()):
    """Every generator is back where it was afterwards: what runs inside (an evaluation) draws
    nothing from training's stream, so a resumed run sees the same numbers as an uninterrupted one."""
    tensors, meta = capture_rng(generators)
    try:
        yield
    finally:
        restore_rng(tensors, meta, generators)


# ------------------------------------------------------------------ save / load
def _write_student(tmp: Path, model_state: Dict[str, torch.Tensor], optimizer_state: Dict[str, Any]) -> None:
    _save_tensors(tmp / "model.safetensors", model_state)
    opt_tensors, opt_meta = flatten_optimizer(optimizer_state)
    _save_tensors(tmp / "optimizer.safetensors", opt_tensors)
    _write_json(tmp / "optimizer.json", opt_meta)


def save_checkpoint(
    root: Path,
    step: int,
    model_state: Dict[str, torch.Tensor],
    optimizer_state: Dict[str, Any],
    state: Dict[str, Any],
    teacher_state: Optional[Dict[str, torch.Tensor]] = None,
    keep: int = 2,
    generators: Sequence[torch.Generator] = (),
) -> Path:
    """Write checkpoint `step` atomically under `root`, then prune to the newest `keep`."""
    tmp = staging_dir(root, step)
    open_staging(root, tmp)
    _write_student(tmp, model_state, optimizer_state)
    return commit_checkpoint(root, tmp, step, state, teacher_state, keep, generators)


def staging_dir(root: Path, step: int) -> Path:
    """Where checkpoint `step` is written before it counts; one name for every process of a
    run, so the ranks of a sharded save write into the same directory."""
    return root / f"{TMP}{PREFIX}{step:08d}"


def open_staging(root: Path, tmp: Path) -> None:
    """An empty staging directory `tmp`, after removing what a killed save left behind."""
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    tmp.mkdir()


def commit_checkpoint(
    root: Path, tmp: Path, step: int, state: Dict[str, Any], teacher_state: Optional[Dict[str, torch.Tensor]],
    keep: int, generators: Sequence[torch.Generator],
) -> Path:
    """Complete the staged checkpoint `tmp` (teacher, RNG, state, the COMPLETE marker), rename it
    into place as `step_XXXXXXXX`, then prune to the newest `keep`."""
    final = root / f"{PREFIX}{step:08d}"
    if teacher_state:
        _save_tensors(tmp / "teacher.safetensors", teacher_state)
    rng_tensors, rng_meta = capture_rng(generators)
    _save_tensors(tmp / "rng.safetensors", rng_tensors)
    _write_json(tmp / "state.json", {**state, "rng": rng_meta, "step": step})
    _write_json(tmp / COMPLETE, {"step": step})
    for sub in [p for p in tmp.rglob("*") if p.is_dir()] + [tmp]:
        _fsync_dir(sub)
    if final.exists():  # the end of a run re-saves its last step
        _discard(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        _discard(old)
    return final


def save_from_every_rank(
    acc, root: Path, step: int, write_main: Callable[[Path], None], write_every_rank: Callable[[Path], None],
    state: Dict[str, Any], teacher_state: Optional[Dict[str, torch.Tensor]], keep: int, generators: Sequence[torch.Generator],
) -> None:
    """One checkpoint written by all processes of a run: the main process opens the staging
    directory and writes `write_main(tmp)`; every process writes `write_every_rank(tmp)` and, when
    there are several, its own RNG state (the ranks sample different prompts, so their generators drift apart: one
    rank's state restored everywhere would make a resumed run draw other tokens); the main process
    commits once every rank is done."""
    tmp = staging_dir(root, step)
    if acc.is_main_process:
        open_staging(root, tmp)
        write_main(tmp)
    acc.wait_for_everyone()
    write_every_rank(tmp)
    if acc.num_processes > 1:
        save_rng(tmp, generators, rank=acc.process_index)
    acc.wait_for_everyone()
    if acc.is_main_process:
        commit_checkpoint(root, tmp, step, state, teacher_state, keep, generators)
    acc.wait_for_everyone()


def use_rank_rng(data: Dict[str, Any], path: Path, rank: int) -> Dict[str, Any]:
    """`data` (a loaded checkpoint) with `rank`'s own RNG state, where the checkpoint has one."""
    rank_rng = rng_files(path, rank)
    if rank_rng is not None:
        data["rng_tensors"], data["state"]["rng"] = rank_rng
    return data


def save_rng(tmp: Path, generators: Sequence[torch.Generator], rank: int) -> None:
    """This process's RNG state (`rng_rank<i>.*`): the ranks of one run draw different numbers."""
    tensors, meta = capture_rng(generators)
    _save_tensors(tmp / f"rng_rank{rank}.safetensors", tensors)
    _write_json(tmp / f"rng_rank{rank}.json", meta)


def rng_files(path: Path, rank: int) -> Optional[Tuple[Dict[str, torch.Tensor], Dict[str, Any]]]:
    """What `save_rng` wrote for `rank`, or None when the checkpoint has no per-rank RNG."""
    tensors = path / f"rng_rank{rank}.safetensors"
    if not tensors.is_file():
        return None
    return load_file(str(tensors)), json.loads((path / f"rng_rank{rank}.json").read_text())


def _discard(path: Path) -> None:
    """Delete a checkpoint; the rename makes it stop counting at once, whatever rmtree gets to."""
    trash = path.parent / f"{TRASH}{path.name}_{os.getpid()}"
    os.replace(path, trash)
    _fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _sweep(root: Path) -> None:
    """Remove what a killed save or delete left behind (possibly a whole model's worth of disk);
    only this process writes under `root`, so none of it is in use."""
    for p in root.iterdir():
        if p.name.startswith((TMP, TRASH)):
            shutil.rmtree(p, ignore_errors=True)


def list_checkpoints(root: Path) -> List[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / COMPLETE).is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: Path) -> Optional[Path]:
    cps = list_checkpoints(root)
    return cps[-1] if cps else None


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read a checkpoint directory (tensors via safetensors, the rest via JSON); `model` and
    `optimizer` are None for a sharded checkpoint (`unified_opd.fsdp` reads those)."""
    if not (path / COMPLETE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {COMPLETE} marker)")
    state = json.loads((path / "state.json").read_text())
    replicated = (path / "model.safetensors").is_file()  # else the student is in `sharded/` (unified_opd.fsdp)
    out = {
        "model": load_file(str(path / "model.safetensors")) if replicated else None,
        "optimizer": unflatten_optimizer(
            load_file(str(path / "optimizer.safetensors")), json.loads((path / "optimizer.json").read_text())
        ) if replicated else None,
        "rng_tensors": load_file(str(path / "rng.safetensors")),
        "state": state,
        "teacher": load_file(str(path / "teacher.safetensors")) if (path / "teacher.safetensors").is_file() else None,
    }
    return out


def load_into(path: Path, model: torch.nn.Module, optimizer, field: str) -> Dict[str, Any]:
    """Load checkpoint `path`, put its weights into `model` and `optimizer`, return the rest.
    A checkpoint of another model or optimizer is a UserError naming `field`."""
    data = load_checkpoint(path)
    if data["model"] is None:
        raise UserError(
            f"{field}: checkpoint {path} holds an FSDP-sharded student; resume it with an FSDP launch "
            f"(accelerate launch --config_file configs/accelerate/fsdp2.yaml)"
        )
    try:
        load_checkpoint_state(model, data["model"])
        optimizer.load_state_dict(data["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[:2])
        raise UserError(
            f"{field}: checkpoint {path} was written for another model or optimizer ({detail}); "
            f"resume it with the configuration that wrote it, or use another trainer.output_dir"
        ) from e
    return data


class ReplicatedCheckpoints:
    """Checkpoints of a student every rank holds whole (one process, DDP): the main process
    writes the weights and optimizer state, each DDP rank its own RNG state; every rank reads them."""

    def __init__(self, accelerator, module: torch.nn.Module, optimizer):
        self.acc, self.module, self.optimizer = accelerator, module, optimizer

    def save(self, root: Path, step: int, state: Dict[str, Any], teacher_state, keep: int, generators: Sequence[torch.Generator]) -> None:
        def write_main(tmp: Path) -> None:
            _write_student(tmp, checkpoint_state(self.acc.unwrap_model(self.module)), self.optimizer.state_dict())

        save_from_every_rank(self.acc, root, step, write_main, lambda tmp: None, state, teacher_state, keep, generators)

    def load(self, path: Path, field: str) -> Dict[str, Any]:
        data = load_into(path, self.acc.unwrap_model(self.module), self.optimizer, field)
        return use_rank_rng(data, path, self.acc.process_index)


class atomic_directory:
    """`with atomic_directory(dest) as tmp:` write into `tmp`; on success it replaces `dest`
    in one rename, on an exception `dest` is left untouched and `tmp` removed."""

    def __init__(self, dest: Path):
        self.dest = Path(dest)
        self.tmp = self.dest.parent / f".tmp_{self.dest.name}_{os.getpid()}"

    def __enter__(self) -> Path:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        for f in self.tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if self.dest.exists():
            old = self.dest.parent / f".old_{self.dest.name}_{os.getpid()}"
            os.replace(self.dest, old)
        os.replace(self.tmp, self.dest)
        _fsync_dir(self.dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False
