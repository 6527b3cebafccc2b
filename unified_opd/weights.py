"""Per-position loss weights: pure functions of tensors the trainer already has.

Each weight function takes a `WeightInputs` (the student's own decisions, flattened to `[N]`
positions) plus its options from the config, and returns `[N]` non-negative weights. The
objective multiplies every configured weight together. Recipes such as TIP token selection,
PW-OPSD position weights, SOD step weights or SCOPE/SRPO correctness routing register here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from .distributions import Distribution
from .divergences import divergence as make_divergence
from .errors import ConfigError
from .registry import Registry
from .rollout import Rollout

# a built weight is (function, options): the function is called with each step's inputs
WEIGHTS = Registry("weight", "objective.weights", make=lambda fn, options: (fn, options), runtime_args=("inputs",))


@dataclass
class WeightInputs:
    """What a weight function may read, for the `N` positions where `rollout.loss_mask` is 1.

    batch_index: trajectory of each position `[N]`;  position: index among that trajectory's
    own decisions `[N]`;  step_ids: step/turn `[N]`;  divergence: the detached per-position
    divergence (or its sampled estimate) `[N]`;  student/teacher: the selected distributions.
    """

    rollout: Rollout
    student: Distribution
    teacher: Distribution
    divergence: Tensor
    batch_index: Tensor
    position: Tensor
    step_ids: Tensor
    step: int = 0
    max_steps: int = 1
    actions: Optional[Tensor] = None
    _cache: Dict[str, Tensor] = field(default_factory=dict)

    def remember(self, **values: Tensor) -> None:
        """Give values the caller already computed (e.g. `student_logp`), so no weight recomputes them."""
        self._cache.update({k: v.detach() for k, v in values.items()})

    def _cached(self, key: str, compute: Callable[[], Tensor]) -> Tensor:
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = compute().detach()
        return self._cache[key]

    def student_logp(self) -> Tensor:
        """log π_θ(a_t) of the sampled actions, detached `[N]`."""
        return self._cached("student_logp", lambda: self.student.log_prob(self._actions("student_logp")))

    def teacher_logp(self) -> Tensor:
        """log π_T(a_t) of the sampled actions `[N]`."""
        return self._cached("teacher_logp", lambda: self.teacher.log_prob(self._actions("teacher_logp")))

    def reverse_kl(self) -> Tensor:
        """The exact per-position KL(π_θ‖π_T) (not the single-sample estimate), detached `[N]`."""
        return self._cached("reverse_kl", lambda: make_divergence("reverse_kl")(self.student.detach(), self.teacher))

    def _actions(self, what: str) -> Tensor:
        if self.actions is None:
            raise ConfigError(f"objective.weights: {what} needs sampled actions (token decisions), which this domain lacks")
        return self.actions

    def trajectory_mean(self, values: Tensor) -> Tensor:
        """Mean of per-position `values [N]` over each trajectory's positions -> `[B]`."""
        b = self.rollout.batch_size
        idx = self.batch_index
        total = torch.zeros(b, device=values.device).index_add_(0, idx, values.float())
        count = torch.zeros(b, device=values.device).index_add_(0, idx, torch.ones_like(values, dtype=torch.float32))
        return total / count.clamp_min(1.0)

    def group_ids(self) -> Tensor:
        g = self.rollout.group_ids
        return torch.arange(self.rollout.batch_size) if g is None else g

    def student_entropy(self) -> Tensor:
        if "student_entropy" not in self._cache:
            with torch.no_grad():
                self._cache["student_entropy"] = self.student.entropy().detach()
        return self._cache["student_entropy"]

    def teacher_entropy(self) -> Tensor:
        if "teacher_entropy" not in self._cache:
            with torch.no_grad():
                self._cache["teacher_entropy"] = self.teacher.entropy().detach()
        return self._cache["teacher_entropy"]

    def outcome(self) -> Optional[Tensor]:
        o = self.rollout.outcome
        return None if o is None else o.to(self.batch_index.device).float()[self.batch_index]


WeightFn = Callable[..., Tensor]


@WEIGHTS.register("uniform")
def uniform_weight(inputs: WeightInputs) -> Tensor:
    """w = 1 at every position (plain OPD)."""
    return torch.ones_like(inputs.divergence)


def group_normalise(values: Tensor, group_ids: Tensor) -> Tensor:
    """Per-trajectory values divided by their group's mean: w_i = x_i / mean_{j: g_j = g_i} x_j.

    Groups are the samples of one prompt (`rollout.group_ids`), so every prompt's weights average
    to one and a prompt never gains weight over another through the scale of `x`.
    """
    x = values.float()
    _, inv = torch.unique(group_ids.to(x.device).long(), return_inverse=True)
    n = int(inv.max()) + 1
    mean = torch.zeros(n, device=x.device).index_add_(0, inv, x) / torch.zeros(n, device=x.device).index_add_(
        0, inv, torch.ones_like(x)
    )
    return x / mean[inv].clamp_min(1e-12)


@WEIGHTS.register("constant")
def constant_weight(inputs: WeightInputs, value: float = 1.0) -> Tensor:
    """w = value everywhere: the mixing coefficient of a term (dGRPO's λ on the OPD term)."""
    return torch.full_like(inputs.divergence, float(value))


