"""Recipe formulas against hand computations, and every recipe config's key checking."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

import unified_opd as uo
from unified_opd.callbacks import EffOPDExtrapolation, build_callbacks, effopd_factor
from unified_opd.errors import ConfigError
from unified_opd.estimators import grpo_advantage, outcome_pg_loss, reward_advantage, topk_reverse_kl, tv_adaptive_lam
from unified_opd.objective import Objective
from unified_opd.weights import WEIGHTS, WeightInputs, build_weights, group_normalise

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs", "text").glob("*.yaml"))


# ---------------------------------------------------------------- estimators
def test_topk_reverse_kl_by_hand():
    ps, pt = torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[0.25, 0.25, 0.5]])
    got = topk_reverse_kl(ps.log(), pt.log(), 2)
    want = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25)
    assert got.item() == pytest.approx(want, abs=1e-6)
    full = topk_reverse_kl(ps.log(), pt.log(), 3)
    assert full.item() == pytest.approx(want + 0.2 * math.log(0.2 / 0.5), abs=1e-6)


def test_grpo_advantage_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1])
    a = grpo_advantage(r, g, eps=0.0 + 1e-12)
    # group 0: mean 0.5, std 0.5 -> ±1; group 1: all equal -> 0
    assert torch.allclose(a, torch.tensor([1.0, -1.0, -1.0, 1.0, 0.0, 0.0]), atol=1e-5)
    assert torch.equal(reward_advantage(r), r)


def test_outcome_pg_loss_and_tv_adaptive_lam_by_hand():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss = outcome_pg_loss(logp, torch.tensor([2.0, -1.0]))
    assert torch.allclose(loss, torch.tensor([2.0, -2.0]))
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([-2.0, 1.0]))
    k = tv_adaptive_lam(torch.tensor([0.01, 0.05, 0.2]), lam_max=3.0, tv_target=0.1)
    assert torch.allclose(k, torch.tensor([3.0, 2.0, 1.0]))


# ---------------------------------------------------------------- weights
def _inputs(div, positions, batch_index, outcome=None, group_ids=None, student=None, teacher=None, actions=None, length=None):
    b = int(batch_index.max()) + 1
    p = int(length or (positions.max() + 1))
    rollout = uo.Rollout(
        actions=torch.zeros(b, p, dtype=torch.long),
        loss_mask=torch.ones(b, p, dtype=torch.long),
        step_ids=torch.zeros(b, p, dtype=torch.long),
        student_view=None,
        outcome=outcome,
        group_ids=group_ids,
    )
    n = len(div)
    flat = uo.Categorical.from_logits(torch.zeros(n, 3))
    return WeightInputs(
        rollout=rollout,
        student=student or flat,
        teacher=teacher or flat,
        divergence=div,
        batch_index=batch_index,
        position=positions,
        step_ids=torch.zeros(n, dtype=torch.long),
        actions=actions,
    )


def test_tip_keeps_top_fraction_of_entropy_times_kl():
    s = uo.Categorical.from_logits(torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    t = uo.Categorical.from_logits(torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    inp = _inputs(torch.zeros(4), torch.arange(4), torch.zeros(4, dtype=torch.long), student=s, teacher=t)
    score = s.entropy() * uo.divergence("reverse_kl")(s, t)
    w = WEIGHTS.get("tip")(inp, fraction=0.5)
    top2 = set(score.topk(2).indices.tolist())
    assert set(w.nonzero().squeeze(-1).tolist()) == top2 and w.sum() == 2
    assert 0 not in top2  # identical distributions: zero divergence is never kept first


def test_position_weight_by_hand():
    # trajectory 0 has 2 decisions, trajectory 1 has 4: u = (t+1)/T
    pos = torch.tensor([0, 1, 0, 1, 2, 3])
    bi = torch.tensor([0, 0, 1, 1, 1, 1])
    u = torch.tensor([0.5, 1.0, 0.25, 0.5, 0.75, 1.0])
    w = WEIGHTS.get("position")(_inputs(torch.zeros(6), pos, bi, length=4), power=1.0)
    assert torch.allclose(w, u / u.mean())
    assert w[1] > w[0] and w[5] > w[4] > w[3] > w[2]


def test_clip_divergence_weight_by_hand():
    d = torch.tensor([0.5, 2.0, 4.0])
    w = WEIGHTS.get("clip_divergence")(_inputs(d, torch.arange(3), torch.zeros(3, dtype=torch.long)), max_value=1.0)
    assert torch.allclose(w * d, torch.tensor([0.5, 1.0, 1.0]))


def test_teacher_entropy_and_outcome_gate_by_hand():
    t = uo.Categorical.from_logits(torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]]))
    inp = _inputs(torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.tensor([0, 1]), outcome=torch.tensor([1.0, 0.0]), teacher=t)
    w = WEIGHTS.get("teacher_entropy")(inp, temperature=1.0)
    assert torch.allclose(w, torch.tensor([1.0 / 3.0, 1.0]), atol=1e-5)  # exp(-log 3), exp(0)
    assert torch.equal(WEIGHTS.get("outcome_gate")(inp, keep="correct"), torch.tensor([1.0, 0.0]))
    assert torch.equal(WEIGHTS.get("outcome_gate")(inp, keep="wrong"), torch.tensor([0.0, 1.0]))


def test_group_normalise_by_hand():
    w = group_normalise(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 1]))
    assert torch.allclose(w, torch.tensor([0.5, 1.5, 1.0]))


def test_perplexity_weights_by_hand():
    # two trajectories of one prompt, one position each; the sampled token is id 0
    t = uo.Categorical.from_logits(torch.tensor([[0.5, 0.5], [0.25, 0.75]]).log())
    s = uo.Categorical.from_logits(torch.tensor([[0.8, 0.2], [0.4, 0.6]]).log())
    inp = _inputs(torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.tensor([0, 1]), group_ids=torch.tensor([0, 0]),
                  student=s, teacher=t, actions=torch.tensor([0, 0]), length=1)
    inv_ppl_t = torch.tensor([0.5, 0.25])  # 1 / PPL_T = p_T(y) for one token
    assert torch.allclose(WEIGHTS.get("teacher_perplexity")(inp), inv_ppl_t / inv_ppl_t.mean(), atol=1e-5)
    ppl_s = torch.tensor([1 / 0.8, 1 / 0.4])
    assert torch.allclose(WEIGHTS.get("student_perplexity")(inp), ppl_s / ppl_s.mean(), atol=1e-5)


def test_constant_weight_and_unknown_weight_option_names_the_key():
    inp = _inputs(torch.zeros(3), torch.arange(3), torch.zeros(3, dtype=torch.long))
    assert torch.equal(WEIGHTS.get("constant")(inp, value=0.5), torch.full((3,), 0.5))
    with pytest.raises(ConfigError, match=r"objective.weights\[0\].fraktion"):
        build_weights([{"name": "tip", "fraktion": 0.5}])


# ---------------------------------------------------------------- objective: outcome routing, per-token λ, top-k vOPD
def _rollout(outcome, groups, p=2):
    b = len(outcome)
    return uo.Rollout(
        actions=torch.zeros(b, p, dtype=torch.long),
        loss_mask=torch.ones(b, p, dtype=torch.long),
        step_ids=torch.zeros(b, p, dtype=torch.long),
        student_view=None,
        outcome=torch.tensor(outcome),
        group_ids=torch.tensor(groups),
    )


def test_outcome_term_routes_per_trajectory_by_hand():
    """dGRPO/SRPO-style loss = w·OPD + c·w_o·GRPO, checked against the hand-built sum."""
    torch.manual_seed(0)
    zs = torch.randn(2, 2, 3, requires_grad=True)
    zt = torch.randn(2, 2, 3)
    roll = _rollout([1.0, 0.0], [0, 0])
    obj = Objective(
        divergence=uo.divergence("reverse_kl"),
        weights=tuple(build_weights([{"name": "outcome_gate", "keep": "wrong"}])),
        outcome_advantage="grpo",
        outcome_coef=0.5,
        outcome_weights=tuple(build_weights([{"name": "outcome_gate", "keep": "correct"}], "objective.outcome_weights")),
    )
    loss, m = obj(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), roll)
    ls = torch.log_softmax(zs, -1)[..., 0]
    lt = torch.log_softmax(zt, -1)[..., 0]
    opd = -(lt - ls).detach() * ls  # sampled-token OPD term
    adv = torch.tensor([1.0, -1.0])  # GRPO in a group of {1, 0}
    want = (opd[1].sum() + 0.5 * (-adv[0] * ls[0]).sum()) / 4  # wrong -> OPD only, correct -> GRPO only
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)


def test_tv_adaptive_target_equals_pool_with_per_token_k():
    torch.manual_seed(1)
    zs, zt, zr = torch.randn(1, 3, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    s, t, r = (uo.Categorical.from_logits(z) for z in (zs, zt, zr))
    roll = _rollout([1.0], [0], p=3)
    obj = Objective(divergence=uo.divergence("reverse_kl"), estimator="analytic", lam=3.0, lam_rule="tv_adaptive", lam_tv=0.1)
    loss, m = obj(s, t, roll, reference=r)
    tv = uo.divergence("tv")(t, r).reshape(-1)
    k = (0.1 / tv).clamp(1.0, 3.0)
    lt, lr = torch.log_softmax(zt, -1).reshape(3, 4), torch.log_softmax(zr, -1).reshape(3, 4)
    target = torch.log_softmax(k[:, None] * lt + (1 - k[:, None]) * lr, -1)
    ls = torch.log_softmax(zs, -1).reshape(3, 4)
    want = (ls.exp() * (ls - target)).sum(-1).mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert m["lam_mean"] == pytest.approx(float(k.mean()), abs=1e-5)


def test_vopd_topk_baseline_by_hand():
    torch.manual_seed(2)
    zs, zt = torch.randn(1, 2, 5, requires_grad=True), torch.randn(1, 2, 5)
    roll = _rollout([1.0], [0])
    obj = Objective(divergence=uo.divergence("reverse_kl"), estimator="sampled", baseline="reverse_kl", baseline_top_k=2)
    loss, _ = obj(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt), roll)
    ls_full, lt_full = torch.log_softmax(zs, -1)[0], torch.log_softmax(zt, -1)[0]
    v = -topk_reverse_kl(ls_full.detach(), lt_full, 2)
    adv = lt_full[:, 0] - ls_full[:, 0].detach()
    want = (-(adv - v) * ls_full[:, 0]).mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)


# ---------------------------------------------------------------- EffOPD
def test_effopd_factor_by_hand():
    d = torch.tensor([1.0, 0.0])
    assert effopd_factor(d, None, 2.0) == 0.0
    assert effopd_factor(d, torch.tensor([1.0, 1.0]), 2.0) == pytest.approx(2.0 / math.sqrt(2.0))
    assert effopd_factor(d, torch.tensor([-1.0, 0.0]), 2.0) == 0.0


def test_effopd_extrapolates_along_the_interval_update():
    class P:
        module = torch.nn.Linear(1, 1, bias=False)

    p = P()
    cb = EffOPDExtrapolation(alpha=1.0, interval=2)
    with torch.no_grad():
        p.module.weight.fill_(0.0)
        cb.after_step(p, 2)  # first snapshot: no extrapolation
        p.module.weight.fill_(1.0)
        cb.after_step(p, 4)  # Δ = 1, no previous Δ: α = 0
        assert p.module.weight.item() == 1.0
        p.module.weight.fill_(2.0)
        cb.after_step(p, 6)  # Δ = 1 again, cos = 1: θ = 2 + 1·1
    assert p.module.weight.item() == pytest.approx(3.0)
    with pytest.raises(ConfigError, match=r"trainer.callbacks\[0\].alpah"):
        build_callbacks([{"name": "effopd", "alpah": 1.0}])


# ---------------------------------------------------------------- every recipe config
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_a_wrong_key_in_a_recipe_config_is_a_clear_error(config, tmp_path, capfd):
    # the CLI's entry point in this process: a subprocess per config would re-import torch and
    # transformers 25 times (~2 minutes of the default suite) for the same code path
    from unified_opd.cli import main

    text = config.read_text()
    bad = tmp_path / config.name
    shutil.copytree(config.parent / "base", tmp_path / "base")  # the recipe's `defaults:`
    # misspell a key inside the objective section (nested), as a user editing the recipe would
    bad.write_text(text.replace("objective:\n", "objective:\n  estimater: auto\n", 1))
    code = main(["train", str(bad)])
    stderr = capfd.readouterr().err
    assert code == 2, stderr
    assert "objective.estimater" in stderr and "unknown config key" in stderr


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_recipe_configs_validate(config):
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for

    cfg = load_config(str(config), [], schema_for)
    Objective.from_config(cfg)
    build_callbacks(list(cfg.trainer.callbacks))
