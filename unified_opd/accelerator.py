"""The run's `Accelerator`: devices, processes and experiment trackers.

Accelerate decides devices and multi-process launch. One thing it does not do on its own: under
`accelerate launch --num_processes N` on a machine with no GPU, `Accelerator()` without `cpu=True`
stays single-process, so N independent copies of the job would run side by side and write the same
files. On such a machine the run asks for CPU processes, which gives one job over N gloo ranks.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import LoggerType, ProjectConfiguration
from omegaconf import DictConfig

from .errors import ConfigError

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
    """The Accelerator for trainer settings `t`; trackers (`t.report_to`) log under `output_dir`."""
    cpu = bool(t.cpu) or not torch.accelerator.is_available()
    if output_dir is None or not t.report_to:
        return Accelerator(cpu=cpu, mixed_precision=t.mixed_precision)
    out = Path(output_dir)
    project = ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "trackers"))
    return Accelerator(cpu=cpu, mixed_precision=t.mixed_precision, log_with=list(t.report_to), project_config=project)
