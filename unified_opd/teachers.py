"""Teachers that compose other teachers: a router (task tag -> teacher), log-linear pools and
a best-of selection.

`RoutedTeacher` runs each teacher once, on the sub-rollout of the trajectories routed to it
(`Rollout.subset`), and merges the per-trajectory distributions back into the batch order.
`PooledTeacher` is `pool([t_1 .. t_k], [w_1 .. w_k])` of several teachers on the whole rollout;
`ConfidencePooledTeacher` takes per-position weights from the teachers' entropies.
`BestOfTeacher` routes each prompt to the member a domain-supplied scorer prefers.
All are domain-agnostic: they only touch `Rollout` and `Distribution`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import dataclasses

import torch
from torch import Tensor

from .distributions import Categorical, Distribution, Gaussian, pool
from .errors import ConfigError, UserError
from .interfaces import Policy, Teacher
from .rollout import Rollout


def merge_distributions(parts: Sequence[Distribution], index: Sequence[Tensor]) -> Distribution:
    """Reassemble a batch: `parts[k]` holds the trajectories `index[k]` (1-D) of the full batch.

    Gaussians are concatenated along the batch; Categoricals keep their form when sparse
    (top-k tensors are concatenated) and are materialised as log-probs when dense or lazy
    (one sub-batch at a time, `Categorical.log_probs`).
    """
    if not parts:
        raise ValueError("merge_distributions: nothing to merge")
    order = torch.cat([i.reshape(-1).long().cpu() for i in index])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    kinds = {type(p) for p in parts}
    if len(kinds) != 1:
        raise ValueError(f"merge_distributions: teachers returned different kinds {sorted(k.__name__ for k in kinds)}")

    def cat(tensors: List[Tensor]) -> Tensor:
        if len({t.shape[1:] for t in tensors}) != 1:
            raise ValueError(f"merge_distributions: teachers disagree on the per-trajectory shape {[tuple(t.shape) for t in tensors]}")
        return torch.cat(tensors)[inverse.to(tensors[0].device)]

    if isinstance(parts[0], Gaussian):
        return Gaussian(cat([p.mean for p in parts]), cat([p.std for p in parts]))
    if all(p.is_sparse for p in parts):
        vocab = {p.vocab_size for p in parts}
        if len(vocab) != 1:
            raise ValueError(f"merge_distributions: teachers disagree on the vocabulary size {sorted(vocab)}")
        return Categorical.from_topk(cat([p.topk[0] for p in parts]), cat([p.topk[1] for p in parts]), vocab.pop())
    if any(p.is_sparse for p in parts):
        raise ValueError("merge_distributions: cannot merge top-k and full-vocabulary teachers into one batch")
    return Categorical.from_logits(cat([p.log_probs() for p in parts]))


class _Composite(Teacher):
    """State, loading and per-step hooks of several child teachers, keys prefixed by child index."""

    teachers: List[Teacher]

    def state(self) -> Optional[Dict[str, Tensor]]:
        out: Dict[str, Tensor] = {}
        for i, t in enumerate(self.teachers):
            for k, v in (t.state() or {}).items():
                out[f"{i}.{k}"] = v
        return out or None

    def load_state(self, state: Dict[str, Tensor]) -> None:
        for i, t in enumerate(self.teachers):
            prefix = f"{i}."
            own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if own:
                t.load_state(own)

    def after_step(self, policy: Policy) -> None:
        for t in self.teachers:
            t.after_step(policy)


class RoutedTeacher(_Composite):
    """Each trajectory goes to the teacher of its task tag (`rollout.task`); `default` takes
    tags with no route (without one, an unrouted tag is an error naming the tag)."""

    def __init__(self, routes: Mapping[str, Teacher], default: Optional[Teacher] = None):
        if not routes and default is None:
            raise UserError("teacher routing: no routes and no default teacher")
        self.routes = dict(routes)
        self.default = default
        self.teachers = []
        for t in [*self.routes.values(), *([default] if default is not None else [])]:
            if not any(t is u for u in self.teachers):
                self.teachers.append(t)

    def assign(self, tasks: Optional[Sequence[str]], batch: int) -> List[int]:
        """Index into `self.teachers` for every trajectory."""
        if tasks is None:
            if self.default is None:
                raise UserError("teacher routing: the rollout has no task tags and there is no default teacher")
            tasks = [None] * batch
        out = []
        for tag in tasks:
            t = self.routes.get(tag, self.default) if tag is not None else self.default
            if t is None:
                raise UserError(f"teacher routing: no teacher for task tag {tag!r} (routed tags: {sorted(self.routes)})")
            out.append(next(i for i, u in enumerate(self.teachers) if u is t))
        return out

    def distribution(self, rollout: Rollout) -> Distribution:
        who = torch.tensor(self.assign(rollout.task, rollout.batch_size))
        parts, index = [], []
        for k, teacher in enumerate(self.teachers):
            idx = (who == k).nonzero().squeeze(-1)
            if len(idx) == 0:
                continue
            sub = rollout if len(idx) == rollout.batch_size else rollout.subset(idx)
            parts.append(teacher.distribution(sub))
            index.append(idx)
        if len(parts) == 1:
            return parts[0]
        return merge_distributions(parts, index)


class PooledTeacher(_Composite):
    """Log-linear pool of several teachers with fixed weights: p ∝ Π_k p_k^{w_k} (`uo.pool`)."""

    def __init__(self, teachers: Sequence[Teacher], weights: Sequence[float]):
        if not teachers or len(teachers) != len(weights):
            raise UserError(f"teacher pool: need one weight per teacher (got {len(teachers)} teachers, {len(weights)} weights)")
        self.teachers = list(teachers)
        self.weights = [float(w) for w in weights]

    def distribution(self, rollout: Rollout) -> Distribution:
        return pool([t.distribution(rollout) for t in self.teachers], self.weights)


def confidence_weights(entropies: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-position pooling weights from each teacher's confidence: w_k = softmax_k(−H_k / τ).

    `entropies` is `[K, ...]` (teacher k's entropy at every position); weights sum to one over k,
    so the pool is a geometric consensus that leans on whichever teacher is surest at each position
    (MAD-OPD's confidence weighting, with the negative entropy as the confidence).
    """
    return torch.softmax(-entropies.float() / float(temperature), dim=0)


