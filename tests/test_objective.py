"""The objective: masking, token-mean normalisation, estimator choice, G-OPD target, weights."""

from __future__ import annotations

import pytest
import torch

import unified_opd as uo
from unified_opd.objective import Objective
from unified_opd.weights import WEIGHTS, build_weights


def _rollout(actions, mask, outcome=None):
    return uo.Rollout(actions=actions, loss_mask=mask, step_ids=torch.zeros_like(mask), student_view=None, outcome=outcome)


def test_analytic_loss_is_masked_token_mean():
    torch.manual_seed(0)
    zs, zt = torch.randn(2, 3, 5, requires_grad=True), torch.randn(2, 3, 5)
    mask = torch.tensor([[0, 1, 1], [0, 0, 1]])
    obj = Objective(uo.divergence("jsd"))
    loss, m = obj(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), _rollout(torch.zeros(2, 3).long(), mask))
    per = uo.divergence("jsd")(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt))
    assert torch.allclose(loss, (per * mask).sum() / 3)
    assert m["tokens"] == 3


def test_auto_uses_sampled_estimator_for_reverse_kl():
    torch.manual_seed(0)
    zs, zt = torch.randn(1, 4, 5, requires_grad=True), torch.randn(1, 4, 5)
    a = torch.tensor([[1, 2, 3, 4]])
    mask = torch.ones(1, 4, dtype=torch.long)
    loss, m = Objective(uo.divergence("reverse_kl"))(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), _rollout(a, mask))
    ls = zs.log_softmax(-1).gather(-1, a.unsqueeze(-1)).squeeze(-1)
    lt = zt.log_softmax(-1).gather(-1, a.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(loss, (-(lt - ls).detach() * ls).mean())
    assert abs(m["kl"] - float((ls - lt).mean().detach())) < 1e-6


def test_lambda_needs_reference_and_pools_target():
    zs, zt, zr = torch.randn(1, 2, 4), torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    r = _rollout(torch.zeros(1, 2).long(), torch.ones(1, 2, dtype=torch.long))
    obj = Objective(uo.divergence("forward_kl"), lam=2.0)
    with pytest.raises(uo.ConfigError, match="reference"):
        obj(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), r)
    loss, _ = obj(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), r, uo.Categorical.from_logits(zr))
    target = uo.pool([uo.Categorical.from_logits(zt), uo.Categorical.from_logits(zr)], [2.0, -1.0])
    assert torch.allclose(loss, uo.divergence("forward_kl")(uo.Categorical.from_logits(zs), target).mean())


def test_weights_multiply_the_per_position_loss():
    @WEIGHTS.register("test_second_half")
    def second_half(inputs, start=1):
        return (inputs.position >= start).float()

    zs, zt = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    mask = torch.ones(1, 3, dtype=torch.long)
    obj = Objective(uo.divergence("tv"), weights=tuple(build_weights([{"name": "test_second_half", "start": 2}])))
    loss, _ = obj(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), _rollout(torch.zeros(1, 3).long(), mask))
    per = uo.divergence("tv")(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt))
    assert torch.allclose(loss, per[0, 2] / 3)


def test_bad_objective_settings():
    with pytest.raises(uo.ConfigError, match="objective.estimator"):
        Objective(uo.divergence("jsd"), estimator="sampled")
    with pytest.raises(uo.ConfigError, match="objective.baseline"):
        Objective(uo.divergence("reverse_kl"), baseline="value_net")
    with pytest.raises(uo.ConfigError, match="objective.weights\\[0\\].name"):
        build_weights(["unifrom"])
