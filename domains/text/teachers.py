"""How the text domain builds its teacher from `teacher.kind`, one registered builder per kind.

    model    one causal LM (`teacher.path`)
    self     the student itself, or an EMA copy (`teacher.ema`), usually on a privileged view (OPSD)
    cache    top-k log-probs precomputed by `uopd cache-teacher` (Lightning OPD; no teacher in memory)
    router   task tag -> expert (`teacher.experts`), `teacher.path` takes unrouted tags
    pool     log-linear pool of `teacher.members`, fixed `teacher.weights` or per-token confidence
    best_of  per prompt, the member with the best verifier score / likelihood (BRTS selection)
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from unified_opd.distributions import Categorical, pool
from unified_opd.errors import ConfigError
from unified_opd.interfaces import Policy, Teacher
from unified_opd.registry import Registry
from unified_opd.rollout import Rollout
from unified_opd.teachers import PooledTeacher, RoutedTeacher

from unified_opd.domains.lm import HiddenStates, Sampling, check_same_vocabulary, load_causal_lm, view_distribution
from unified_opd.domains.lm import LMTeacher as TextTeacher

from .generation import format_prompts, generate_rollout
from .policy import TextPolicy

TEACHERS = Registry("teacher kind", "teacher.kind")


@dataclass
class TeacherContext:
    """What a teacher builder may use; `load` memoises models by path (a model named twice loads once)."""

    cfg: Any
    policy: TextPolicy
    device: torch.device
    _loaded: Dict[str, TextTeacher] = dataclasses.field(default_factory=dict)

    def load(self, path: str, field: str) -> TextTeacher:
        if path not in self._loaded:
            t = self.cfg.teacher
            lm, tok = load_causal_lm(path, t.dtype, t.trust_remote_code, field)
            check_same_vocabulary(self.policy.tokenizer, tok, self.policy.lm, lm, field)
            self._loaded[path] = TextTeacher(lm.to(self.device), self.cfg.student.lazy_logits)
        return self._loaded[path]


@dataclass
class BuiltTeacher:
    """teacher: used in training. eval_teacher: for held-out KL (None: not available).
    teacher_lm: generates for the held-out teacher accuracy (None: not reported).
    records: training records replacing `data.path`'s (a cache's fixed rollouts)."""

    teacher: Teacher
    eval_teacher: Optional[Teacher]
    teacher_lm: Any = None
    records: Optional[List[Dict[str, Any]]] = None


def build_teacher(ctx: TeacherContext) -> BuiltTeacher:
    return TEACHERS.get(ctx.cfg.teacher.kind, "teacher.kind")(ctx)


def _require(value, field: str, kind: str):
    if not value:
        raise ConfigError(f"{field}: required by teacher.kind={kind}")
    return value


@TEACHERS.register("model")
def _model(ctx: TeacherContext) -> BuiltTeacher:
    t = ctx.load(_require(ctx.cfg.teacher.path, "teacher.path", "model"), "teacher")
    return BuiltTeacher(t, t, t.module.lm)


# ---------------------------------------------------------------- self-teacher (OPSD)
def ema_update(target: Sequence[Tensor], source: Sequence[Tensor], decay: float) -> None:
    """In place: θ_T ← d·θ_T + (1 − d)·θ_S for every parameter pair."""
    for t, s in zip(target, source):
        t.mul_(decay).add_(s.detach().to(t.dtype), alpha=1.0 - decay)


class SelfTeacher(Teacher):
    """The student as its own teacher, read on `rollout.view_for_teacher` (the privileged view).

    ema = 0: the live student (no copy, no state). 0 < ema < 1: a frozen copy updated after every
    optimiser step by `ema_update`; its weights are the teacher state in checkpoints.
    """

    def __init__(self, policy: TextPolicy, ema: float = 0.0):
        if not 0.0 <= ema < 1.0:
            raise ConfigError(f"teacher.ema: expected 0 (live student) or a decay in (0, 1), got {ema}")
        self.policy, self.ema = policy, float(ema)
        self.copy: Optional[HiddenStates] = None
        if self.ema > 0:
            self.copy = HiddenStates(copy.deepcopy(policy.lm), policy.module.lazy).eval().requires_grad_(False)

    @torch.no_grad()
    def distribution(self, rollout: Rollout) -> Categorical:
        module = self.copy if self.copy is not None else self.policy.module
        return view_distribution(module, module, rollout.view_for_teacher, rollout.student_view["prompt_len"])

    @torch.no_grad()
    def after_step(self, policy: Policy) -> None:
        if self.copy is not None:
            ema_update(list(self.copy.lm.parameters()), list(policy.lm.parameters()), self.ema)

    def state(self) -> Optional[Dict[str, Tensor]]:
        return None if self.copy is None else dict(self.copy.lm.state_dict())

    def load_state(self, state: Dict[str, Tensor]) -> None:
        if self.copy is not None:
            self.copy.lm.load_state_dict(state)


@TEACHERS.register("self")
def _self(ctx: TeacherContext) -> BuiltTeacher:
    t = SelfTeacher(ctx.policy, ctx.cfg.teacher.ema)
    return BuiltTeacher(t, t)


# ---------------------------------------------------------------- multi-teacher
@TEACHERS.register("router")
def _router(ctx: TeacherContext) -> BuiltTeacher:
    t = ctx.cfg.teacher
    experts = _require(dict(t.experts), "teacher.experts", "router")
    routes = {tag: ctx.load(path, f"teacher.experts.{tag}") for tag, path in experts.items()}
    default = ctx.load(t.path, "teacher") if t.path else None
    router = RoutedTeacher(routes, default)
    return BuiltTeacher(router, router)


def confidence_weights(entropies: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-position pooling weights from each teacher's confidence: w_k = softmax_k(−H_k / τ).

    `entropies` is `[K, ...]` (teacher k's entropy at every position); weights sum to one over k,
    so the pool is a geometric consensus that leans on whichever teacher is surest at each token
    (MAD-OPD's confidence weighting, with the negative entropy as the confidence).
    """
    return torch.softmax(-entropies.float() / float(temperature), dim=0)


