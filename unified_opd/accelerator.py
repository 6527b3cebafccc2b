"""The run's `Accelerator`: devices, processes and experiment trackers.

Accelerate decides devices and multi-process launch. Two things it does not do on its own:
- under `accelerate launch --num_processes N` on a machine with no GPU, `Accelerator()` without
  `cpu=True` stays single-process, so N independent copies of the job would run side by side and
  write the same files. On such a machine the run asks for CPU processes: one job over N gloo ranks.
- it applies FSDP and DeepSpeed only to GPU-type processes, and on CPU (gloo) falls back to DDP
  without a word; for FSDP the student is then sharded by `unified_opd.fsdp` instead, and
  DeepSpeed stops at start-up (`check_engine`), rather than train replicated while the user
  believes it sharded.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, LoggerType, ProjectConfiguration
from omegaconf import DictConfig

from .errors import ConfigError, UserError

TRACKERS = tuple(t.value for t in LoggerType if t.value != "all")


def check_trackers(report_to: Sequence[str]) -> List[str]:
    """`trainer.report_to`, checked: known tracker names whose packages are installed."""
    names = [str(n) for n in report_to]
    for i, name in enumerate(names):
        if name not in TRACKERS:
            raise ConfigError(f"trainer.report_to[{i}]: unknown tracker {name!r}; expected one of {', '.join(TRACKERS)}")
        available = getattr(importlib.import_module("accelerate.utils"), f"is_{name}_available")
        if not available():
            raise ConfigError(f"trainer.report_to[{i}]: {name!r} needs its package; install it (pip install {name}) or remove it")
    return names


def make_accelerator(t: DictConfig, output_dir: Optional[str] = None) -> Accelerator:
    """The Accelerator for trainer settings `t`, once `check_engine` passes; trackers
    (`t.report_to`) log under `output_dir`."""
    cpu = bool(t.cpu) or not torch.accelerator.is_available()
    trackers = {}
    if output_dir is not None and t.report_to:
        out = Path(output_dir)
        project = ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "trackers"))
        trackers = dict(log_with=list(t.report_to), project_config=project)
    accelerator = Accelerator(cpu=cpu, mixed_precision=t.mixed_precision, **trackers)
    check_engine(accelerator.distributed_type, os.environ)
    return accelerator


def check_engine(running: DistributedType, env: Mapping[str, str]) -> None:
    """A UserError when the launch asked for an engine this run cannot honour: DeepSpeed (not
    supported: docs/scale.md), or FSDP without several processes to shard over. FSDP on GPUs is
    accelerate's; on CPU processes, which accelerate keeps as MULTI_CPU, `unified_opd.fsdp` shards."""
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        if running != DistributedType.DEEPSPEED:
            raise UserError(
                f"accelerate launch: the config asks for DeepSpeed, but accelerate runs {running.value} here (it applies "
                f"DeepSpeed only to GPU processes, not with --cpu or on a machine without GPUs); launch with a DDP or FSDP config instead"
            )
        raise UserError(
            "accelerate launch: DeepSpeed is not supported (ZeRO-3 would need its partitioned parameters gathered for "
            "rollouts and checkpoints, docs/scale.md); launch with configs/accelerate/fsdp2.yaml for a sharded student"
        )
    if env.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and running not in (DistributedType.FSDP, DistributedType.MULTI_CPU):
        raise UserError(
            f"accelerate launch: the config asks for FSDP, but accelerate runs {running.value} here (one process, "
            f"nothing to shard over); launch with --num_processes 2 or more"
        )
