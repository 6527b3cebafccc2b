"""SeqKD (`objective.estimator: supervised`): the likelihood of the teacher's sampled tokens."""

from __future__ import annotations

import math

import pytest
import torch

import unified_opd as uo
from unified_opd.errors import ConfigError
from unified_opd.estimators import sequence_kd_loss
from unified_opd.objective import Objective


def _rollout(actions, mask):
    return uo.Rollout(actions=actions, loss_mask=mask, step_ids=torch.zeros_like(mask), student_view=None)


def test_sequence_kd_loss_is_the_negative_log_likelihood_by_hand():
    # student probabilities 0.5 and 0.25 for the two sampled tokens: −log 0.5, −log 0.25
    logp = torch.log(torch.tensor([0.5, 0.25]))
    assert torch.allclose(sequence_kd_loss(logp), torch.tensor([math.log(2.0), math.log(4.0)]))


def test_supervised_objective_is_the_masked_mean_nll_and_ignores_the_teacher_in_its_gradient():
    zs = torch.tensor([[[0.0, 0.0, math.log(2.0)], [math.log(3.0), 0.0, 0.0]]], requires_grad=True)
    a = torch.tensor([[2, 0]])
    mask = torch.tensor([[1, 1]])
    obj = Objective(uo.divergence("reverse_kl"), estimator="supervised")
    grads = []
    for zt in (torch.zeros(1, 2, 3), torch.randn(1, 2, 3)):
        loss, m = obj(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), _rollout(a, mask))
        # p(a_0) = 2/4, p(a_1) = 3/5: mean of −log 0.5 and −log 0.6
        assert abs(float(loss) - (math.log(2.0) + math.log(5.0 / 3.0)) / 2) < 1e-6
        assert m["tokens"] == 2.0
        grads.append(torch.autograd.grad(loss, zs)[0])
    assert torch.allclose(grads[0], grads[1])
    assert obj.action_log_probs(uo.Categorical.from_logits(zs), _rollout(a, mask)) is None


def test_supervised_estimator_is_a_known_option():
    with pytest.raises(uo.ConfigError, match="objective.estimator"):
        Objective(uo.divergence("reverse_kl"), estimator="seqkd")


@pytest.mark.parametrize("teacher", ["teacher.kind=model", "teacher.cache.rollouts=student"])
def test_supervised_estimator_on_the_students_own_samples_is_refused_at_start(teacher):
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for
    from unified_opd.domains.text.config import check

    cfg = load_config("configs/text/seqkd_arith.yaml", [teacher], schema_for)
    with pytest.raises(ConfigError, match="objective.estimator: 'supervised'"):
        check(cfg)
