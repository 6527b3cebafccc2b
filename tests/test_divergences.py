"""Every divergence against an independent reference; lazy = dense (values and gradients);
top-k + tail against a brute-force bucket computation; pooling; Gaussian KL."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical as TorchCat
from torch.distributions import Normal, kl_divergence

import unified_opd as uo
from unified_opd import distributions as dist_mod
from unified_opd import tiled

torch.manual_seed(0)


def _pair(*shape, v=13):
    return torch.randn(*shape, v, dtype=torch.float64) * 2, torch.randn(*shape, v, dtype=torch.float64) * 2


def _brute(fn, ps, pt):
    """Loop over positions and vocabulary entries: the textbook sums, no vectorisation."""
    out = torch.zeros(ps.shape[:-1], dtype=torch.float64)
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in ps.shape[:-1]]).reshape(-1, ps.dim() - 1):
        i = tuple(idx.tolist())
        out[i] = fn(ps[i], pt[i])
    return out


def kl(p, q):
    return sum(float(p[v] * math.log(p[v] / q[v])) for v in range(len(p)) if p[v] > 0)


def test_reverse_and_forward_kl_match_torch_distributions():
    zs, zt = _pair(4, 3)
    s, t = uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt)
    ref_rev = kl_divergence(TorchCat(logits=zs), TorchCat(logits=zt))
    ref_fwd = kl_divergence(TorchCat(logits=zt), TorchCat(logits=zs))
    torch.testing.assert_close(uo.divergence("reverse_kl")(s, t).double(), ref_rev, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(uo.divergence("forward_kl")(s, t).double(), ref_fwd, rtol=1e-5, atol=1e-6)
    assert uo.divergence("reverse_kl")(s, t).dtype == torch.float32


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd_brute_force(beta):
    zs, zt = _pair(3, 2)
    ps, pt = zs.softmax(-1), zt.softmax(-1)

    def ref(p_s, p_t):
        if beta == 0.0:
            return kl(p_t, p_s)
        if beta == 1.0:
            return kl(p_s, p_t)
        m = beta * p_t + (1 - beta) * p_s
        return beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)

    got = uo.divergence("jsd", beta=beta)(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt))
    torch.testing.assert_close(got.double(), _brute(ref, ps, pt), rtol=1e-5, atol=1e-6)


def test_tv_and_skew_brute_force():
    zs, zt = _pair(5)
    ps, pt = zs.softmax(-1), zt.softmax(-1)
    s, t = uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt)
    tv = _brute(lambda a, b: 0.5 * float((a - b).abs().sum()), ps, pt)
    torch.testing.assert_close(uo.divergence("tv")(s, t).double(), tv, rtol=1e-5, atol=1e-6)
    a = 0.3
    skew = _brute(lambda p_s, p_t: kl(p_t, a * p_t + (1 - a) * p_s), ps, pt)
    torch.testing.assert_close(uo.divergence("skew_kl", alpha=a)(s, t).double(), skew, rtol=1e-5, atol=1e-6)
    skew_r = _brute(lambda p_s, p_t: kl(p_s, a * p_s + (1 - a) * p_t), ps, pt)
    torch.testing.assert_close(uo.divergence("skew_reverse_kl", alpha=a)(s, t).double(), skew_r, rtol=1e-5, atol=1e-6)


def test_divergences_are_zero_on_identical_and_positive_otherwise():
    zs, zt = _pair(6)
    for name in ("reverse_kl", "forward_kl", "jsd", "tv", "skew_kl"):
        d = uo.divergence(name)
        same = d(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zs))
        assert same.abs().max() < 1e-5, name
        assert (d(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt)) > 0).all(), name


def test_temperature_divides_logits():
    zs, zt = _pair(4)
    got = uo.divergence("reverse_kl", temperature=2.0)(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt))
    ref = kl_divergence(TorchCat(logits=zs / 2), TorchCat(logits=zt / 2))
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["reverse_kl", "forward_kl", "jsd", "tv", "skew_kl"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_lazy_equals_dense_values_and_gradients(name, with_bias, monkeypatch):
    # force many chunks and tiles so the chunked and the tiled paths are exercised
    monkeypatch.setattr(dist_mod, "CHUNK_ELEMENTS", 3 * 17)
    monkeypatch.setattr(tiled, "ROW_TILE", 3)
    monkeypatch.setattr(tiled, "VOCAB_TILE", 5)
    torch.manual_seed(1)
    h = torch.randn(2, 5, 8, requires_grad=True)
    w = torch.randn(17, 8, requires_grad=True)
    b = torch.randn(17, requires_grad=True) if with_bias else None
    ht = torch.randn(2, 5, 8)
    wt = torch.randn(17, 8)
    lazy_s = uo.Categorical.from_hidden(h, w, b)
    lazy_t = uo.Categorical.from_hidden(ht, wt)
    d = uo.divergence(name)
    v_lazy = d(lazy_s, lazy_t)
    g_lazy = torch.autograd.grad(v_lazy.sum(), [h, w] + ([b] if with_bias else []))
    logits = h @ w.t() + (b if with_bias else 0)
    v_dense = d(uo.Categorical.from_logits(logits), uo.Categorical.from_logits(ht @ wt.t()))
    g_dense = torch.autograd.grad(v_dense.sum(), [h, w] + ([b] if with_bias else []))
    # float32 rounding with logits |z| ~ 10 here: the tiled KL is E[z_S - z_T] - log Z_S + log Z_T,
    # dense sums p_S (log p_S - log p_T); both are ~2e-6 from float64 in value, the tiled gradients ~7e-6
    torch.testing.assert_close(v_lazy, v_dense, rtol=1e-5, atol=1e-5)
    for a, c in zip(g_lazy, g_dense):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=2e-5)


def test_lazy_never_materialises_all_logits(monkeypatch):
    monkeypatch.setattr(dist_mod, "CHUNK_ELEMENTS", 4 * 50)
    seen = []
    h = torch.randn(40, 8, requires_grad=True)
    w = torch.randn(50, 8, requires_grad=True)
    s = uo.Categorical.from_hidden(h, w)
    fn = s._logits_fn

    def spy(*a):
        z = fn(*a)
        seen.append(z.shape[0])
        return z

    s._logits_fn = spy
    v = uo.divergence("reverse_kl")(s, uo.Categorical.from_logits(torch.randn(40, 50)))
    v.sum().backward()
    assert max(seen) == 4 and len(seen) == 20  # 10 chunks forward + 10 recomputed in backward


def test_log_prob_and_entropy_lazy_equal_dense(monkeypatch):
    monkeypatch.setattr(dist_mod, "CHUNK_ELEMENTS", 2 * 11)
    h, w = torch.randn(3, 4, 6), torch.randn(11, 6)
    a = torch.randint(0, 11, (3, 4))
    lazy, dense = uo.Categorical.from_hidden(h, w), uo.Categorical.from_logits(h @ w.t())
    ref = TorchCat(logits=h @ w.t())
    torch.testing.assert_close(lazy.log_prob(a), ref.log_prob(a), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense.entropy(), ref.entropy(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lazy.entropy(), ref.entropy(), rtol=1e-5, atol=1e-5)


def test_topk_with_tail_bucket_brute_force():
    torch.manual_seed(2)
    v, k = 12, 4
    zs, zt = torch.randn(3, v, dtype=torch.float64), torch.randn(3, v, dtype=torch.float64)
    lt = zt.log_softmax(-1)
    top_lp, top_idx = lt.topk(k, -1)
    sparse_t = uo.Categorical.from_topk(top_lp, top_idx, v)
    got = uo.divergence("reverse_kl")(uo.Categorical.from_logits(zs), sparse_t).double()
    ps = zs.softmax(-1)
    for i in range(3):
        idx = top_idx[i].tolist()
        bs = [float(ps[i, j]) for j in idx] + [1 - sum(float(ps[i, j]) for j in idx)]
        bt = [math.exp(float(x)) for x in top_lp[i]] + [1 - sum(math.exp(float(x)) for x in top_lp[i])]
        assert abs(got[i].item() - kl(torch.tensor(bs), torch.tensor(bt))) < 1e-5


def test_topk_leaving_one_token_in_the_tail_equals_full_divergence():
    # with K = V - 1 the tail bucket is exactly the one remaining token
    zs, zt = _pair(3, v=7)
    lt = zt.log_softmax(-1)
    top_lp, top_idx = lt.topk(6, -1)
    full = uo.divergence("forward_kl")(uo.Categorical.from_logits(zs), uo.Categorical.from_logits(zt))
    sparse = uo.divergence("forward_kl")(uo.Categorical.from_logits(zs), uo.Categorical.from_topk(top_lp, top_idx, 7))
    torch.testing.assert_close(sparse, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["reverse_kl", "forward_kl", "jsd", "tv"])
def test_topk_covering_the_vocabulary_has_the_full_divergence_and_finite_gradients(name):
    # K = V leaves an empty tail; it used to give NaN gradients (log of a zero bucket)
    zs, zt = _pair(3, v=7)
    top_lp, top_idx = zt.log_softmax(-1).topk(7, -1)
    student = zs.clone().requires_grad_(True)
    sparse = uo.divergence(name)(uo.Categorical.from_logits(student), uo.Categorical.from_topk(top_lp, top_idx, 7))
    sparse.sum().backward()
    reference = zs.clone().requires_grad_(True)
    full = uo.divergence(name)(uo.Categorical.from_logits(reference), uo.Categorical.from_logits(zt))
    full.sum().backward()
    torch.testing.assert_close(sparse, full, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(student.grad).all()
    torch.testing.assert_close(student.grad, reference.grad, rtol=1e-4, atol=1e-6)


def test_topk_log_prob_spreads_the_tail_uniformly():
    lp = torch.log(torch.tensor([[0.5, 0.3]]))
    idx = torch.tensor([[2, 0]])
    d = uo.Categorical.from_topk(lp, idx, 6)
    got = d.log_prob(torch.tensor([2])), d.log_prob(torch.tensor([0])), d.log_prob(torch.tensor([4]))
    assert abs(got[0].item() - math.log(0.5)) < 1e-6
    assert abs(got[1].item() - math.log(0.3)) < 1e-6
    assert abs(got[2].item() - math.log(0.2 / 4)) < 1e-6


def test_pool_categorical_is_normalised_geometric_mixture():
    z1, z2 = _pair(2, 3, v=5)
    lam = 1.5
    pooled = uo.pool([uo.Categorical.from_logits(z1), uo.Categorical.from_logits(z2)], [lam, 1 - lam])
    unnorm = lam * z1.log_softmax(-1) + (1 - lam) * z2.log_softmax(-1)
    torch.testing.assert_close(pooled.log_probs().double(), unnorm.log_softmax(-1), rtol=1e-5, atol=1e-6)
    # a lazy member keeps the pool lazy and equal
    h, w = torch.randn(2, 3, 4), torch.randn(5, 4)
    lazy = uo.pool([uo.Categorical.from_hidden(h, w), uo.Categorical.from_logits(z2.float())], [0.3, 0.7])
    dense = uo.pool([uo.Categorical.from_logits(h @ w.t()), uo.Categorical.from_logits(z2.float())], [0.3, 0.7])
    assert lazy.is_lazy
    torch.testing.assert_close(lazy.log_probs(), dense.log_probs(), rtol=1e-5, atol=1e-5)


def test_pool_with_per_position_weights():
    z1, z2 = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    w = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    pooled = uo.pool([uo.Categorical.from_logits(z1), uo.Categorical.from_logits(z2)], [w, 1 - w])
    ref = (w.unsqueeze(-1) * z1.log_softmax(-1) + (1 - w).unsqueeze(-1) * z2.log_softmax(-1)).log_softmax(-1)
    torch.testing.assert_close(pooled.log_probs(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled.log_probs()[0, 0], z2[0, 0].log_softmax(-1), rtol=1e-5, atol=1e-5)


def test_gaussian_kl_matches_torch_and_mean_matching():
    m1, m2 = torch.randn(4, 3, 2), torch.randn(4, 3, 2)
    s1, s2 = torch.rand(4, 3, 2) + 0.5, torch.rand(4, 3, 2) + 0.5
    got = uo.divergence("kl")(uo.Gaussian(m1, s1), uo.Gaussian(m2, s2))
    ref = kl_divergence(Normal(m1, s1), Normal(m2, s2)).sum((1, 2))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    fwd = uo.divergence("forward_kl")(uo.Gaussian(m1, s1), uo.Gaussian(m2, s2))
    torch.testing.assert_close(fwd, kl_divergence(Normal(m2, s2), Normal(m1, s1)).sum((1, 2)), rtol=1e-5, atol=1e-5)
    sigma = 0.7
    mm = uo.divergence("kl")(uo.Gaussian(m1, sigma), uo.Gaussian(m2, sigma))
    torch.testing.assert_close(mm, ((m1 - m2) ** 2).sum((1, 2)) / (2 * sigma**2), rtol=1e-5, atol=1e-5)


def test_pool_gaussian_equal_variance_is_weighted_mean():
    m1, m2 = torch.randn(3, 4), torch.randn(3, 4)
    p = uo.pool([uo.Gaussian(m1, 0.5), uo.Gaussian(m2, 0.5)], [1.5, -0.5])
    torch.testing.assert_close(p.mean, 1.5 * m1 - 0.5 * m2)
    torch.testing.assert_close(p.std, torch.full_like(m1, 0.5))
    q = uo.pool([uo.Gaussian(m1, 1.0), uo.Gaussian(m2, 2.0)], [1.0, 1.0])
    # product of N(m1,1) and N(m2,4): precision 1 + 1/4
    torch.testing.assert_close(q.std, torch.full_like(m1, (1.25) ** -0.5))
    torch.testing.assert_close(q.mean, (m1 + m2 / 4) / 1.25)


def test_errors_name_the_problem():
    with pytest.raises(uo.ConfigError, match="did you mean 'reverse_kl'"):
        uo.divergence("reverse_k")
    with pytest.raises(uo.ConfigError, match="unexpected option"):
        uo.divergence("tv", beta=0.3)
    with pytest.raises(TypeError, match="no closed form"):
        uo.divergence("jsd")(uo.Gaussian(torch.zeros(2, 2), 1.0), uo.Gaussian(torch.zeros(2, 2), 1.0))
    with pytest.raises(ValueError, match="vocab"):
        uo.divergence("tv")(uo.Categorical.from_logits(torch.zeros(2, 3)), uo.Categorical.from_logits(torch.zeros(2, 4)))


@pytest.mark.parametrize("trained", ["hidden", "head", "both"])
def test_lazy_gradients_reach_whichever_side_is_trained(trained, monkeypatch):
    # the head's gradient is added into one buffer across chunks; the hidden states' per chunk
    monkeypatch.setattr(dist_mod, "CHUNK_ELEMENTS", 3 * 17)
    monkeypatch.setattr(tiled, "ROW_TILE", 7)
    monkeypatch.setattr(tiled, "VOCAB_TILE", 4)
    torch.manual_seed(2)
    h = torch.randn(4, 5, 8, requires_grad=trained != "head")
    w = torch.randn(17, 8, requires_grad=trained != "hidden")
    b = torch.randn(17, requires_grad=trained != "hidden")
    t = uo.Categorical.from_hidden(torch.randn(4, 5, 8), torch.randn(17, 8))
    leaves = [x for x in (h, w, b) if x.requires_grad]
    for temperature in (1.0, 2.0):
        d = uo.divergence("jsd", temperature=temperature)
        v_lazy = d(uo.Categorical.from_hidden(h, w, b), t)
        v_dense = d(uo.Categorical.from_logits(h @ w.t() + b), uo.Categorical.from_logits(t.log_probs()))
        for a, c in zip(torch.autograd.grad(v_lazy.sum(), leaves), torch.autograd.grad(v_dense.sum(), leaves)):
            torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)