@WEIGHTS.register("tip")
def tip_weight(inputs: WeightInputs, fraction: float = 0.5) -> Tensor:
    """TIP token selection: w = 1 on the ⌈fraction·N⌉ positions with the largest
    H(π_θ)(s_t) · KL(π_θ‖π_T)(s_t) and 0 elsewhere.

    The product ranks first the tokens TIP calls informative on both axes: uncertain student
    positions and confidently-wrong ones (low entropy but a large divergence still score high
    when the divergence dominates). Ties keep the earlier position.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"objective.weights: tip.fraction must be in (0, 1], got {fraction}")
    score = inputs.student_entropy() * inputs.reverse_kl()
    n = score.numel()
    keep = max(1, math.ceil(fraction * n))
    order = torch.sort(score, descending=True, stable=True).indices[:keep]
    w = torch.zeros_like(inputs.divergence)
    w[order] = 1.0
    return w


@WEIGHTS.register("position")
def position_weight(inputs: WeightInputs, power: float = 1.0) -> Tensor:
    """PW-OPSD position weights, increasing along each trajectory:
    u_t = ((t + 1) / T_i)^power with t the position among trajectory i's T_i decisions, then
    w = u / mean(u) over the batch so the loss keeps its scale (mean weight 1)."""
    ones = torch.ones_like(inputs.divergence, dtype=torch.float32)
    length = torch.zeros(inputs.rollout.batch_size, device=ones.device).index_add_(0, inputs.batch_index, ones)
    u = ((inputs.position.float() + 1.0) / length[inputs.batch_index]) ** float(power)
    return u / u.mean()


@WEIGHTS.register("clip_divergence")
def clip_divergence_weight(inputs: WeightInputs, max_value: float = 1.0) -> Tensor:
    """Clips the per-position divergence at c through a detached weight: w = min(1, c / D), so
    w·D = min(D, c) (PW-OPSD's clipped forward KL with `divergence.name: forward_kl`): a position
    whose divergence exceeds c contributes c, and its gradient is scaled by c / D."""
    d = inputs.divergence.float().clamp_min(1e-12)
    return (float(max_value) / d).clamp(max=1.0)


@WEIGHTS.register("teacher_entropy")
def teacher_entropy_weight(inputs: WeightInputs, temperature: float = 1.0) -> Tensor:
    """SRPO's down-weighting of uncertain teacher targets: w = exp(−H(π_T)(s_t) / τ)."""
    return torch.exp(-inputs.teacher_entropy() / float(temperature))


@WEIGHTS.register("outcome_gate")
def outcome_gate_weight(inputs: WeightInputs, keep: str = "wrong", threshold: float = 0.5) -> Tensor:
    """Routes trajectories by verifier outcome r_i: `keep: correct` gives w = 1[r_i ≥ threshold],
    `keep: wrong` gives w = 1[r_i < threshold] (on the term these weights multiply)."""
    if keep not in ("correct", "wrong"):
        raise ConfigError(f"objective.weights: outcome_gate.keep must be 'correct' or 'wrong', got {keep!r}")
    o = inputs.outcome()
    if o is None:
        raise ConfigError("objective.weights: outcome_gate needs rollouts with an outcome (an answer field and a verifier)")
    correct = o >= float(threshold)
    return (correct if keep == "correct" else ~correct).float()


@WEIGHTS.register("teacher_perplexity")
def teacher_perplexity_weight(inputs: WeightInputs, power: float = 1.0) -> Tensor:
    """SCOPE's weight on the distillation of wrong rollouts: w_i ∝ PPL_T(y_i)^(−power), with
    PPL_T(y_i) = exp(−mean_t log π_T(y_t | s_t)), group-normalised (`group_normalise`).

    A rollout the teacher finds plausible (low perplexity) is one whose states the teacher
    understands and can correct; a rollout it finds very unlikely is off its support, where its
    guidance is unreliable, so it is damped.
    """
    nll = -inputs.trajectory_mean(inputs.teacher_logp())
    return group_normalise(torch.exp(-float(power) * nll), inputs.group_ids())[inputs.batch_index]


@WEIGHTS.register("student_perplexity")
def student_perplexity_weight(inputs: WeightInputs, power: float = 1.0) -> Tensor:
    """SCOPE's weight on the likelihood of correct rollouts: w_i ∝ PPL_θ(y_i)^power, with
    PPL_θ(y_i) = exp(−mean_t log π_θ(y_t | s_t)), group-normalised: correct answers the student
    was unsure of are reinforced most."""
    nll = -inputs.trajectory_mean(inputs.student_logp())
    return group_normalise(torch.exp(float(power) * nll), inputs.group_ids())[inputs.batch_index]


def build_weights(specs: list, field: str = "objective.weights") -> list:
    """Config entries (a name, or a mapping with `name` and options) -> [(fn, options)]."""
    return WEIGHTS.build_all(specs, field)


def combine_weights(built: list, inputs: WeightInputs) -> Tensor:
    w = torch.ones_like(inputs.divergence)
    for fn, opts in built:
        w = w * fn(inputs, **opts)
    return w
