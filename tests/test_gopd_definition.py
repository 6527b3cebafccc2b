"""G-OPD / ExOPD against the paper's own definition: OPD as KL-regularised RL whose dense reward
is the teacher's log-ratio to the reference, scaled by λ,

    J(π) = λ · E_{y~π}[log π_T(y) − log π_ref(y)] − KL(π ‖ π_ref),

computed here from its definition alone. Its maximiser is the toolkit's extrapolated target
pool([π_T, π_ref], [λ, 1−λ]) ∝ π_T^λ π_ref^(1−λ), and both of the objective's estimators descend J."""

from __future__ import annotations

import pytest
import torch

import unified_opd as uo
from unified_opd.objective import Objective


def gopd_return(student_logits, teacher_logp, ref_logp, lam):
    """J(π) from the definition, one position, exact expectation over a small vocabulary."""
    logp = student_logits.log_softmax(-1)
    p = logp.exp()
    return lam * (p * (teacher_logp - ref_logp)).sum(-1) - (p * (logp - ref_logp)).sum(-1)


@pytest.mark.parametrize("lam", [1.0, 1.5, 3.0])
def test_the_maximiser_of_the_gopd_return_is_the_pooled_target(lam):
    torch.manual_seed(0)
    lt, lr = torch.randn(5).log_softmax(-1), torch.randn(5).log_softmax(-1)
    z = torch.zeros(5, requires_grad=True)
    opt = torch.optim.LBFGS([z], max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -gopd_return(z, lt, lr, lam)
        loss.backward()
        return loss

    opt.step(closure)
    target = uo.pool([uo.Categorical.from_logits(lt), uo.Categorical.from_logits(lr)], [lam, 1.0 - lam])
    assert torch.allclose(z.detach().softmax(-1), target.log_probs().exp(), atol=1e-4)


@pytest.mark.parametrize("lam", [1.5, 3.0])
def test_both_estimators_descend_the_gopd_return(lam):
    torch.manual_seed(1)
    zs = torch.randn(5, requires_grad=True)
    lt, lr = torch.randn(5).log_softmax(-1), torch.randn(5).log_softmax(-1)
    ascent = torch.autograd.grad(gopd_return(zs, lt, lr, lam), zs)[0]
    rollout = uo.Rollout(actions=torch.zeros(1, 1).long(), loss_mask=torch.ones(1, 1).long(), step_ids=torch.zeros(1, 1).long(), student_view=None)
    dist = lambda z: uo.Categorical.from_logits(z.view(1, 1, 5))  # noqa: E731
    obj = Objective(uo.divergence("reverse_kl"), estimator="analytic", lam=lam)
    loss, _ = obj(dist(zs), dist(lt), rollout, dist(lr))
    assert torch.allclose(torch.autograd.grad(loss, zs)[0], -ascent, atol=1e-5)
    # sampled-token estimator: E_a[−A(a) ∇log π(a)] with G-OPD's advantage, exact over the vocabulary
    actions = torch.arange(5)
    s = uo.Categorical.from_logits(zs.expand(5, 5))
    ls = s.log_prob(actions)
    adv = uo.opd_advantage(ls, lt[actions], lr[actions], lam)
    weights = zs.detach().softmax(-1)
    expected = torch.autograd.grad((weights * uo.policy_gradient_loss(ls, adv)).sum(), zs)[0]
    assert torch.allclose(expected, -ascent, atol=1e-5)
