"""The one teacher config shape of every domain; a domain's `TeacherConfig` subclasses it.

A domain adds its own fields (the text domain: dtype, view, cache) or narrows a type (diffusion's
`experts` is a list of `{path, classes}`), but the kinds in `teacher_kinds.py` read only these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from .errors import ConfigError


@dataclass
class TeacherConfig:
    kind: str = "model"  # model | self | router | pool | best_of, plus a domain's own (registry unified_opd/teacher_kinds.py)
    path: Optional[str] = None  # a teacher model (kind model; the default route of a router)
    reference: Optional[str] = None  # G-OPD reference: a model path, or "student" (frozen copy of the initial student)
    ema: float = 0.0  # kind self: 0 = the live student; in (0, 1) = an EMA copy with this decay; 1 = a frozen copy
    experts: Dict[str, str] = field(default_factory=dict)  # kind router: task tag -> model path
    members: List[str] = field(default_factory=list)  # kind pool / best_of: model paths
    weights: List[float] = field(default_factory=list)  # kind pool: fixed log-linear weights, one per member (empty: equal)
    pool_rule: str = "fixed"  # kind pool: fixed | confidence (per-position softmax of -entropy / temperature)
    confidence_temperature: float = 1.0
    select: str = "verifier"  # kind best_of: verifier (greedy answer correct, ties by likelihood) | likelihood


def check_replaced_keys(section: Any, prefix: str, replaced: Mapping[str, str]) -> None:
    """A key a schema keeps only to say what replaced it (typed `Any`, default None) must be unset."""
    for key, new in replaced.items():
        if section.get(key) is not None:
            raise ConfigError(f"{prefix}.{key} was replaced by {new}")
