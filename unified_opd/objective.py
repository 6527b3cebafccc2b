"""The OPD objective: one loss for every domain and recipe.

    loss = Σ_positions w · ℓ / #positions,  over the student's own decisions (loss_mask = 1)

where ℓ is either the **sampled-token** policy-gradient term (reverse KL in expectation; only the
log-probs of the sampled actions are needed) or the **analytic** per-position divergence
D(π_θ ‖ target) from the registry, and w multiplies the configured per-position weights.
The target is the teacher, or `pool([teacher, reference], [λ, 1−λ])` for G-OPD/ExOPD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .distributions import Categorical, Distribution, pool
from .divergences import Divergence, divergence as make_divergence
from .errors import ConfigError
from .estimators import opd_advantage, policy_gradient_loss
from .rollout import Rollout
from .weights import WeightInputs, combine_weights

ESTIMATORS = ("auto", "sampled", "analytic")
BASELINES = ("none", "reverse_kl")


@dataclass
class Objective:
    """Configured loss. `estimator="auto"` uses the sampled-token estimator for reverse KL on
    Categorical distributions (the cheap, standard OPD loss) and the analytic divergence otherwise
    (other divergences have no single-sample form; Gaussians have a closed form)."""

    divergence: Divergence
    estimator: str = "auto"
    weights: Tuple = ()
    lam: float = 1.0
    baseline: str = "none"
    clip_eps: float = 0.2

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"objective.estimator: expected one of {ESTIMATORS}, got {self.estimator!r}")
        if self.baseline not in BASELINES:
            raise ConfigError(f"objective.baseline: expected one of {BASELINES}, got {self.baseline!r}")
        if self.estimator == "sampled" and self.divergence.name not in ("reverse_kl", "kl"):
            raise ConfigError(
                f"objective.estimator: 'sampled' estimates reverse KL only, but divergence.name is "
                f"{self.divergence.name!r}; use estimator 'analytic' or 'auto'"
            )

    def uses_sampled(self, student: Distribution) -> bool:
        if self.estimator == "analytic" or not isinstance(student, Categorical):
            return False
        return self.estimator == "sampled" or self.divergence.name in ("reverse_kl", "kl")

    def __call__(
        self,
        student: Distribution,
        teacher: Distribution,
        rollout: Rollout,
        reference: Optional[Distribution] = None,
        step: int = 0,
        max_steps: int = 1,
    ) -> Tuple[Tensor, Dict[str, float]]:
        mask = rollout.mask.to(_device(student))
        n = int(mask.sum())
        if n == 0:
            raise ValueError("objective: the rollout has no position with loss_mask = 1 (nothing to distil)")
        s, t = student.select(mask), teacher.select(mask)
        r = reference.select(mask) if reference is not None else None
        metrics: Dict[str, float] = {}
        if self.uses_sampled(student):
            actions = rollout.actions.to(mask.device)[mask]
            ls = s.log_prob(actions)
            with torch.no_grad():
                lt = t.log_prob(actions)
                lr = r.log_prob(actions) if r is not None else None
            adv = opd_advantage(ls, lt, lr, self.lam)
            baseline = None
            if self.baseline == "reverse_kl":
                with torch.no_grad():
                    baseline = -make_divergence("reverse_kl")(s.detach(), _target(t, r, self.lam))
            per_position = policy_gradient_loss(ls, adv, baseline)
            detached_div = (ls - lt).detach()
            metrics["advantage"] = float(adv.mean())
        else:
            per_position = self.divergence(s, _target(t, r, self.lam))
            detached_div = per_position.detach()
        batch_index, position = _flat_index(rollout, mask)
        inputs = WeightInputs(
            rollout=rollout,
            student=s,
            teacher=t,
            divergence=detached_div,
            batch_index=batch_index,
            position=position,
            step_ids=rollout.step_ids.to(mask.device)[mask],
            step=step,
            max_steps=max_steps,
        )
        w = combine_weights(self.weights, inputs)
        loss = (w * per_position).sum() / n
        metrics.update(loss=float(loss.detach()), kl=float(detached_div.mean()), tokens=float(n))
        if self.weights:
            metrics["weight_mean"] = float(w.mean())
        return loss, metrics


def _target(teacher: Distribution, reference: Optional[Distribution], lam: float) -> Distribution:
    if lam == 1.0:
        return teacher
    if reference is None:
        raise ConfigError("objective.lam: λ != 1 needs a reference model (teacher.reference)")
    return pool([teacher, reference], [lam, 1.0 - lam])


def _flat_index(rollout: Rollout, mask: Tensor) -> Tuple[Tensor, Tensor]:
    b = torch.arange(mask.shape[0], device=mask.device).unsqueeze(-1).expand_as(mask)
    return b[mask], rollout.positions().to(mask.device)[mask]


def _device(d: Distribution) -> torch.device:
    if isinstance(d, Categorical):
        if d.is_sparse:
            return d.topk[0].device
        return d._rows[0].device
    return d.mean.device
