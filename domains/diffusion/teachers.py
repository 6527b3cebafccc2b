"""The diffusion domain's side of the core teacher kinds (`unified_opd.teacher_kinds`).

Teachers are denoisers with the student's latent shape. The router's table comes from
`teacher.experts` (each expert lists the classes it teaches), so `teacher.kind: router` sends
every class to its expert; `pool`, `model`, `self` and `teacher.reference` are the core's.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from torch import nn

from unified_opd.errors import UserError
from unified_opd.zoo import resolve

from .models import LatentSpec, load_denoiser
from .policy import DiffusionPolicy, DiffusionTeacher


def expert_classes(expert: Any, data_classes: List[int]) -> List[int]:
    """The classes an expert teaches: its own list, or every data class when it lists none."""
    return list(expert.classes) or list(data_classes)


class DiffusionTeacherSource:
    """`TeacherSource` for flow-matching denoisers, checked against the student's latents."""

    domain = "diffusion"

    def __init__(self, cfg, policy: DiffusionPolicy):
        self.cfg, self.policy = cfg, policy

    def load(self, path: str, field: str) -> DiffusionTeacher:
        model, scheduler, spec = load_denoiser(resolve(path, field), field)
        _check_compatible(self.policy.spec, spec, field)
        return DiffusionTeacher(model, scheduler.config.num_train_timesteps, spec, field, self.policy.device)

    def view_of(self, module: nn.Module, field: str) -> DiffusionTeacher:
        p = self.policy
        return DiffusionTeacher(module, p.num_train_timesteps, p.spec, field, p.device, freeze=False)

    def routes(self, t: Any) -> Dict[str, Tuple[str, str]]:
        """Class tag -> (expert path, field); a class listed by two experts goes to the first."""
        table: Dict[str, Tuple[str, str]] = {}
        for i, e in enumerate(t.experts):
            for c in expert_classes(e, self.cfg.data.classes):
                table.setdefault(str(c), (e.path, f"teacher.experts[{i}].path"))
        return table


def _check_compatible(student: LatentSpec, teacher: LatentSpec, field: str) -> None:
    if teacher.shape != student.shape:
        raise UserError(f"{field}: the teacher's latents are {teacher.shape} but the student's are {student.shape}")
