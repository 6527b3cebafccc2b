"""The sampled-token estimator: its expected gradient is the analytic reverse-KL gradient;
G-OPD, vOPD baseline and clipping formulas against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

import unified_opd as uo
from unified_opd.divergences import divergence
from unified_opd.errors import ConfigError
from unified_opd.estimators import discounted_returns
from unified_opd.objective import Objective


def test_expected_policy_gradient_equals_reverse_kl_gradient():
    torch.manual_seed(0)
    z = torch.randn(6, requires_grad=True)
    zt = torch.randn(6)
    analytic = torch.autograd.grad(
        uo.divergence("reverse_kl")(uo.Categorical.from_logits(z), uo.Categorical.from_logits(zt)), z
    )[0]
    n = 200_000
    g = torch.Generator().manual_seed(1)
    a = torch.multinomial(z.detach().softmax(-1), n, replacement=True, generator=g)
    s = uo.Categorical.from_logits(z.expand(n, 6))
    t = uo.Categorical.from_logits(zt.expand(n, 6))
    ls = s.log_prob(a)
    adv = uo.opd_advantage(ls, t.log_prob(a))
    mc = torch.autograd.grad(uo.policy_gradient_loss(ls, adv).mean(), z)[0]
    assert torch.allclose(mc, analytic, atol=0.01), (mc, analytic)
    # the vOPD baseline (−KL at the state) leaves the expectation unchanged
    base = -uo.divergence("reverse_kl")(s, t).detach()
    mc_b = torch.autograd.grad(uo.policy_gradient_loss(s.log_prob(a), adv, baseline=base).mean(), z)[0]
    assert torch.allclose(mc_b, analytic, atol=0.01), (mc_b, analytic)


def test_gopd_advantage_hand_computed():
    ls, lt, lr = torch.tensor([-1.0]), torch.tensor([-0.5]), torch.tensor([-2.0])
    a = uo.opd_advantage(ls, lt, lr, lam=1.5)
    assert math.isclose(a.item(), 1.5 * (-0.5 + 2.0) - (-1.0 + 2.0))
    assert math.isclose(uo.opd_advantage(ls, lt, lr, lam=1.0).item(), (lt - ls).item())


def test_clipped_surrogate_hand_computed():
    logp = torch.log(torch.tensor([0.6, 0.3]))
    old = torch.log(torch.tensor([0.4, 0.4]))
    adv = torch.tensor([1.0, -1.0])
    loss = uo.policy_gradient_loss(logp, adv, old_logp=old, clip_eps=0.2)
    # ratio 1.5 with A>0 clips to 1.2; ratio 0.75 with A<0: min(-0.75, -0.8) = -0.8
    assert torch.allclose(loss, torch.tensor([-1.2, 0.8]))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_discounted_returns_match_a_brute_force_sum_over_each_rows_decisions(gamma):
    torch.manual_seed(3)
    mask = torch.rand(4, 9) > 0.4
    rewards = torch.randn(int(mask.sum()))
    grid = torch.zeros(4, 9)
    grid[mask] = rewards
    expected = []
    for b in range(4):
        cols = [t for t in range(9) if mask[b, t]]
        for i, t in enumerate(cols):
            expected.append(sum(gamma ** j * grid[b, u] for j, u in enumerate(cols[i:])))
    out = discounted_returns(rewards, mask, gamma)
    assert torch.allclose(out, torch.stack(expected) if expected else out, atol=1e-6)
    if gamma == 0.0:
        assert torch.equal(out, rewards)


def test_discount_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="objective.discount"):
        Objective(divergence("reverse_kl"), discount=1.5)