class ConfidencePooledTeacher(PooledTeacher):
    """`pool([t_1..t_K], [w_1..w_K])` with per-position weights from `confidence_weights`."""

    def __init__(self, teachers: Sequence[Teacher], temperature: float = 1.0):
        super().__init__(teachers, [1.0] * len(teachers))
        self.temperature = float(temperature)

    def distribution(self, rollout: Rollout) -> Distribution:
        dists = [t.distribution(rollout) for t in self.teachers]
        w = confidence_weights(torch.stack([d.entropy() for d in dists]), self.temperature)
        return pool(dists, list(w))


def select_teacher(scores: Tensor, likelihoods: Tensor) -> Tensor:
    """BRTS selection per prompt: the teacher with the highest verifier score, ties broken by the
    highest likelihood of the reference answer. `[B, K]` each -> `[B]` teacher indices.

    Lexicographic: scores are compared first (an exact max), likelihood only among the tied."""
    best = scores.max(-1, keepdim=True).values
    tied = torch.where(scores == best, likelihoods.float(), torch.full_like(likelihoods.float(), -float("inf")))
    return tied.argmax(-1)


# (members, records) -> (verifier scores [B, K], reference-answer likelihoods [B, K])
MemberScorer = Callable[[Sequence[Teacher], Sequence[Any]], Tuple[Tensor, Tensor]]


class BestOfTeacher(RoutedTeacher):
    """For each prompt, the member `select_teacher` picks from the domain's `score(members, records)`.

    Choices are cached per prompt (`key(record)`); trajectories are routed to the chosen member
    exactly like `RoutedTeacher` routes task tags. The rollout carries its records in
    `meta["records"]`, one per trajectory.
    """

    def __init__(self, members: Sequence[Teacher], score: MemberScorer, key: Callable[[Any], Hashable]):
        super().__init__({str(k): m for k, m in enumerate(members)})
        self.members, self.score, self.key = list(members), score, key
        self.choice: Dict[Hashable, int] = {}

    def _choose(self, records: Sequence[Any]) -> None:
        new = list({self.key(r): r for r in records if self.key(r) not in self.choice}.values())
        if not new:
            return
        scores, likelihoods = self.score(self.members, new)
        for r, k in zip(new, select_teacher(scores, likelihoods).tolist()):
            self.choice[self.key(r)] = k

    def distribution(self, rollout: Rollout) -> Distribution:
        records = rollout.meta.get("records")
        if records is None:
            raise ConfigError("teacher.kind: best_of needs rollouts that carry their records (meta['records'])")
        self._choose(records)
        tags = [str(self.choice[self.key(r)]) for r in records]
        return super().distribution(dataclasses.replace(rollout, task=tags))
