"""The OPD objective: one loss for every domain and recipe.

    loss = Σ_positions w · ℓ / #positions,  over the student's own decisions (loss_mask = 1)

where ℓ is either the **sampled-token** policy-gradient term (reverse KL in expectation; only the
log-probs of the sampled actions are needed) or the **analytic** per-position divergence
D(π_θ ‖ target) from the registry, and w multiplies the configured per-position weights.
The target is the teacher, or `pool([teacher, reference], [λ, 1−λ])` for G-OPD/ExOPD (λ may be
per-token: `lam_rule: tv_adaptive`, AlignDistil's logit extrapolation).

An optional **outcome term** adds, per position, `c · w_o · (−sg(A_i) · log π_θ(a_t))` with a
per-trajectory advantage A_i from the verifier (`outcome_advantage`: GRPO's group-normalised
advantage, or the raw reward = likelihood of correct rollouts) and its own weights `w_o`. Weights
that gate by outcome route each trajectory to the distillation term, the outcome term or both,
which is how SCOPE, SRPO and dGRPO are configured without any recipe name in the code.

A rollout sampled by another engine than the trained model (vLLM) carries that engine's log-probs
of its tokens, `meta["engine_logprobs"]` (`[B, P]`, aligned with `actions`), and
`meta["is_cap"]`: the mismatch π_train/π_engine is reported (`is_ratio_mean`, `is_ratio_max`),
and with a cap C the sampled-token term is multiplied by the truncated weight min(ρ_t, C)
(`truncated_importance_weights`, `is_clip_frac`); `is_cap: None` measures only.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Dict, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from .config import ObjectiveConfig
from .distributions import Categorical, Distribution, aligned_log_probs, pool
from .divergences import Divergence, divergence as make_divergence, divergence_from_config
from .errors import ConfigError, UserError, require_one_of
from .estimators import (
    discounted_returns,
    grpo_advantage,
    opd_advantage,
    outcome_pg_loss,
    policy_gradient_loss,
    reward_advantage,
    sequence_kd_loss,
    topk_reverse_kl,
    truncated_importance_weights,
    tv_adaptive_lam,
)
from .rollout import Rollout
from .topk_diagnostics import topk_diagnostics
from .weights import WeightInputs, build_weights, combine_weights

ESTIMATORS = ("auto", "sampled", "analytic", "supervised")
BASELINES = ("none", "reverse_kl")
OUTCOME_ADVANTAGES = {"grpo": grpo_advantage, "reward": reward_advantage}
LAM_RULES = ("constant", "tv_adaptive")
OPTION_NAMES = tuple(f.name for f in fields(ObjectiveConfig))


class Objective:
    """Configured loss. `estimator="auto"` uses the sampled-token estimator for reverse KL on
    Categorical distributions (the cheap, standard OPD loss) and the analytic divergence otherwise
    (other divergences have no single-sample form; Gaussians have a closed form).
    `estimator="supervised"` is SeqKD: the likelihood of the rollout's tokens, which must then be
    the teacher's samples (a `teacher.cache` written with `rollouts: teacher`).

    Its knobs are `ObjectiveConfig`'s fields (names, defaults and meaning are defined there only);
    `weights` and `outcome_weights` are given built (`build_weights`), as `from_config` does.
    """

    def __init__(self, divergence: Divergence, **options: Any):
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise ConfigError(f"objective.{unknown[0]}: unknown option (known: {', '.join(OPTION_NAMES)})")
        self.divergence = divergence
        knobs = ObjectiveConfig(**options)
        for name in OPTION_NAMES:
            setattr(self, name, getattr(knobs, name))
        self.weights, self.outcome_weights = tuple(self.weights), tuple(self.outcome_weights)
        self._check()

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Objective":
        """The objective of a run config: its `divergence` and `objective` sections."""
        options = OmegaConf.to_container(cfg.objective)
        for key in ("weights", "outcome_weights"):
            options[key] = build_weights(options[key], f"objective.{key}")
        return cls(divergence_from_config(OmegaConf.to_container(cfg.divergence)), **options)

    def _check(self) -> None:
        require_one_of("objective.estimator", self.estimator, ESTIMATORS)
        require_one_of("objective.baseline", self.baseline, BASELINES)
        if self.baseline_top_k < 0:
            raise ConfigError(f"objective.baseline_top_k: expected 0 (full vocabulary) or a positive k, got {self.baseline_top_k}")
        if not 0.0 <= self.discount <= 1.0:
            raise ConfigError(f"objective.discount: expected a number in [0, 1], got {self.discount}")
        require_one_of("objective.lam_rule", self.lam_rule, LAM_RULES)
        require_one_of("objective.outcome_advantage", self.outcome_advantage, ("none", *OUTCOME_ADVANTAGES))
        if self.estimator == "sampled" and self.divergence.name not in ("reverse_kl", "kl"):
            raise ConfigError(
                f"objective.estimator: 'sampled' estimates reverse KL only, but divergence.name is "
                f"{self.divergence.name!r}; use estimator 'analytic' or 'auto'"
            )

    def needs_reference(self) -> bool:
        """λ != 1 pools the teacher with a reference model; tv_adaptive measures λ against one."""
        return self.lam != 1.0 or self.lam_rule != "constant"

    def uses_sampled(self, student: Distribution) -> bool:
        if self.estimator in ("analytic", "supervised") or not isinstance(student, Categorical):
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
        old_logp: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Dict[str, float]]:
        """`old_logp` (from `action_log_probs` at rollout time) marks a reused rollout: the
        sampled-token loss then uses the clipped importance ratio π_θ/π_old (`clip_eps`)."""
        mask = rollout.mask.to(student.device)
        n = int(mask.sum())
        if n == 0:
            raise ValueError("objective: the rollout has no position with loss_mask = 1 (nothing to distil)")
        s, t = student.select(mask), teacher.select(mask)
        r = reference.select(mask) if reference is not None else None
        metrics: Dict[str, float] = {}
        lam = self._lam(t, r)
        if isinstance(lam, Tensor):
            metrics["lam_mean"] = float(lam.mean())
        actions = rollout.actions.to(mask.device)[mask] if isinstance(student, Categorical) else None
        per_position, detached_div, ls, lt = self._per_position(s, t, r, lam, actions, rollout, mask, old_logp, metrics)
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
            actions=actions,
        )
        if ls is not None:
            inputs.remember(student_logp=ls, teacher_logp=lt)
        w = combine_weights(self.weights, inputs)
        total = w * per_position
        if self.outcome_advantage != "none":
            if ls is None:
                ls = s.log_prob(actions)
            outcome_loss, outcome_metrics = self._outcome_term(ls, rollout, batch_index, inputs)
            total = total + outcome_loss
            metrics.update(outcome_metrics)
        loss = total.sum() / n
        metrics.update(loss=float(loss.detach()), kl=float(detached_div.mean()), tokens=float(n))
        if self.weights:
            metrics["weight_mean"] = float(w.mean())
        if isinstance(t, Categorical) and t.is_sparse and not s.is_sparse:
            metrics.update(topk_diagnostics(s, t))
        return loss, metrics

    def _per_position(self, s, t, r, lam, actions, rollout: Rollout, mask: Tensor, old_logp: Optional[Tensor], metrics: Dict[str, float]):
        """The loss term at each position and the divergence it measures (detached) -> (term,
        divergence, log π_θ(a), log π_T(a)); the two log-probs are None for an analytic loss."""
        if self.estimator == "supervised":
            return self._supervised_term(s, t, actions)
        if not self.uses_sampled(s):
            per_position = self.divergence(s, _target(t, r, lam))
            _measure_mismatch(rollout, s, actions, mask, metrics)
            return per_position, per_position.detach(), None, None
        per_position, ls, lt = self._sampled_term(s, t, r, lam, actions, mask, old_logp, metrics)
        per_position = per_position * _engine_correction(rollout, ls if old_logp is None else old_logp, mask, metrics)
        return per_position, (ls - lt).detach(), ls, lt

    def _supervised_term(self, s, t, actions: Optional[Tensor]):
        """SeqKD: the likelihood of the rollout's own tokens (the teacher's samples, from a
        `teacher.cache` written with `rollouts: teacher`); the teacher's log-probs only feed the
        reported sampled KL."""
        if actions is None:
            raise ConfigError("objective.estimator: 'supervised' needs token actions (a Categorical student)")
        ls = s.log_prob(actions)
        with torch.no_grad():
            lt = t.log_prob(actions)
        return sequence_kd_loss(ls), (ls - lt).detach(), ls, lt

    def _sampled_term(self, s, t, r, lam, actions: Tensor, mask: Tensor, old_logp: Optional[Tensor], metrics: Dict[str, float]):
        """The sampled-token policy-gradient term per position -> (term, log π_θ(a), log π_T(a))."""
        ls = s.log_prob(actions)
        with torch.no_grad():
            lt = t.log_prob(actions)
            lr = r.log_prob(actions) if r is not None else None
        adv = opd_advantage(ls, lt, lr, lam)
        if self.discount:
            adv = discounted_returns(adv, mask.bool(), self.discount)
        baseline = None
        if self.baseline == "reverse_kl":
            with torch.no_grad():
                baseline = -self._value_kl(s.detach(), _target(t, r, lam))
        metrics["advantage"] = float(adv.mean())
        if old_logp is not None:
            ratio = torch.exp(ls.detach() - old_logp)
            metrics["clip_frac"] = float(((ratio - 1.0).abs() > self.clip_eps).float().mean())
        return policy_gradient_loss(ls, adv, baseline, old_logp, self.clip_eps), ls, lt

    def action_log_probs(self, student: Distribution, rollout: Rollout) -> Optional[Tensor]:
        """Detached log π(a_t) on the masked positions, the π_old of a rollout that will be reused;
        None when the loss is analytic (it needs no importance ratio)."""
        if not self.uses_sampled(student):
            return None
        mask = rollout.mask.to(student.device)
        with torch.no_grad():
            return student.detach().select(mask).log_prob(rollout.actions.to(mask.device)[mask])

    def _lam(self, teacher: Distribution, reference: Optional[Distribution]):
        """λ as configured: a float, or per position (`tv_adaptive`, from teacher vs reference)."""
        if self.lam_rule == "constant":
            return self.lam
        if reference is None:
            raise ConfigError("objective.lam_rule: 'tv_adaptive' needs a reference model (teacher.reference)")
        with torch.no_grad():
            tv = make_divergence("tv")(teacher, reference)
        return tv_adaptive_lam(tv, self.lam, self.lam_tv)

    def _value_kl(self, student: Distribution, target: Distribution) -> Tensor:
        """vOPD's V(s_t) = −KL(π_θ‖π_T)(s_t) up to sign: full vocabulary, or the student's top-k."""
        if self.baseline_top_k == 0:
            return make_divergence("reverse_kl")(student, target)
        k = self.baseline_top_k
        return aligned_log_probs(student, target, lambda a, b: topk_reverse_kl(a, b, k))

    def _outcome_term(self, ls: Tensor, rollout: Rollout, batch_index: Tensor, inputs: WeightInputs):
        if rollout.outcome is None:
            raise UserError(
                "objective.outcome_advantage: the rollouts carry no outcome (give the data an answer field and a verifier)"
            )
        if self.outcome_advantage == "grpo" and rollout.group_ids is None:
            raise UserError("objective.outcome_advantage: 'grpo' needs rollout.group_ids (several samples per prompt)")
        group_ids = rollout.group_ids if rollout.group_ids is not None else torch.arange(rollout.batch_size)
        fn = OUTCOME_ADVANTAGES[self.outcome_advantage]
        adv_traj = fn(rollout.outcome.to(ls.device), group_ids.to(ls.device))
        w_o = combine_weights(self.outcome_weights, inputs)
        loss = self.outcome_coef * w_o * outcome_pg_loss(ls, adv_traj[batch_index])
        return loss, {"outcome_advantage": float(adv_traj.mean()), "outcome_weight_mean": float(w_o.mean())}


def _target(teacher: Distribution, reference: Optional[Distribution], lam) -> Distribution:
    if not isinstance(lam, Tensor) and lam == 1.0:
        return teacher
    if reference is None:
        raise ConfigError("objective.lam: λ != 1 needs a reference model (teacher.reference)")
    return pool([teacher, reference], [lam, 1.0 - lam])


def _engine_correction(rollout: Rollout, train_logp: Tensor, mask: Tensor, metrics: Dict[str, float]):
    """The TIS weight per masked position (1 when the rollout carries no engine log-probs); its
    figures go into `metrics`. `train_logp` is π_old when the rollout is reused (decoupled PPO)."""
    engine_logp = rollout.meta.get("engine_logprobs")
    if engine_logp is None:
        return 1.0
    w, m = truncated_importance_weights(train_logp, engine_logp.to(mask.device)[mask], rollout.meta.get("is_cap"))
    metrics.update(m)
    return w


def _measure_mismatch(rollout: Rollout, student: Distribution, actions: Optional[Tensor], mask: Tensor, metrics: Dict[str, float]) -> None:
    """The engine mismatch's figures without a weight: an analytic loss has no sampled token to reweight."""
    if "engine_logprobs" in rollout.meta and actions is not None:
        with torch.no_grad():
            _engine_correction(rollout, student.log_prob(actions), mask, metrics)


def _flat_index(rollout: Rollout, mask: Tensor) -> Tuple[Tensor, Tensor]:
    b = torch.arange(mask.shape[0], device=mask.device).unsqueeze(-1).expand_as(mask)
    return b[mask], rollout.positions().to(mask.device)[mask]

