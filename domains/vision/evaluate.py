"""Held-out evaluation: full-image and crop accuracy of the student (greedy), and the KL between
the student on the full image and the teacher on its view, on the student's own answers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from unified_opd.divergences import divergence
from unified_opd.domains.lm import Sampling
from unified_opd.interfaces import Teacher

from .crops import Cropper
from .examples import example_grid, save_png
from .policy import VisionPolicy


def make_evaluator(
    records: List[Dict[str, Any]], teacher: Teacher, cropper: Cropper, cfg
) -> Callable[[VisionPolicy, int], Dict[str, float]]:
    """Returns evaluate(policy, step).

    accuracy_full / accuracy_crop: exact answers from the full image / from the crop;
    accuracy_full/<task>: per task tag; kl_views: mean reverse KL(student on the full image ‖
    teacher on its view) per answer token. With `eval.examples`, writes
    `{output_dir}/examples_step{step}.png`; the first call's answers are the "before" column.
    """
    records = records[: cfg.eval.size]
    shown = records[: cfg.eval.examples]
    greedy = Sampling(num_samples=1, max_new_tokens=cfg.rollout.max_new_tokens, greedy=True)
    reverse_kl = divergence("reverse_kl")
    before: List[str] = []

    @torch.no_grad()
    def evaluate(policy: VisionPolicy, step: int) -> Dict[str, float]:
        hits: Dict[str, List[float]] = defaultdict(list)
        kl_sum, kl_tokens = 0.0, 0
        answers: Dict[str, List[str]] = defaultdict(list)
        for i in range(0, len(records), cfg.eval.batch_size):
            chunk = records[i : i + cfg.eval.batch_size]
            full = policy.rollout(chunk, greedy, with_teacher_view=cfg.eval.kl)
            crop = policy.rollout(chunk, greedy, image_transform=cropper, with_teacher_view=False)
            answers["full"] += full.meta["completions"]
            answers["crop"] += crop.meta["completions"]
            if full.outcome is not None:
                hits["full"] += full.outcome.tolist()
                hits["crop"] += crop.outcome.tolist()
                for tag, o in zip(full.task or [], full.outcome.tolist()):
                    hits[f"full/{tag}"].append(o)
            if cfg.eval.kl:
                mask = full.mask
                values = reverse_kl(policy.distribution(full).select(mask), teacher.distribution(full).select(mask))
                kl_sum += float(values.sum())
                kl_tokens += int(mask.sum())
        metrics = {f"accuracy_{k}": sum(v) / len(v) for k, v in sorted(hits.items())}
        if kl_tokens:
            metrics["kl_views"] = kl_sum / kl_tokens
        if shown:
            n = len(shown)
            before[:] = before or answers["full"][:n]
            grid = example_grid(shown, cropper, before, answers["full"][:n], answers["crop"][:n], cfg.data)
            save_png(grid, Path(cfg.trainer.output_dir) / f"examples_step{step}.png")
        return metrics

    return evaluate
