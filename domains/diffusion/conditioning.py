"""What a generator is conditioned on: class ids, or prompts encoded by its pipeline.

A conditioner turns a batch of task records into *conditions* (a LongTensor of class ids, or a
list of prompt strings) and conditions into the model's conditioning keyword arguments (a dict
of batch-first tensors, see `families.py`). Every model encodes the rollout's conditions with
its own conditioner, so a teacher with other text encoders than the student's reads the same
prompts its own way.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from unified_opd.errors import UserError

Conditions = Union[Tensor, List[str]]


def repeat_conditions(conditions: Conditions, k: int) -> Conditions:
    """Each condition `k` times in a row (the trajectories of one record are adjacent)."""
    if isinstance(conditions, Tensor):
        return conditions.repeat_interleave(k)
    return [c for c in conditions for _ in range(k)]


def index_conditions(conditions: Conditions, index: Tensor) -> Conditions:
    if isinstance(conditions, Tensor):
        return conditions[index.to(conditions.device)]
    return [conditions[i] for i in index.tolist()]


def repeat_cond(cond: Dict[str, Tensor], k: int) -> Dict[str, Tensor]:
    """Conditioning tensors repeated `k` times per row (one row per step of a trajectory)."""
    return {name: t.repeat_interleave(k, dim=0) for name, t in cond.items()}


class ClassConditioner:
    """Class-conditioned denoisers: records `{"class": int}`, conditioning `class_labels`."""

    kind = "class"

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)

    def conditions(self, records: Sequence[Any]) -> Tensor:
        ids = []
        for r in records:
            c = r.get("class") if isinstance(r, dict) else None
            if not isinstance(c, int) or not 0 <= c < self.num_classes:
                raise UserError(f"data.classes: a record's class must be an integer in 0..{self.num_classes - 1}, got {c!r}")
            ids.append(c)
        return torch.tensor(ids, dtype=torch.long)

    def tags(self, records: Sequence[Any]) -> List[str]:
        """Routing tags: the class id as a string (a router's expert lists its classes)."""
        return [str(r["class"]) for r in records]

    def check(self, conditions: Conditions, field: str) -> None:
        if not isinstance(conditions, Tensor):
            raise UserError(f"{field}: a class-conditioned model cannot read prompts")
        if conditions.numel() and (int(conditions.min()) < 0 or int(conditions.max()) >= self.num_classes):
            raise UserError(f"{field}: the model knows class ids 0..{self.num_classes - 1}, got {conditions.tolist()}")

    def encode(self, conditions: Tensor, device) -> Dict[str, Tensor]:
        return {"class_labels": conditions.to(device)}

    def null(self, n: int, device) -> Optional[Dict[str, Tensor]]:
        return None


class PromptConditioner:
    """Text-conditioned pipelines: records `{"prompt": str}`, encoded by the pipeline's own
    `encode_prompt` (all its text encoders, without guidance: the unconditional branch is
    `null`, the empty prompt's encoding, as the pipelines' default negative prompt).

    Encodings are cached per prompt: the text encoders are frozen, and a run revisits its prompts."""

    kind = "prompt"

    def __init__(self, pipeline, family: str, max_sequence_length: int, device, cache_size: int = 4096):
        self.pipeline = pipeline
        self.device = device
        self.family = family
        self.max_sequence_length = int(max_sequence_length)
        self.cache_size = int(cache_size)
        self._cache: Dict[str, Dict[str, Tensor]] = {}

    def conditions(self, records: Sequence[Any]) -> List[str]:
        out = []
        for r in records:
            p = r.get("prompt") if isinstance(r, dict) else None
            if not isinstance(p, str):
                raise UserError(f"data: a text-to-image record needs a string 'prompt', got {p!r}")
            out.append(p)
        return out

    def tags(self, records: Sequence[Any]) -> List[str]:
        """Routing tags: the record's `task` ("" when it has none; see `teachers.expert_tags`)."""
        return [str(r.get("task", "")) for r in records]

    def check(self, conditions: Conditions, field: str) -> None:
        if isinstance(conditions, Tensor):
            raise UserError(f"{field}: a text-to-image pipeline needs prompts, not class ids")

    @torch.no_grad()
    def _encode_new(self, prompts: List[str]) -> Dict[str, Tensor]:
        p, n = self.pipeline, self.max_sequence_length
        if self.family == "flux":
            embeds, pooled, _ = p.encode_prompt(prompts, prompts, device=self.device, max_sequence_length=n)
        else:
            embeds, _, pooled, _ = p.encode_prompt(
                prompts, prompts, prompts, device=self.device, do_classifier_free_guidance=False, max_sequence_length=n
            )
        return {"encoder_hidden_states": embeds.float(), "pooled_projections": pooled.float()}

    def encode(self, prompts: List[str], device) -> Dict[str, Tensor]:
        missing = sorted(set(prompts) - set(self._cache))
        if len(self._cache) + len(missing) > self.cache_size:
            self._cache.clear()
            missing = sorted(set(prompts))
        if missing:
            enc = self._encode_new(missing)
            for i, prompt in enumerate(missing):
                self._cache[prompt] = {k: v[i] for k, v in enc.items()}
        rows = [self._cache[p] for p in prompts]
        return {k: torch.stack([r[k] for r in rows]).to(device) for k in rows[0]}

    def null(self, n: int, device) -> Dict[str, Tensor]:
        return repeat_cond(self.encode([""], device), n)
