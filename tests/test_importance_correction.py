"""Truncated importance weights on the rollout engine's log-prob mismatch (TIS), by hand."""

from __future__ import annotations

import math

import pytest
import torch

import unified_opd as uo
from unified_opd.estimators import truncated_importance_weights
from unified_opd.objective import Objective


def test_weights_are_the_capped_ratio_by_hand():
    train = torch.log(torch.tensor([0.5, 0.2, 0.9, 0.1]))
    engine = torch.log(torch.tensor([0.25, 0.4, 0.3, 0.1]))
    # ρ = 0.5/0.25 = 2, 0.2/0.4 = 0.5, 0.9/0.3 = 3, 1 -> capped at 2.5: 2, 0.5, 2.5, 1
    w, m = truncated_importance_weights(train, engine, 2.5)
    assert torch.allclose(w, torch.tensor([2.0, 0.5, 2.5, 1.0]))
    assert m["is_ratio_mean"] == pytest.approx((2 + 0.5 + 3 + 1) / 4)
    assert m["is_ratio_max"] == pytest.approx(3.0)
    assert m["is_clip_frac"] == pytest.approx(0.25)


def test_no_cap_measures_only():
    w, m = truncated_importance_weights(torch.log(torch.tensor([0.6])), torch.log(torch.tensor([0.2])), None)
    assert torch.equal(w, torch.ones(1))
    assert m["is_ratio_max"] == pytest.approx(3.0)
    assert "is_clip_frac" not in m


def _rollout(actions, mask, **meta):
    return uo.Rollout(actions=actions, loss_mask=mask, step_ids=torch.zeros_like(mask), student_view=None, meta=meta)


def test_sampled_loss_is_weighted_per_token():
    torch.manual_seed(0)
    zs, zt = torch.randn(1, 3, 5, requires_grad=True), torch.randn(1, 3, 5)
    a = torch.tensor([[1, 2, 3]])
    mask = torch.tensor([[0, 1, 1]])
    ls = zs.log_softmax(-1).gather(-1, a.unsqueeze(-1)).squeeze(-1)
    lt = zt.log_softmax(-1).gather(-1, a.unsqueeze(-1)).squeeze(-1)
    # the engine gave token 2 half the trainer's probability (ρ = 2) and token 3 four times it (ρ = 0.25)
    engine = torch.stack([torch.zeros(()), ls[0, 1] + math.log(0.5), ls[0, 2] + math.log(4.0)]).detach()[None]
    loss, m = Objective(uo.divergence("reverse_kl"))(
        uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), _rollout(a, mask, engine_logprobs=engine, is_cap=1.5)
    )
    adv = (lt - ls).detach()
    expected = (-adv[0, 1] * ls[0, 1] * 1.5 - adv[0, 2] * ls[0, 2] * 0.25) / 2
    assert torch.allclose(loss, expected)
    assert m["is_ratio_max"] == pytest.approx(2.0, rel=1e-5)
    assert m["is_clip_frac"] == pytest.approx(0.5)


def test_analytic_loss_reports_the_mismatch_unweighted():
    torch.manual_seed(0)
    zs, zt = torch.randn(1, 2, 5), torch.randn(1, 2, 5)
    a, mask = torch.tensor([[1, 2]]), torch.ones(1, 2, dtype=torch.long)
    ls = zs.log_softmax(-1).gather(-1, a.unsqueeze(-1)).squeeze(-1)
    plain, _ = Objective(uo.divergence("jsd"))(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), _rollout(a, mask))
    loss, m = Objective(uo.divergence("jsd"))(
        uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), _rollout(a, mask, engine_logprobs=ls - math.log(2.0), is_cap=None)
    )
    assert torch.equal(loss, plain)
    assert m["is_ratio_mean"] == pytest.approx(2.0, rel=1e-5)
