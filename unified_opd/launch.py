"""The run's `Accelerator`, and the check that the distributed engine a launch asked for is the
one running: accelerate applies FSDP and DeepSpeed only to GPU-type processes, and on CPU (gloo)
falls back to DDP without a word, which would train replicated while the user believes it sharded."""

from __future__ import annotations

import os
from typing import Any, Mapping

from accelerate import Accelerator
from accelerate.utils import DistributedType

from .errors import UserError

# what `accelerate launch` sets for an FSDP or DeepSpeed config -> the engine it asks for
REQUESTED = {"ACCELERATE_USE_FSDP": (DistributedType.FSDP, "FSDP"), "ACCELERATE_USE_DEEPSPEED": (DistributedType.DEEPSPEED, "DeepSpeed")}


def make_accelerator(t: Any) -> Accelerator:
    """The Accelerator of `trainer.cpu` / `trainer.mixed_precision`, once `check_engine` passes."""
    accelerator = Accelerator(cpu=t.cpu, mixed_precision=t.mixed_precision)
    check_engine(accelerator.distributed_type, os.environ)
    return accelerator


def check_engine(running: DistributedType, env: Mapping[str, str]) -> None:
    """A UserError when the launch asked for FSDP or DeepSpeed: accelerate did not apply it
    (a CPU launch), or it did, and the student's rollouts and checkpoints do not yet gather
    sharded weights (docs/scale.md)."""
    for variable, (engine, name) in REQUESTED.items():
        if env.get(variable, "false").lower() != "true":
            continue
        if running != engine:
            raise UserError(
                f"accelerate launch: the config asks for {name}, but accelerate runs {running.value} here (it applies {name} "
                f"only to GPU processes, not with --cpu or trainer.cpu=true); launch with a DDP config instead"
            )
        raise UserError(
            f"accelerate launch: {name} sharding of the student is not supported yet (rollouts and checkpoints need its "
            f"gathered weights, docs/scale.md); launch with DDP, and cut the trained state with student.lora"
        )
