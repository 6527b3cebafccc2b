"""The supervised-training helper against hand computations and a directly run AdamW."""

import math

import pytest
import torch
from torch import nn

from unified_opd.errors import ConfigError
from unified_opd.supervised import SupervisedPlan, fit, lr_multiplier


def linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 1, bias=False)


X = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 2.0]])
Y = torch.tensor([[1.0], [-2.0]])


def squared_error(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def whole_data(generator: torch.Generator):
    return X, Y


def test_one_step_is_adamw_on_the_known_gradient():
    model = linear()
    w0 = model.weight.detach().clone()
    # d/dw mean((xw - y)^2) = 2/n · Xᵀ(Xw - y), written out rather than taken from autograd
    grad = (2 / len(X)) * ((X @ w0.T - Y).T @ X)
    reference = w0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([reference], lr=0.1, weight_decay=0.01, betas=(0.9, 0.98))
    reference.grad = grad.clone()
    opt.step()
    plan = SupervisedPlan(steps=1, lr=0.1, seed=0, clip_norm=None)
    result = fit(model, squared_error, whole_data, plan)
    assert result.steps == 1 and result.stopped is None
    assert result.losses == [pytest.approx(float(((X @ w0.T - Y) ** 2).mean()))]
    assert torch.allclose(model.weight, reference.detach(), atol=1e-7)
    # AdamW's first step moves every weight by lr · sign(g) (bias-corrected m/√v = ±1), after decay
    assert torch.allclose(model.weight, w0 * (1 - 0.1 * 0.01) - 0.1 * grad.sign(), atol=1e-6)


def spy_on_adamw_steps(monkeypatch) -> list:
    """Each AdamW step's (learning rate, total gradient norm), as the optimiser sees them."""
    seen = []
    original = torch.optim.AdamW.step

    def step(self, *a, **k):
        params = [p for g in self.param_groups for p in g["params"]]
        seen.append((self.param_groups[0]["lr"], float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])))))
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return seen


def test_clipping_bounds_the_gradient_norm_before_the_step(monkeypatch):
    seen = spy_on_adamw_steps(monkeypatch)
    fit(linear(), lambda m, b: 100 * squared_error(m, b), whole_data, SupervisedPlan(steps=2, lr=0.1, seed=0, clip_norm=0.5))
    assert [norm for _, norm in seen] == [pytest.approx(0.5), pytest.approx(0.5)]


def test_warmup_then_cosine_and_constant_schedules():
    f = lr_multiplier(SupervisedPlan(steps=100, lr=1.0, seed=0))  # warm-up 100 // 20 = 5 steps
    assert f(0) == pytest.approx(0.2 * 0.5 * (1 + math.cos(0.0)))
    assert f(4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.04)))
    assert f(50) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12) and f(150) == pytest.approx(0.0, abs=1e-12)
    g = lr_multiplier(SupervisedPlan(steps=100, lr=1.0, seed=0, schedule="constant", warmup_steps=10))
    assert [g(s) for s in (0, 4, 9, 10, 99)] == pytest.approx([0.1, 0.5, 1.0, 1.0, 1.0])
    h = lr_multiplier(SupervisedPlan(steps=100, lr=1.0, seed=0, schedule="constant", warmup_steps=0))
    assert h(0) == 1.0 and h(57) == 1.0
    assert lr_multiplier(SupervisedPlan(steps=0, lr=1.0, seed=0))(0) == 1.0  # no division by zero


def test_the_optimiser_follows_the_schedule(monkeypatch):
    seen = spy_on_adamw_steps(monkeypatch)
    fit(linear(), squared_error, whole_data, SupervisedPlan(steps=40, lr=0.5, seed=0))
    f = lr_multiplier(SupervisedPlan(steps=40, lr=0.5, seed=0))
    assert [lr for lr, _ in seen] == [pytest.approx(0.5 * f(s)) for s in range(40)]


def test_check_stops_early_in_eval_mode_and_training_resumes_in_train_mode():
    model = nn.Sequential(nn.Linear(3, 1, bias=False))
    calls, modes = [], []

    def loss(m, batch):
        modes.append(m.training)
        return squared_error(m, batch)

    def check(m, step):
        calls.append((step, m.training))
        return "good enough" if step == 6 else None

    result = fit(model, loss, whole_data, SupervisedPlan(steps=50, lr=0.01, seed=0, check_every=3), check=check)
    assert calls == [(3, False), (6, False)]
    assert result.steps == 6 and len(result.losses) == 6 and result.stopped == "good enough"
    assert all(modes) and not model.training


def test_batches_come_from_the_seeded_generator():
    def draws(seed):
        seen = []

        def draw(generator):
            seen.append(torch.randint(100, (4,), generator=generator))
            return X, Y

        fit(linear(), squared_error, draw, SupervisedPlan(steps=3, lr=0.1, seed=seed))
        return torch.stack(seen)

    expected = torch.Generator().manual_seed(7)
    assert torch.equal(draws(7), torch.stack([torch.randint(100, (4,), generator=expected) for _ in range(3)]))
    assert not torch.equal(draws(7), draws(8))


def test_bad_plans_name_the_field():
    with pytest.raises(ConfigError, match="schedule must be one of"):
        SupervisedPlan(steps=10, lr=0.1, seed=0, schedule="linear")
    with pytest.raises(ConfigError, match="steps must be >= 0"):
        SupervisedPlan(steps=-1, lr=0.1, seed=0)
