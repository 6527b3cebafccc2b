"""A run's output directory: what may be resumed from it, and the files a run writes there.

    {output_dir}/config.yaml     the resolved config
                 metrics.jsonl   (metrics_log)
                 checkpoints/    step_XXXXXXXX/ (checkpoint)
                 final/          the trained student, in its ecosystem's format, with README.md (model card)
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
from .model_card import model_card


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

    def finish(self, policy, cfg: DictConfig, summary: Dict[str, Any]) -> None:
        """`final/` (the student and its model card, written atomically: a killed save leaves no
        half `final/`), `summary.json`, and the upload when `trainer.push_to_hub` is on."""
        if not self.is_main:
            return
        with ckpt.atomic_directory(self.out / "final") as tmp:
            policy.save(str(tmp))
            (tmp / "README.md").write_text(model_card(cfg, summary, tmp))
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        if cfg.trainer.push_to_hub:
            self.push(cfg.trainer.hub_model_id or self.out.name, cfg.trainer.hub_private, summary["steps"])

    def push(self, repo: str, private: bool, steps: int) -> None:
        """Upload `final/` to the Hub repository `repo` (created if needed)."""
        from huggingface_hub import HfApi

        api = HfApi()
        try:
            repo_id = api.create_repo(repo, private=private, exist_ok=True).repo_id
            api.upload_folder(folder_path=str(self.out / "final"), repo_id=repo_id, commit_message=f"unified_opd: {steps} steps")
        except Exception as e:  # the run is saved; only the upload failed, and the error says how to retry it
            raise UserError(
                f"trainer.push_to_hub: uploading to {repo!r} failed ({type(e).__name__}: {e}); "
                f"the model is saved in {self.out / 'final'}: upload it with `hf upload {repo} {self.out / 'final'}`"
            ) from e