class ConfidencePooledTeacher(PooledTeacher):
    """`pool([t_1..t_K], [w_1..w_K])` with per-position weights from `confidence_weights`."""

    def __init__(self, teachers: Sequence[Teacher], temperature: float = 1.0):
        super().__init__(teachers, [1.0] * len(teachers))
        self.temperature = float(temperature)

    def distribution(self, rollout: Rollout) -> Categorical:
        dists = [t.distribution(rollout) for t in self.teachers]
        w = confidence_weights(torch.stack([d.entropy() for d in dists]), self.temperature)
        return pool(dists, list(w))


@TEACHERS.register("pool")
def _pool(ctx: TeacherContext) -> BuiltTeacher:
    t = ctx.cfg.teacher
    members = [ctx.load(p, f"teacher.members[{i}]") for i, p in enumerate(_require(list(t.members), "teacher.members", "pool"))]
    if t.pool_rule == "fixed":
        if len(t.weights) != len(members):
            raise ConfigError(f"teacher.weights: need one weight per member ({len(members)}), got {len(t.weights)}")
        teacher = PooledTeacher(members, list(t.weights))
    elif t.pool_rule == "confidence":
        teacher = ConfidencePooledTeacher(members, t.confidence_temperature)
    else:
        raise ConfigError(f"teacher.pool_rule: expected fixed or confidence, got {t.pool_rule!r}")
    return BuiltTeacher(teacher, teacher)


def select_teacher(scores: Tensor, likelihoods: Tensor) -> Tensor:
    """BRTS selection per prompt: the teacher with the highest verifier score, ties broken by the
    highest likelihood of the reference answer. `[B, K]` each -> `[B]` teacher indices.

    Lexicographic: scores are compared first (an exact max), likelihood only among the tied."""
    best = scores.max(-1, keepdim=True).values
    tied = torch.where(scores == best, likelihoods.float(), torch.full_like(likelihoods.float(), -float("inf")))
    return tied.argmax(-1)


