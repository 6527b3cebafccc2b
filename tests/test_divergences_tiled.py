"""The vocabulary-tiled path of full-vocabulary divergences (`unified_opd.tiled`): every score is
the derivative of its summand; lazy = dense, values and gradients, for every divergence, with
weighted and masked losses, a lazy or dense teacher, temperatures and bias; tiles stay tile-sized;
what the tiled path does not cover falls back to the chunked one and is still right."""

from __future__ import annotations

import pytest
import torch

import unified_opd as uo
from unified_opd import divergences as D
from unified_opd import tiled

CASES = [
    ("reverse_kl", {}),
    ("forward_kl", {}),
    ("jsd", {"beta": 0.5}),
    ("jsd", {"beta": 0.1}),
    ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 1.0}),
    ("tv", {}),
    ("skew_kl", {"alpha": 0.1}),
    ("skew_kl", {"alpha": 0.0}),
    ("skew_reverse_kl", {"alpha": 0.1}),
    ("skew_reverse_kl", {"alpha": 0.0}),
]
IDS = [f"{n}-{o}" for n, o in CASES]


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    # 17 vocabulary entries in tiles of 5 and 10-12 positions in tiles of 3: ragged last tiles
    monkeypatch.setattr(tiled, "ROW_TILE", 3)
    monkeypatch.setattr(tiled, "VOCAB_TILE", 5)


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
def test_score_is_the_derivative_of_the_summand(name, options):
    torch.manual_seed(0)
    ls = (torch.randn(6, 11, dtype=torch.float64) * 2).log_softmax(-1).requires_grad_()
    lt = (torch.randn(6, 11, dtype=torch.float64) * 2).log_softmax(-1)
    formula = uo.divergence(name, **options).tiled()
    (auto,) = torch.autograd.grad(formula.terms(ls, lt).sum(), ls)
    torch.testing.assert_close(formula.score(ls.detach(), lt), auto, rtol=1e-10, atol=1e-12)


def _dense_and_lazy(name, options, teacher_kind, with_bias, temperature, seed=1):
    torch.manual_seed(seed)
    h = torch.randn(3, 4, 8, requires_grad=True)
    w = (torch.randn(17, 8) * 0.7).requires_grad_()
    b = torch.randn(17, requires_grad=True) if with_bias else None
    ht, wt = torch.randn(3, 4, 8), torch.randn(17, 8) * 0.7
    t_logits = ht @ wt.t()
    teacher = uo.Categorical.from_hidden(ht, wt) if teacher_kind == "lazy" else uo.Categorical.from_logits(t_logits)
    d = uo.divergence(name, temperature=temperature, **options)
    lazy = d(uo.Categorical.from_hidden(h, w, b), teacher)
    dense = d(uo.Categorical.from_logits(h @ w.t() + (0 if b is None else b)), uo.Categorical.from_logits(t_logits))
    return lazy, dense, [x for x in (h, w, b) if x is not None]


@pytest.mark.parametrize("name,options", CASES, ids=IDS)
@pytest.mark.parametrize("teacher_kind", ["lazy", "dense"])
def test_tiled_equals_dense_with_weighted_masked_loss(name, options, teacher_kind):
    for with_bias, temperature in ((False, 1.0), (True, 1.0), (True, 2.0)):
        lazy, dense, leaves = _dense_and_lazy(name, options, teacher_kind, with_bias, temperature)
        torch.testing.assert_close(lazy, dense, rtol=1e-5, atol=1e-5)
        # a per-position weight and a mask: each row's upstream gradient differs
        weight = torch.rand(3, 4) * 3
        mask = torch.rand(3, 4) > 0.3
        g_lazy = torch.autograd.grad((lazy * weight)[mask].sum(), leaves)
        g_dense = torch.autograd.grad((dense * weight)[mask].sum(), leaves)
        for a, c in zip(g_lazy, g_dense):
            torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["reverse_kl", "jsd"])
