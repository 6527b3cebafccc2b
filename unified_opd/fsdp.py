"""FSDP2 for the student: sharding with torch's `fully_shard`, parameters gathered where the
student is used outside its own forward (rollouts, evaluation, `final/`), and sharded
checkpoints through `torch.distributed.checkpoint`.

A launch asks for FSDP through accelerate (`accelerate launch --config_file
configs/accelerate/fsdp2.yaml`, which sets `ACCELERATE_USE_FSDP`). Where accelerate applies it
(GPU processes) `accelerator.prepare` shards the student; where it does not (CPU processes over
gloo: its `AcceleratorState` keeps them `MULTI_CPU`), `shard` does what accelerate's FSDP2 does:
one `fully_shard` group per decoder layer (the model's `_no_split_modules`) and one for the root
(embeddings, final norm, output head). Either way the student's module is then an `FSDPModule`,
and everything below treats both alike.

Why the root matters: `fully_shard` gathers a group's parameters in that module's forward. A
rollout calls the language model inside the root (the root's forward never runs), so `gathered`
unshards the root's own group around it; the decoder layers still gather themselves, one at a
time. After a forward the root keeps its parameters gathered until the backward is done
(torch's default for the root), which is what lets the lazy scorer read the output head after
the forward.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Sequence, Set, Tuple

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.fsdp import FSDPModule

# torch.distributed.fsdp and .checkpoint are imported where they are used: together they cost
# ~1.3 s of import, which every run without FSDP (and every CLI error) would otherwise pay

from . import checkpoint as ckpt
from .errors import ConfigError, UserError

FSDP_ENV = "ACCELERATE_USE_FSDP"
SHARDED = "sharded"  # the torch.distributed.checkpoint directory inside a checkpoint
LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


def requested(env: Mapping[str, str] = os.environ) -> bool:
    """True when the launch asks for FSDP (accelerate's launcher sets the variable from its config)."""
    return env.get(FSDP_ENV, "false").lower() == "true"


def check_request(cfg: Any, env: Mapping[str, str] = os.environ) -> None:
    """What FSDP cannot do, before anything is loaded: FSDP1, and an EMA self-teacher (it would
    average a replicated copy with the student's shards)."""
    if not requested(env):
        return
    version = env.get("FSDP_VERSION", "1")
    if version != "2":
        raise UserError(f"accelerate launch: fsdp_version {version} is not supported; set fsdp_version: 2 (configs/accelerate/fsdp2.yaml)")
    t = getattr(cfg, "teacher", None)
    if t is not None and getattr(t, "kind", None) == "self" and 0.0 < float(getattr(t, "ema", 0.0)) < 1.0:
        raise ConfigError(
            f"teacher.ema: an EMA self-teacher ({t.ema}) is not supported with FSDP (the average would mix a replicated "
            f"copy with the student's shards); use teacher.ema 0 (live) or 1 (frozen), or launch with DDP"
        )
    rollout = getattr(cfg, "rollout", None)
    if rollout is not None and int(getattr(rollout, "max_staleness", 0) or 0) > 0:
        raise ConfigError(
            f"rollout.max_staleness: background rollouts ({rollout.max_staleness}) sample from a weight snapshot, "
            f"which a sharded student does not have; use rollout.max_staleness 0 with FSDP, or launch with DDP"
        )


def layer_classes(module: nn.Module) -> Set[str]:
    """The class names `fully_shard` gives a group each: the `_no_split_modules` of every
    transformers / diffusers model inside `module` that it actually instantiates."""
    named = {name for m in module.modules() for name in (getattr(m, "_no_split_modules", None) or ())}
    return {type(m).__name__ for m in module.modules() if type(m).__name__ in named}


def shard(module: nn.Module, mixed_precision: str = "no") -> nn.Module:
    """`module` sharded in place over all processes: a `fully_shard` group per decoder layer, then
    the root. With `mixed_precision` bf16 / fp16 the gathered weights are that type for the
    compute while the shards (master weights), gradients' reduction and AdamW stay float32."""
    layers = layer_classes(module)
    if not layers:
        raise UserError(
            f"FSDP: the student ({type(module).__name__}) holds no model with _no_split_modules naming its layers, "
            f"so it cannot be sharded per layer; launch with DDP"
        )
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtype = LOW_PRECISION.get(str(mixed_precision))
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
    for m in list(module.modules()):
        if type(m).__name__ in layers:
            fully_shard(m, mp_policy=policy)
    fully_shard(module, mp_policy=policy)
    _init_root(module)
    return module


def _init_root(module: FSDPModule) -> None:
    """Make `module` the root of its FSDP states now. torch picks as root the first state whose
    forward runs, and a rollout's first forward is a decoder layer's (the sampler calls the
    model inside the root), which would make that layer a root of its own."""
    from torch.distributed.fsdp import fully_shard

    fully_shard.state(module)._lazy_init()


def prepare(
    accelerator: Accelerator, module: nn.Module, make_optimizer: Callable[[List[nn.Parameter]], torch.optim.Optimizer],
    mixed_precision: str, env: Mapping[str, str] = os.environ,
) -> Tuple[nn.Module, torch.optim.Optimizer]:
    """The student's training module and its optimizer, through accelerate: replicated (DDP or one
    process), sharded by accelerate (FSDP on GPUs), or sharded here (FSDP asked for on CPU)."""
    if requested(env) and accelerator.distributed_type != DistributedType.FSDP:
        shard(module, mixed_precision)
        optimizer = accelerator.prepare(make_optimizer([p for p in module.parameters() if p.requires_grad]))
        return module, optimizer
    if requested(env) and not hasattr(module, "_no_split_modules"):
        # accelerate's TRANSFORMER_BASED_WRAP reads the prepared module's own attribute; the
        # student's module wraps the transformers model that has it
        module._no_split_modules = sorted(layer_classes(module))
    prepared, optimizer = accelerator.prepare(module, make_optimizer([p for p in module.parameters() if p.requires_grad]))
    if is_sharded(prepared):
        _init_root(prepared)
    return prepared, optimizer


def is_sharded(module: nn.Module) -> bool:
    # nothing can be an FSDPModule before torch.distributed.fsdp is imported (by `shard` or accelerate)
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(module, fsdp.FSDPModule)


@contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """The root group's parameters gathered (a collective: every rank enters it) while the
    student is used outside its own forward, e.g. to sample; a no-op for an unsharded module."""
    if not is_sharded(module):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def full_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Every rank calls it; the main process gets the full (float32 master) state dict on CPU,
    the others an empty dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


@contextmanager
def full_parameters(module: nn.Module, state: Dict[str, torch.Tensor]) -> Iterator[None]:
    """`module`'s parameters replaced by the full tensors of `state` (from `full_state`) while
    inside, so code that reads the module as usual (`save_pretrained`) sees a normal model;
    tied parameters stay one tensor. The shards are put back afterwards."""
    owners: Dict[int, List[Tuple[nn.Module, str]]] = {}
    names: Dict[int, str] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        owner_name, _, attr = name.rpartition(".")
        owners.setdefault(id(p), []).append((module.get_submodule(owner_name), attr))
        names.setdefault(id(p), name)
    saved = {pid: places[0][0]._parameters[places[0][1]] for pid, places in owners.items()}
    try:
        for pid, places in owners.items():
            full = nn.Parameter(state[names[pid]], requires_grad=False)
            for owner, attr in places:
                owner._parameters[attr] = full
        yield
    finally:
        for pid, places in owners.items():
            for owner, attr in places:
                owner._parameters[attr] = saved[pid]


@contextmanager
def saving_final(accelerator: Accelerator, module: nn.Module) -> Iterator[None]:
    """Around writing `final/` (main process): a sharded student is gathered into a normal model
    on the main process first. Every rank enters it."""
    if not is_sharded(module):
        yield
        return
    state = full_state(module)
    if not accelerator.is_main_process:
        yield
        return
    with full_parameters(module, state):
        yield


# ------------------------------------------------------------------ checkpoints
class ShardedCheckpoints:
    """Checkpoints of a sharded student: each rank writes its shards of the weights and of
    AdamW's state (`torch.distributed.checkpoint`, into `sharded/`) and its own RNG state; the
    main process writes the rest (`checkpoint.save_checkpoint`'s files) and commits the
    directory with the same atomic rename, so a crash never leaves a checkpoint that counts."""

    def __init__(self, accelerator: Accelerator, module: nn.Module, optimizer: torch.optim.Optimizer):
        self.acc, self.module, self.optimizer = accelerator, module, optimizer

    def _states(self) -> Dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model, optim = get_state_dict(self.module, _inner(self.optimizer))
        return {"model": model, "optimizer": optim}

    def save(self, root: Path, step: int, state: Dict[str, Any], teacher_state, keep: int, generators: Sequence[torch.Generator]) -> None:
        import torch.distributed.checkpoint as dcp

        ckpt.save_from_every_rank(
            self.acc, root, step, lambda tmp: None, lambda tmp: dcp.save(self._states(), checkpoint_id=str(tmp / SHARDED)),
            state, teacher_state, keep, generators,
        )

    def load(self, path: Path, field: str) -> Dict[str, Any]:
        if not (path / SHARDED).is_dir():
            raise UserError(
                f"{field}: checkpoint {path} holds a replicated student (model.safetensors), not FSDP shards; "
                f"resume it with the launch that wrote it (DDP or one process)"
            )
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        data = ckpt.load_checkpoint(path)
        states = self._states()
        dcp.load(states, checkpoint_id=str(path / SHARDED))
        set_state_dict(self.module, _inner(self.optimizer), model_state_dict=states["model"], optim_state_dict=states["optimizer"])
        return ckpt.use_rank_rng(data, path, self.acc.process_index)


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer under accelerate's wrapper (the state-dict helpers read its param groups)."""
    return getattr(optimizer, "optimizer", optimizer)


def checkpoints_for(accelerator: Accelerator, module: nn.Module, optimizer: torch.optim.Optimizer):
    """The checkpoint writer for the student as prepared: sharded or replicated."""
    if is_sharded(module):
        return ShardedCheckpoints(accelerator, module, optimizer)
    return ckpt.ReplicatedCheckpoints(accelerator, module, optimizer)
