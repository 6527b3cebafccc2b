"""A run's output directory: what may be resumed from it, and the files a run writes there.

    {output_dir}/config.yaml     the resolved config
                 metrics.jsonl   (metrics_log)
                 checkpoints/    step_XXXXXXXX/ (checkpoint)
                 final/          the trained student, in its ecosystem's format
                 summary.json    before/after evaluation and timings

`trainer.resume`: `auto` continues from the newest complete checkpoint, `never` refuses a
directory that already holds a run, a path names one checkpoint to continue from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf

from . import checkpoint as ckpt
from .errors import UserError


class RunDir:
    def __init__(self, out: str, is_main: bool = True):
        self.out = Path(out)
        self.checkpoints = self.out / "checkpoints"
        self.is_main = is_main

    def resume_point(self, resume: str) -> Optional[Path]:
        """The checkpoint to continue from (None: start afresh); a UserError when `resume` does
        not fit what the directory holds. Runs before anything is loaded or written."""
        latest = ckpt.latest_checkpoint(self.checkpoints)
        finished = (self.out / "final").exists()
        if resume == "never":
            if latest is not None or finished:
                raise UserError(
                    f"trainer.output_dir: {self.out} already holds a run; use trainer.resume=auto to continue it "
                    f"or choose another output_dir"
                )
            return None
        if resume == "auto":
            if latest is None and finished:
                raise UserError(
                    f"trainer.output_dir: {self.out} holds a finished run without checkpoints; choose another output_dir"
                )
            return latest
        path = Path(resume)
        if not (path / ckpt.COMPLETE).is_file():
            raise UserError(f"trainer.resume: {resume} is not a complete checkpoint directory")
        return path

    def save_config(self, cfg: DictConfig) -> None:
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "config.yaml"
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(OmegaConf.to_yaml(cfg))
        tmp.replace(path)

    def save_final(self, policy) -> None:
        """The trained student, written atomically (a killed save leaves no half `final/`)."""
        if self.is_main:
            with ckpt.atomic_directory(self.out / "final") as tmp:
                policy.save(str(tmp))

    def write_summary(self, summary: Dict[str, Any]) -> None:
        if self.is_main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