def test_selected_positions_and_detached_values(name):
    # the objective selects the loss-masked positions first; evaluation runs under no_grad
    torch.manual_seed(3)
    h, w = torch.randn(2, 6, 8, requires_grad=True), torch.randn(17, 8, requires_grad=True)
    ht, wt = torch.randn(2, 6, 8), torch.randn(17, 8)
    mask = torch.rand(2, 6) > 0.4
    d = uo.divergence(name)
    lazy = d(uo.Categorical.from_hidden(h, w).select(mask), uo.Categorical.from_hidden(ht, wt).select(mask))
    dense = d(uo.Categorical.from_logits((h @ w.t())[mask]), uo.Categorical.from_logits((ht @ wt.t())[mask]))
    torch.testing.assert_close(lazy, dense, rtol=1e-5, atol=1e-5)
    for a, c in zip(torch.autograd.grad(lazy.sum(), [h, w]), torch.autograd.grad(dense.sum(), [h, w])):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        lazy = d(uo.Categorical.from_hidden(h, w), uo.Categorical.from_hidden(ht, wt))
        dense = d(uo.Categorical.from_logits(h @ w.t()), uo.Categorical.from_logits(ht @ wt.t()))
    torch.testing.assert_close(lazy, dense, rtol=1e-5, atol=1e-5)
    none = torch.zeros(2, 6, dtype=torch.bool)
    empty = d(uo.Categorical.from_hidden(h, w).select(none), uo.Categorical.from_hidden(ht, wt).select(none))
    assert empty.shape == (0,)


def test_tiles_stay_tile_sized_and_kl_takes_one_pass(monkeypatch):
    shapes = []
    tile = tiled._Side.tile

    def spy(self, r0, r1, v0, v1):
        z = tile(self, r0, r1, v0, v1)
        shapes.append(tuple(z.shape))
        return z

    monkeypatch.setattr(tiled._Side, "tile", spy)
    h, w = torch.randn(10, 8, requires_grad=True), torch.randn(17, 8, requires_grad=True)
    s, t = uo.Categorical.from_hidden(h, w), uo.Categorical.from_hidden(torch.randn(10, 8), torch.randn(17, 8))
    n_tiles = 4 * 4  # ceil(10 / 3) x ceil(17 / 5)
    uo.divergence("reverse_kl")(s, t).sum().backward()
    assert max(r for r, _ in shapes) == 3 and max(v for _, v in shapes) == 5
    assert len(shapes) == 2 * n_tiles * 2  # student and teacher: one statistics pass, one backward pass
    shapes.clear()
    uo.divergence("jsd")(s, t).sum().backward()
    assert len(shapes) == 2 * n_tiles * 3  # statistics, values, backward


def test_what_the_tiled_path_does_not_cover_falls_back_and_is_right(monkeypatch):
    calls = []
    fallback = D.aligned_log_probs
    monkeypatch.setattr(D, "aligned_log_probs", lambda *a: calls.append(1) or fallback(*a))
    torch.manual_seed(4)
    h, w = torch.randn(5, 8, requires_grad=True), torch.randn(17, 8, requires_grad=True)
    ht = torch.randn(5, 8, requires_grad=True)
    wt = torch.randn(17, 8)
    d = uo.divergence("reverse_kl")
    # a teacher that needs a gradient (the generic path differentiates both sides)
    lazy = d(uo.Categorical.from_hidden(h, w), uo.Categorical.from_hidden(ht, wt))
    dense = d(uo.Categorical.from_logits(h @ w.t()), uo.Categorical.from_logits(ht @ wt.t()))
    for a, c in zip(torch.autograd.grad(lazy.sum(), [h, w, ht]), torch.autograd.grad(dense.sum(), [h, w, ht])):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
    # a pooled teacher (ExOPD target), and a dense student
    z2 = torch.randn(5, 17)
    pooled = uo.pool([uo.Categorical.from_hidden(ht.detach(), wt), uo.Categorical.from_logits(z2)], [1.5, -0.5])
    ref = uo.pool([uo.Categorical.from_logits(ht.detach() @ wt.t()), uo.Categorical.from_logits(z2)], [1.5, -0.5])
    lazy, dense = d(uo.Categorical.from_hidden(h, w), pooled), d(uo.Categorical.from_logits(h @ w.t()), ref)
    torch.testing.assert_close(lazy, dense, rtol=1e-5, atol=1e-5)
    assert len(calls) == 4  # the two lazy cases above and their two dense references
    calls.clear()
    d(uo.Categorical.from_hidden(h, w), uo.Categorical.from_logits(z2))
    assert not calls
