"""Where a run's metrics go: `metrics.jsonl` (one JSON object per logged step) and the trackers
of `trainer.report_to` through accelerate (TensorBoard, W&B, MLflow, ...); the phase timer and the
progress bar.

Under several processes every rank computes its own metrics on its share of the batch; each
logged value is the mean over ranks, written once by the main process.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, List

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def mean_over_ranks(per_rank: List[Dict[str, float]]) -> Dict[str, float]:
    """Each key's mean over the ranks that report it (a rank may lack a key, e.g. no outcome)."""
    keys = sorted({k for m in per_rank for k in m})
    return {k: sum(m[k] for m in per_rank if k in m) / sum(k in m for m in per_rank) for k in keys}


def flat_config(cfg: DictConfig) -> Dict[str, Any]:
    """The resolved config as `dotted.key: scalar` (what tracker hyper-parameter tables accept)."""
    flat: Dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif node is None or isinstance(node, (bool, int, float, str)):
            flat[prefix[:-1]] = node if node is not None else "null"
        else:
            flat[prefix[:-1]] = json.dumps(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


class MetricsLog:
    def __init__(self, out: Path, accelerator: Accelerator, cfg: DictConfig):
        self.out, self.acc = Path(out), accelerator
        if cfg.trainer.report_to:
            init = {"wandb": {"dir": str(self.out), "name": self.out.name}}
            accelerator.init_trackers(cfg.trainer.project, config=flat_config(cfg), init_kwargs=init)

    def write(self, step: int, metrics: Dict[str, float]) -> None:
        """Every process calls this at the same steps; the main process writes the ranks' mean."""
        if self.acc.num_processes > 1:
            metrics = mean_over_ranks(gather_object([metrics]))
        if not self.acc.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        self.acc.log(metrics, step=step)

    def close(self) -> None:
        # not `accelerator.end_training()`: that also tears down the process group, which a script
        # that goes on after `train()` (gathering the final weights, say) still needs
        for tracker in self.acc.trackers:
            tracker.finish()


class PhaseTimer:
    """Seconds spent per phase (rollout, teacher, update), in the current step and in all.

    `with timer("rollout"): ...`; with `sync_cuda` the GPU is synchronised around each phase so
    the times are exact (only when profiling: it stalls the pipeline)."""

    def __init__(self, sync_cuda: bool = False):
        self.sync_cuda = sync_cuda
        self.total: Dict[str, float] = defaultdict(float)
        self.this_step: Dict[str, float] = defaultdict(float)

    def new_step(self) -> None:
        self.this_step = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        if self.sync_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync_cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            self.total[phase] += dt
            self.this_step[phase] += dt


def progress_bar(show: bool, console: Console) -> Progress:
    """The training progress bar (main process only); `info` shows `progress_info`."""
    columns = [TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}")]
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not show)


def progress_info(m: Dict[str, float]) -> str:
    info = f"loss {m.get('loss', 0):.4f} kl {m.get('kl', 0):.4f}"
    return info + (f" reward {m['reward']:.3f}" if "reward" in m else "")
