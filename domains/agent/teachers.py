"""The agent domain's side of the core teacher kinds (`unified_opd.teacher_kinds`): causal-LM
teachers scoring the student's episodes, loaded and viewed as the LM layer does."""

from __future__ import annotations

from unified_opd.domains.lm import LMTeacherSource
from unified_opd.teacher_kinds import TeacherContext


class AgentTeacherSource(LMTeacherSource):
    domain = "agent"


def teacher_context(cfg, policy, device) -> TeacherContext:
    """What `teacher_kinds.build_teacher` and `build_reference` take for an agent run."""
    return TeacherContext(cfg, policy, AgentTeacherSource(cfg, policy, device))
