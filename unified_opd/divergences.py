"""Divergences between a student and a teacher distribution, one value per position.

Conventions (see DESIGN.md): `forward_kl` is KL(teacher‖student), `reverse_kl` is
KL(student‖teacher). Categorical divergences are written once, as functions of two aligned
log-prob tensors `[n, M]` (the vocabulary, or top-k + tail buckets), and evaluated chunk by
chunk by `aligned_log_probs`, so dense, lazy and sparse inputs share one formula each. Each
also has a closed-form score (its derivative in the student's log-probs): with it, a lazy
student against a lazy or dense teacher is evaluated on vocabulary tiles with closed-form
gradients (`unified_opd.tiled`, the fast path; the same formulas, so the same values).
Gaussian divergences are closed forms summed over event dimensions.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Tuple

import torch
from torch import Tensor

from .distributions import LOG_FLOOR, Categorical, Distribution, Gaussian, aligned_log_probs, check_aligned
from .tiled import TiledFormula, tiled_divergence
from .errors import ConfigError
from .registry import Registry

DIVERGENCES = Registry("divergence", "divergence.name")


# --------------------------------------------------------------------------- formulas
def reverse_kl_terms(ls: Tensor, lt: Tensor) -> Tensor:
    """KL(S‖T) = Σ_v p_S(v) · (log p_S(v) − log p_T(v))."""
    return (ls.exp() * (ls - lt)).sum(-1)


def forward_kl_terms(ls: Tensor, lt: Tensor) -> Tensor:
    """KL(T‖S) = Σ_v p_T(v) · (log p_T(v) − log p_S(v))."""
    return (lt.exp() * (lt - ls)).sum(-1)


def _log_mixture(la: Tensor, lb: Tensor, a: float) -> Tensor:
    """log(a·p_A + (1−a)·p_B), computed in log space."""
    return torch.logaddexp(la + math.log(a), lb + math.log1p(-a)).clamp_min(LOG_FLOOR)


def generalized_jsd_terms(ls: Tensor, lt: Tensor, beta: float) -> Tensor:
    """Generalised JSD of GKD: β·KL(T‖M) + (1−β)·KL(S‖M), M = β·T + (1−β)·S.

    β = 0 is defined as forward KL and β = 1 as reverse KL (as TRL's `generalized_jsd_loss`).
    """
    if beta == 0.0:
        return forward_kl_terms(ls, lt)
    if beta == 1.0:
        return reverse_kl_terms(ls, lt)
    lm = _log_mixture(lt, ls, beta)
    return beta * forward_kl_terms(lm, lt) + (1.0 - beta) * forward_kl_terms(lm, ls)


def total_variation_terms(ls: Tensor, lt: Tensor) -> Tensor:
    """TV(S, T) = ½ Σ_v |p_S(v) − p_T(v)|."""
    return 0.5 * (ls.exp() - lt.exp()).abs().sum(-1)


def skew_kl_terms(ls: Tensor, lt: Tensor, alpha: float) -> Tensor:
    """Skew forward KL (DistiLLM): KL(T ‖ α·T + (1−α)·S); α = 0 is forward KL."""
    if alpha == 0.0:
        return forward_kl_terms(ls, lt)
    return forward_kl_terms(_log_mixture(lt, ls, alpha), lt)


def skew_reverse_kl_terms(ls: Tensor, lt: Tensor, alpha: float) -> Tensor:
    """Skew reverse KL (DistiLLM): KL(S ‖ α·S + (1−α)·T); α = 0 is reverse KL."""
    if alpha == 0.0:
        return reverse_kl_terms(ls, lt)
    return forward_kl_terms(_log_mixture(ls, lt, alpha), ls)


# --------------------------------------------------------------------------- scores
# ψ(v) = ∂φ/∂log p_S(v) of each summand φ above, elementwise `[n, M]`: with the closed-form
# `tiled.logit_gradient` they give the student's logit gradient tile by tile (`unified_opd.tiled`).
def reverse_kl_score(ls: Tensor, lt: Tensor) -> Tensor:
    """∂/∂log p_S of p_S·(log p_S − log p_T): p_S·(log p_S − log p_T + 1)."""
    return (ls - lt + 1.0).mul_(ls.exp())


def forward_kl_score(ls: Tensor, lt: Tensor) -> Tensor:
    """∂/∂log p_S of p_T·(log p_T − log p_S): −p_T."""
    return lt.exp().neg_()


def generalized_jsd_score(ls: Tensor, lt: Tensor, beta: float) -> Tensor:
    """∂/∂log p_S of β·p_T·(log p_T − log m) + (1−β)·p_S·(log p_S − log m), m = β·p_T + (1−β)·p_S:
    (1−β)·p_S·(log p_S − log m) (the terms through ∂log m/∂log p_S = (1−β)·p_S/m cancel).
    β = 0 and β = 1 are the forward and reverse KL scores."""
    if beta == 0.0:
        return forward_kl_score(ls, lt)
    if beta == 1.0:
        return reverse_kl_score(ls, lt)
    return (ls - _log_mixture(lt, ls, beta)).mul_(ls.exp()).mul_(1.0 - beta)


def total_variation_score(ls: Tensor, lt: Tensor) -> Tensor:
    """∂/∂log p_S of ½·|p_S − p_T|: ½·sign(p_S − p_T)·p_S (0 where they are equal, as autograd's)."""
    ps = ls.exp()
    return torch.sign(ps - lt.exp()).mul_(ps).mul_(0.5)


def skew_kl_score(ls: Tensor, lt: Tensor, alpha: float) -> Tensor:
    """∂/∂log p_S of p_T·(log p_T − log m), m = α·p_T + (1−α)·p_S: −(1−α)·p_T·p_S/m."""
    if alpha == 0.0:
        return forward_kl_score(ls, lt)
    return (ls + lt - _log_mixture(lt, ls, alpha)).exp_().mul_(alpha - 1.0)


def skew_reverse_kl_score(ls: Tensor, lt: Tensor, alpha: float) -> Tensor:
    """∂/∂log p_S of p_S·(log p_S − log m), m = α·p_S + (1−α)·p_T:
    p_S·(log p_S − log m + 1 − α·p_S/m)."""
    if alpha == 0.0:
        return reverse_kl_score(ls, lt)
    lm = _log_mixture(ls, lt, alpha)
    return (ls - lm).add_(1.0).sub_((ls - lm).exp_().mul_(alpha)).mul_(ls.exp())


def gaussian_kl(p: Gaussian, q: Gaussian) -> Tensor:
    """KL(p‖q) for diagonal Gaussians, summed over event dims -> [batch] float32:
    Σ [ log(σ_q/σ_p) + (σ_p² + (μ_p − μ_q)²) / (2σ_q²) − ½ ].
    With σ_p = σ_q = σ this is mean matching, Σ (μ_p − μ_q)² / (2σ²)."""
    if p.mean.shape != q.mean.shape:
        raise ValueError(f"Gaussian KL: mean shapes differ, {tuple(p.mean.shape)} vs {tuple(q.mean.shape)}")
    mp, mq, sp, sq = p.mean.float(), q.mean.float(), p.std.float(), q.std.float()
    kl = torch.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5
    return kl.flatten(1).sum(-1)


# --------------------------------------------------------------------------- registry
class Divergence:
    """`D(student, teacher) -> [batch]` float32, differentiable in the student."""

    name = "divergence"
    kinds: Tuple[str, ...] = ("categorical",)  # the distribution kinds it is defined for

    def __init__(self, temperature: float = 1.0):
        if temperature <= 0:
            raise ConfigError(f"divergence.temperature: expected a positive number, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, student: Distribution, teacher: Distribution) -> Tensor:
        if isinstance(student, Categorical) and isinstance(teacher, Categorical):
            check_aligned(student, teacher)
            s = student.with_temperature(self.temperature)
            t = teacher.with_temperature(self.temperature)
            formula = self.tiled()
            values = None if formula is None else tiled_divergence(s, t, formula)
            return (aligned_log_probs(s, t, self.categorical) if values is None else values).float()
        if isinstance(student, Gaussian) and isinstance(teacher, Gaussian):
            return self.gaussian(student, teacher).float()
        raise TypeError(
            f"divergence {self.name!r}: student and teacher must both be Categorical or both Gaussian, "
            f"got {type(student).__name__} and {type(teacher).__name__}"
        )

    def check_kind(self, kind: str) -> None:
        """A domain whose decisions are `kind` distributions ("categorical" or "gaussian") cannot
        use this divergence: a ConfigError at start-up instead of a TypeError at the first step."""
        if kind not in self.kinds:
            usable = [n for n in DIVERGENCES if kind in DIVERGENCES.get(n).kinds]
            raise ConfigError(
                f"divergence.name: {self.name!r} is not defined for {kind} distributions, which this domain's "
                f"policy outputs; use one of {', '.join(usable)}"
            )

    def categorical(self, ls: Tensor, lt: Tensor) -> Tensor:
        raise TypeError(f"divergence {self.name!r} is not defined for Categorical distributions")

    def tiled(self) -> Optional[TiledFormula]:
        """Summand, score and one-pass kind for `unified_opd.tiled`; None: the generic path only."""
        return None

    def gaussian(self, s: Gaussian, t: Gaussian) -> Tensor:
        raise TypeError(
            f"divergence {self.name!r} has no closed form for Gaussian distributions; use 'kl', 'reverse_kl' or 'forward_kl'"
        )


@DIVERGENCES.register("reverse_kl")
class ReverseKL(Divergence):
    """KL(student‖teacher): mode-seeking; the OPD default."""

    name = "reverse_kl"
    kinds = ("categorical", "gaussian")

    def categorical(self, ls, lt):
        return reverse_kl_terms(ls, lt)

    def tiled(self):
        return TiledFormula(reverse_kl_terms, reverse_kl_score, "reverse")

    def gaussian(self, s, t):
        return gaussian_kl(s, t)


@DIVERGENCES.register("kl")
class KL(ReverseKL):
    """Alias of reverse KL, the usual name for the per-step Gaussian KL of diffusion OPD."""

    name = "kl"


@DIVERGENCES.register("forward_kl")
class ForwardKL(Divergence):
    """KL(teacher‖student): mass-covering."""

    name = "forward_kl"
    kinds = ("categorical", "gaussian")

    def categorical(self, ls, lt):
        return forward_kl_terms(ls, lt)

    def tiled(self):
        return TiledFormula(forward_kl_terms, forward_kl_score, "forward")

    def gaussian(self, s, t):
        return gaussian_kl(t, s)


@DIVERGENCES.register("jsd")
class JSD(Divergence):
    """Generalised JSD(β) of GKD; see `generalized_jsd_terms`."""

    name = "jsd"

    def __init__(self, beta: float = 0.5, temperature: float = 1.0):
        super().__init__(temperature)
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"divergence.beta: expected a number in [0, 1], got {beta}")
        self.beta = float(beta)

    def categorical(self, ls, lt):
        return generalized_jsd_terms(ls, lt, self.beta)

    def tiled(self):
        b = self.beta
        kind = {0.0: "forward", 1.0: "reverse"}.get(b)
        return TiledFormula(
            lambda ls, lt: generalized_jsd_terms(ls, lt, b), lambda ls, lt: generalized_jsd_score(ls, lt, b), kind
        )


@DIVERGENCES.register("tv")
class TotalVariation(Divergence):
    name = "tv"

    def categorical(self, ls, lt):
        return total_variation_terms(ls, lt)

    def tiled(self):
        return TiledFormula(total_variation_terms, total_variation_score)


class _Skew(Divergence):
    def __init__(self, alpha: float = 0.1, temperature: float = 1.0):
        super().__init__(temperature)
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"divergence.alpha: expected a number in [0, 1), got {alpha}")
        self.alpha = float(alpha)


@DIVERGENCES.register("skew_kl")
class SkewKL(_Skew):
    name = "skew_kl"

    def categorical(self, ls, lt):
        return skew_kl_terms(ls, lt, self.alpha)

    def tiled(self):
        a = self.alpha
        kind = "forward" if a == 0.0 else None
        return TiledFormula(lambda ls, lt: skew_kl_terms(ls, lt, a), lambda ls, lt: skew_kl_score(ls, lt, a), kind)


@DIVERGENCES.register("skew_reverse_kl")
class SkewReverseKL(_Skew):
    name = "skew_reverse_kl"

    def categorical(self, ls, lt):
        return skew_reverse_kl_terms(ls, lt, self.alpha)

    def tiled(self):
        a = self.alpha
        kind = "reverse" if a == 0.0 else None
        return TiledFormula(
            lambda ls, lt: skew_reverse_kl_terms(ls, lt, a), lambda ls, lt: skew_reverse_kl_score(ls, lt, a), kind
        )


def divergence(name: str, **options: Any) -> Divergence:
    """Build a registered divergence: `divergence("jsd", beta=0.5)`."""
    return DIVERGENCES.build({"name": name, **options}, "divergence")


def divergence_from_config(section: Mapping[str, Any]) -> Divergence:
    """Build from a config section holding every divergence knob: only those this one takes are used."""
    return DIVERGENCES.build(dict(section), "divergence", strict=False)
