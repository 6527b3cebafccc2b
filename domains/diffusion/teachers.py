"""The diffusion domain's side of the core teacher kinds (`unified_opd.teacher_kinds`).

Teachers are generators with the student's latent shape and kind of condition (class ids or
prompts), each loaded at the student's resolution and token length. The router's table comes
from `teacher.experts`: each expert lists the tags it teaches (`classes` for class-conditioned
denoisers, `tasks` for prompts, a record's `task` field), so `teacher.kind: router` sends every
trajectory to its expert; `pool`, `model`, `self` and `teacher.reference` are the core's. Every
teacher scores under `teacher.guidance_scale`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from torch import nn

from unified_opd.errors import UserError
from unified_opd.zoo import resolve

from .generator import Generator, load_generator
from .policy import DiffusionPolicy, DiffusionTeacher


def expert_tags(expert: Any, data_tags: List[str]) -> List[str]:
    """The routing tags an expert teaches: its `classes` (as strings) or `tasks`, or every tag of
    the data when it lists neither (then it also takes prompts without a `task`, tag "")."""
    listed = [str(c) for c in expert.classes] + [str(t) for t in expert.tasks]
    return listed or list(dict.fromkeys([*data_tags, ""]))


class DiffusionTeacherSource:
    """`TeacherSource` for flow-matching generators, checked against the student."""

    domain = "diffusion"

    def __init__(self, cfg, policy: DiffusionPolicy, data_tags: List[str]):
        self.cfg, self.policy, self.data_tags = cfg, policy, list(data_tags)

    def load(self, path: str, field: str) -> DiffusionTeacher:
        s = self.cfg.student
        gen = load_generator(resolve(path, field), field, self.policy.device, s.resolution, s.max_sequence_length)
        check_compatible(self.policy.generator, gen, field)
        gen.check_guidance(self.cfg.teacher.guidance_scale, "teacher.guidance_scale")
        return DiffusionTeacher(gen, field, self.policy.device, self.cfg.teacher.guidance_scale)

    def view_of(self, module: nn.Module, field: str) -> DiffusionTeacher:
        p = self.policy
        return DiffusionTeacher(p.generator, field, p.device, self.cfg.teacher.guidance_scale, module=module, freeze=False)

    def routes(self, t: Any) -> Dict[str, Tuple[str, str]]:
        """Tag -> (expert path, field); a tag listed by two experts goes to the first."""
        table: Dict[str, Tuple[str, str]] = {}
        for i, e in enumerate(t.experts):
            for tag in expert_tags(e, self.data_tags):
                table.setdefault(tag, (e.path, f"teacher.experts[{i}].path"))
        return table


def check_compatible(student: Generator, teacher: Generator, field: str) -> None:
    if teacher.conditioner.kind != student.conditioner.kind:
        raise UserError(f"{field}: a {teacher.conditioner.kind}-conditioned teacher cannot teach a {student.conditioner.kind}-conditioned student")
    if teacher.spec.shape != student.spec.shape:
        raise UserError(f"{field}: the teacher's latents are {teacher.spec.shape} but the student's are {student.spec.shape}")
