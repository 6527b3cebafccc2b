"""Teachers built from `teacher.kind`, the same kinds for every domain.

    model    one teacher model (`teacher.path`)
    self     the student itself, an EMA copy or a frozen copy (`teacher.ema` 0, (0, 1), 1), on the teacher view
    router   task tag -> expert (`teacher.experts`); `teacher.path` takes unrouted tags
    pool     log-linear pool of `teacher.members`, fixed `teacher.weights` or per-position confidence
    best_of  per prompt, the member with the best verifier score / likelihood (BRTS selection)
    server   a teacher behind OpenAI-compatible endpoints (`teacher.urls`, `teacher.server.*`)

A domain takes part by implementing `TeacherSource` (load a model; score rollouts with a given
module); a domain may register further kinds into `TEACHERS` (the text domain's `cache`).
`teacher.reference` goes through `build_reference` for every domain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from torch import nn

from .errors import ConfigError
from .teacher_config import check_server
from .interfaces import Policy, Teacher
from .lora import BaseModelTeacher, adapted_model, is_fresh
from .registry import Registry
from .self_teachers import EmaTeacher, frozen_copy
from .teachers import BestOfTeacher, ConfidencePooledTeacher, PooledTeacher, RoutedTeacher

POOL_RULES = ("fixed", "confidence")
SELECT_RULES = ("verifier", "likelihood")


class TeacherSource(Protocol):
    """What a domain implements so the core can build every kind for it.

    Optional capabilities (a kind that needs one the domain lacks is a ConfigError at start-up):
        served(urls, field, dense) -> Teacher: kind server (a teacher behind HTTP endpoints);
        routes(teacher_cfg) -> {tag: (path, field)}: the router's table, when the domain's
            `teacher.experts` is not a `{tag: path}` mapping;
        score_members(members, records) -> (scores [B, K], likelihoods [B, K]): kind best_of;
        record_key(record) -> hashable: the prompt identity best_of caches its choice under.
    """

    domain: str

    def load(self, path: str, field: str) -> Teacher:
        """A separate, frozen teacher model; the core memoises it by path."""

    def view_of(self, module: nn.Module, field: str) -> Teacher:
        """A Teacher scoring rollouts (on `rollout.view_for_teacher`) with exactly `module`,
        without copying, freezing or moving it (it may be the live student)."""


@dataclass
class TeacherContext:
    """What a kind's builder may use: the whole run config, the student, the domain's source.
    `load` memoises by path, so a model named twice (a router's route and its default) loads once."""

    cfg: Any
    policy: Policy
    source: TeacherSource
    loaded: Dict[str, Teacher] = dataclasses.field(default_factory=dict)

    def load(self, path: str, field: str) -> Teacher:
        if path not in self.loaded:
            self.loaded[path] = self.source.load(path, field)
        return self.loaded[path]


@dataclass
class BuiltTeacher:
    """teacher: used in training. eval_teacher: for held-out figures (None: not available).
    model: the one teacher model of kind `model` (a domain may report its own accuracy).
    records: training records replacing the domain's (e.g. a cache's fixed rollouts)."""

    teacher: Teacher
    eval_teacher: Optional[Teacher]
    model: Optional[Teacher] = None
    records: Optional[List[Any]] = None


@dataclass
class TeacherKind:
    """build(ctx) -> BuiltTeacher; `requires`: teacher fields that must be set; `needs`: the
    optional `TeacherSource` capabilities it calls; `domains`: where it exists (empty: everywhere)."""

    build: Callable[[TeacherContext], BuiltTeacher]
    requires: Tuple[str, ...] = ()
    needs: Tuple[str, ...] = ()
    domains: Tuple[str, ...] = ()


TEACHERS = Registry("teacher kind", "teacher.kind")


def check_teacher(t: Any, source_type: type) -> None:
    """Value checks of the `teacher` section, before any model load (`source_type`: the domain's
    `TeacherSource` class, whose capabilities decide which kinds it offers)."""
    kind = TEACHERS.get(t.kind, "teacher.kind")
    if kind.domains and source_type.domain not in kind.domains:
        raise ConfigError(f"teacher.kind: {t.kind!r} exists only in the {', '.join(kind.domains)} domain(s), not in {source_type.domain}")
    for capability in kind.needs:
        if not hasattr(source_type, capability):
            raise ConfigError(f"teacher.kind: {t.kind!r} is not available in the {source_type.domain} domain (it needs {capability})")
    for key in kind.requires:
        if not t.get(key):
            raise ConfigError(f"teacher.{key}: required by teacher.kind={t.kind}")
    if not 0.0 <= t.ema <= 1.0:
        raise ConfigError(f"teacher.ema: expected 0 (live student), a decay in (0, 1) (EMA copy) or 1 (frozen copy), got {t.ema}")
    if t.pool_rule not in POOL_RULES:
        raise ConfigError(f"teacher.pool_rule: expected fixed or confidence, got {t.pool_rule!r}")
    if t.kind == "pool" and t.pool_rule == "fixed" and t.weights and len(t.weights) != len(t.members):
        raise ConfigError(f"teacher.weights: need one weight per member ({len(t.members)}), got {len(t.weights)}")
    if t.select not in SELECT_RULES:
        raise ConfigError(f"teacher.select: expected verifier or likelihood, got {t.select!r}")
    check_server(t)


def build_teacher(ctx: TeacherContext) -> BuiltTeacher:
    """The training teacher of `ctx.cfg.teacher.kind` (checked first, so errors precede loads)."""
    check_teacher(ctx.cfg.teacher, type(ctx.source))
    return TEACHERS.get(ctx.cfg.teacher.kind, "teacher.kind").build(ctx)


def build_reference(ctx: TeacherContext) -> Optional[Teacher]:
    """`teacher.reference`: None, "student" (a frozen copy of the student as it is now), or a path.
    Call it once the student is initialised (after a domain's warm start, if any)."""
    ref = ctx.cfg.teacher.reference
    if ref is None:
        return None
    if ref == "student":
        return _frozen_student(ctx, "teacher.reference")
    return ctx.load(ref, "teacher.reference")


def _frozen_student(ctx: TeacherContext, field: str) -> Teacher:
    """The student as it is now, frozen; a LoRA student whose adapter is fresh is exactly its
    base, so it is the student with adapters disabled (no copy of the weights)."""
    module = ctx.policy.module
    adapted = adapted_model(module)
    if adapted is not None and is_fresh(adapted):
        return BaseModelTeacher(ctx.source.view_of(module, field), module, adapted)
    return ctx.source.view_of(frozen_copy(module), field)


def _members(ctx: TeacherContext) -> List[Teacher]:
    return [ctx.load(p, f"teacher.members[{i}]") for i, p in enumerate(ctx.cfg.teacher.members)]


def _model(ctx: TeacherContext) -> BuiltTeacher:
    t = ctx.load(ctx.cfg.teacher.path, "teacher")
    return BuiltTeacher(t, t, model=t)


def _self(ctx: TeacherContext) -> BuiltTeacher:
    """ema 0: the live student; in (0, 1): an EMA copy; 1: a frozen copy of the initial student
    (an EMA of decay 1 never moves, so it needs neither updates nor checkpointed state)."""
    t, module = ctx.cfg.teacher, ctx.policy.module
    if t.ema == 0:
        teacher: Teacher = ctx.source.view_of(module, "teacher")
    elif t.ema == 1:
        teacher = _frozen_student(ctx, "teacher")
    else:
        teacher = EmaTeacher(frozen_copy(module), lambda m: ctx.source.view_of(m, "teacher"), t.ema)
    return BuiltTeacher(teacher, teacher)


def mapped_routes(t: Any) -> Dict[str, Tuple[str, str]]:
    """The router's table from `teacher.experts` as a `{tag: path}` mapping."""
    return {str(tag): (path, f"teacher.experts.{tag}") for tag, path in t.experts.items()}


def _router(ctx: TeacherContext) -> BuiltTeacher:
    t = ctx.cfg.teacher
    table = getattr(ctx.source, "routes", mapped_routes)(t)
    routes = {tag: ctx.load(path, field) for tag, (path, field) in table.items()}
    default = ctx.load(t.path, "teacher") if t.path else None
    router = RoutedTeacher(routes, default)
    return BuiltTeacher(router, router)


def _pool(ctx: TeacherContext) -> BuiltTeacher:
    t, members = ctx.cfg.teacher, _members(ctx)
    if t.pool_rule == "confidence":
        teacher: Teacher = ConfidencePooledTeacher(members, t.confidence_temperature)
    else:
        teacher = PooledTeacher(members, list(t.weights) or [1.0 / len(members)] * len(members))
    return BuiltTeacher(teacher, teacher)


def _best_of(ctx: TeacherContext) -> BuiltTeacher:
    teacher = BestOfTeacher(_members(ctx), ctx.source.score_members, ctx.source.record_key)
    return BuiltTeacher(teacher, teacher)


def _server(ctx: TeacherContext) -> BuiltTeacher:
    t = ctx.source.served(list(ctx.cfg.teacher.urls), "teacher.urls", False)
    return BuiltTeacher(t, t)


TEACHERS.register("model", TeacherKind(_model, requires=("path",)))
TEACHERS.register("self", TeacherKind(_self))
TEACHERS.register("router", TeacherKind(_router, requires=("experts",)))
TEACHERS.register("pool", TeacherKind(_pool, requires=("members",)))
TEACHERS.register("best_of", TeacherKind(_best_of, requires=("members",), needs=("score_members", "record_key")))
TEACHERS.register("server", TeacherKind(_server, requires=("urls",), needs=("served",), domains=("text", "agent")))