@torch.no_grad()
def answer_log_likelihood(teacher: TextTeacher, tok, records: Sequence[Dict[str, Any]], data_cfg) -> Tensor:
    """Mean log-prob per token that `teacher` gives each record's reference answer (+ EOS) `[B]`."""
    prompts = format_prompts(tok, records, data_cfg)
    seqs, starts = [], []
    for p, r in zip(prompts, records):
        ids = tok(p)["input_ids"]
        ans = tok(str(r[data_cfg.answer_field]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(ids + ans)
        starts.append(len(ids))
    n = max(len(s) for s in seqs)
    pad = tok.pad_token_id
    device = next(teacher.module.parameters()).device
    ids = torch.tensor([[pad] * (n - len(s)) + s for s in seqs], device=device)  # left-padded
    attn = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in seqs], device=device)
    out = teacher.module(ids, attn)
    logits = out @ teacher.module.head()[0].t() if teacher.module.lazy else out
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    first = torch.tensor([n - len(s) + st - 1 for s, st in zip(seqs, starts)], device=device)
    pos = torch.arange(n - 1, device=device)
    mask = (pos.unsqueeze(0) >= first.unsqueeze(1)).float()
    return (logp * mask).sum(-1) / mask.sum(-1)


class BestOfTeacher(RoutedTeacher):
    """For each prompt, the member that solves it (greedy answer verified), ties broken by the
    likelihood of the reference answer (`select: verifier`), or by that likelihood alone
    (`select: likelihood`). Choices are cached per prompt; trajectories are routed to the chosen
    member exactly like `RoutedTeacher` routes task tags."""

    def __init__(self, members: Sequence[TextTeacher], tok, data_cfg, max_new_tokens: int, select: str = "verifier"):
        if select not in ("verifier", "likelihood"):
            raise ConfigError(f"teacher.select: expected verifier or likelihood, got {select!r}")
        super().__init__({str(k): m for k, m in enumerate(members)})
        self.members, self.tok, self.data_cfg, self.select = list(members), tok, data_cfg, select
        self.max_new_tokens = max_new_tokens
        self.choice: Dict[str, int] = {}

    def _choose(self, records: Sequence[Dict[str, Any]]) -> None:
        new = list({r[self.data_cfg.prompt_field]: r for r in records if r[self.data_cfg.prompt_field] not in self.choice}.values())
        if not new:
            return
        if any(r.get(self.data_cfg.answer_field) is None for r in new):
            raise ConfigError(f"teacher.kind: best_of needs the {self.data_cfg.answer_field!r} field in every record")
        lik = torch.stack([answer_log_likelihood(m, self.tok, new, self.data_cfg) for m in self.members], -1)
        if self.select == "verifier":
            greedy = Sampling(num_samples=1, max_new_tokens=self.max_new_tokens, greedy=True)
            scores = torch.stack(
                [generate_rollout(m.module.lm, self.tok, new, self.data_cfg, greedy).outcome.float() for m in self.members], -1
            ).to(lik.device)
        else:
            scores = torch.zeros_like(lik)
        for r, k in zip(new, select_teacher(scores, lik).tolist()):
            self.choice[r[self.data_cfg.prompt_field]] = k

    def distribution(self, rollout: Rollout) -> Categorical:
        records = rollout.meta["records"]
        self._choose(records)
        tags = [str(self.choice[r[self.data_cfg.prompt_field]]) for r in records]
        return super().distribution(dataclasses.replace(rollout, task=tags))


@TEACHERS.register("best_of")
def _best_of(ctx: TeacherContext) -> BuiltTeacher:
    t = ctx.cfg.teacher
    paths = _require(list(t.members), "teacher.members", "best_of")
    members = [ctx.load(p, f"teacher.members[{i}]") for i, p in enumerate(paths)]
    teacher = BestOfTeacher(members, ctx.policy.tokenizer, ctx.cfg.data, ctx.cfg.rollout.max_new_tokens, t.select)
    return BuiltTeacher(teacher, teacher)
