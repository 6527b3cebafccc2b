"""Full-vocabulary divergences of a lazy student, tiled over positions and the vocabulary.

A divergence between two full-vocabulary Categoricals is a sum over the vocabulary of an
elementwise summand `φ(log p_S(v), log p_T(v))`. When the student is lazy (hidden states plus
an `lm_head`) and the teacher lazy or dense, `tiled_divergence` evaluates it on
`[ROW_TILE, VOCAB_TILE]` tiles of logits, so no `N x V` tensor is held and every tile of the
head is read once per pass over all positions:

* statistics pass -- per tile, each side's log-sum-exp (and, for the KL divergences, the
  expectation of the logit gap under the tile's softmax); the tiles combine into the exact
  normalisers `log Z` (and, for KL, the value itself: one pass, see `kl_from_moments`);
* value pass (other divergences) -- per tile, the summand and its score `∂φ/∂log p_S`, summed;
* backward -- per tile, the closed-form gradient of the logits (`logit_gradient`), added into
  the hidden states' gradient (`dz @ W`) and the head's (`dz.T @ h`) and bias's.

The autograd graph holds only the inputs and three per-position statistics; the backward pass
recomputes each tile's logits (two matmuls) instead of differentiating through them.
Divergences whose teacher needs a gradient, and students or teachers that are pools or sparse,
take the generic position-chunked path (`aligned_log_probs`) instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

# Tile shape. Rows are positions; a [512, 4096] float32 tile is 8 MiB, small enough that the
# allocator reuses freed tiles instead of page-faulting fresh ones, and large enough for the
# matmuls that produce it to run at full speed.
ROW_TILE = 512
VOCAB_TILE = 4096


@dataclass(frozen=True)
class TiledFormula:
    """How a divergence is evaluated on tiles (see `Divergence.tiled`).

    `terms(ls, lt) -> [n]` sums the summand over a tile's vocabulary entries (summing over
    tiles gives the divergence); `score(ls, lt) -> [n, v]` is its derivative with respect to
    the student's log-probs, elementwise. `moments` names a KL divergence ('reverse' or
    'forward') whose value and score sum follow from one statistics pass (`kl_from_moments`).
    """

    terms: Callable[[Tensor, Tensor], Tensor]
    score: Callable[[Tensor, Tensor], Tensor]
    moments: Optional[str] = None


def logit_gradient(score: Tensor, p_s: Tensor, score_sum: Tensor) -> Tensor:
    """∂/∂z_S(v) of Σ_u φ(log p_S(u), ·) = ψ(v) − p_S(v)·Σ_u ψ(u), with ψ = ∂φ/∂log p_S.

    (log p_S(u) = z_S(u) − log Z_S, so ∂log p_S(u)/∂z_S(v) = δ_uv − p_S(v).) `score_sum` is
    `[n]`, the full-vocabulary Σ_u ψ(u) of each position. Overwrites and returns `score`."""
    return score.sub_(p_s.mul_(score_sum.unsqueeze(-1)))


def kl_from_moments(kind: str, lse_s: Tensor, lse_t: Tensor, gap_mean: Tensor) -> Tuple[Tensor, Tensor]:
    """One-pass KL: its value and the sum of its score, from normalisers and one expectation.

    reverse: KL(S‖T) = E_S[z_S − z_T] − log Z_S + log Z_T, with `gap_mean` = E_S[z_S − z_T];
    its score ψ = p_S·(log p_S − log p_T + 1) sums to KL + 1.
    forward: KL(T‖S) = E_T[z_T − z_S] − log Z_T + log Z_S, with `gap_mean` = E_T[z_T − z_S];
    its score ψ = −p_T sums to −1."""
    if kind == "reverse":
        kl = gap_mean - lse_s + lse_t
        return kl, kl + 1.0
    if kind == "forward":
        kl = gap_mean - lse_t + lse_s
        return kl, torch.full_like(kl, -1.0)
    raise ValueError(f"kl_from_moments: kind must be 'reverse' or 'forward', got {kind!r}")


def combine_tiles(lse_tiles: Tensor, mean_tiles: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """Per-tile statistics `[tiles, n]` -> full-vocabulary ones `[n]`.

    log Z = logsumexp over tiles of each tile's log-sum-exp; an expectation under the full
    softmax is the tiles' expectations (each under its own tile's softmax) weighted by
    exp(tile log-sum-exp − log Z)."""
    lse = torch.logsumexp(lse_tiles.double(), 0)
    if mean_tiles is None:
        return lse, None
    return lse, ((lse_tiles - lse).exp_() * mean_tiles).sum(0)


class _Side:
    """One distribution's logits as tiles: `(h @ w[v0:v1].T + b[v0:v1]) / T` (lazy) or
    `z[:, v0:v1] / T` (dense). `tensors` are its flattened inputs, in that order."""

    def __init__(self, tensors: Tuple[Tensor, ...], lazy: bool, temperature: float):
        self.tensors, self.lazy, self.temperature = tensors, lazy, temperature

    @classmethod
    def of(cls, d) -> Optional["_Side"]:
        source = d.logit_source()
        return None if source is None else cls(*source)

    def with_tensors(self, tensors: Tuple[Tensor, ...]) -> "_Side":
        return _Side(tensors, self.lazy, self.temperature)

    def tile(self, r0: int, r1: int, v0: int, v1: int) -> Tensor:
        """A fresh float32 `[r1 - r0, v1 - v0]` tile of logits (the caller may overwrite it)."""
        if self.lazy:
            h, w = self.tensors[0][r0:r1], self.tensors[1][v0:v1]
            z = h @ w.t() if len(self.tensors) == 2 else torch.addmm(self.tensors[2][v0:v1], h, w.t())
            if self.temperature != 1.0:
                z = z / self.temperature
            return z.float() if z.dtype != torch.float32 else z
        z = self.tensors[0][r0:r1, v0:v1]
        if self.temperature != 1.0:
            return z.float() / self.temperature if z.dtype != torch.float32 else z / self.temperature
        return z.to(torch.float32, copy=True)


def _tiles(n: int, v: int):
    """(r0, r1, v0, v1, tile index) for every tile, vocabulary-major: each head tile is read once."""
    rt, vt = max(1, ROW_TILE), max(1, VOCAB_TILE)
    for j, v0 in enumerate(range(0, v, vt)):
        for r0 in range(0, n, rt):
            yield r0, min(r0 + rt, n), v0, min(v0 + vt, v), j


def _statistics(s: _Side, t: _Side, n: int, v: int, moments: Optional[str]):
    """Statistics pass: per-tile log-sum-exps of both sides (and, for `moments`, the tile's
    expectation of the logit gap under the tile softmax of S (reverse) or T (forward))."""
    n_tiles, dev = -(-v // max(1, VOCAB_TILE)), s.tensors[0].device
    lse_s, lse_t = torch.empty(n_tiles, n, device=dev), torch.empty(n_tiles, n, device=dev)
    gap = torch.empty(n_tiles, n, device=dev) if moments else None
    for r0, r1, v0, v1, j in _tiles(n, v):
        zs, zt = s.tile(r0, r1, v0, v1), t.tile(r0, r1, v0, v1)
        if moments is None:
            lse_s[j, r0:r1] = torch.logsumexp(zs, -1)
            lse_t[j, r0:r1] = torch.logsumexp(zt, -1)
            continue
        # `a` is the side the expectation is taken under, `b` the other one
        (a, b), (lse_a, lse_b) = ((zs, zt), (lse_s, lse_t)) if moments == "reverse" else ((zt, zs), (lse_t, lse_s))
        lse_b[j, r0:r1] = torch.logsumexp(b, -1)
        diff = b.neg_().add_(a)  # z_a − z_b, in b's storage
        top = a.amax(-1, keepdim=True)
        e = a.sub_(top).exp_()  # exp(z_a − max), in a's storage
        total = e.sum(-1)
        lse_a[j, r0:r1] = top.squeeze(-1) + total.log()
        gap[j, r0:r1] = e.mul_(diff).sum(-1) / total
    return lse_s, lse_t, gap


def _forward(s: _Side, t: _Side, formula: TiledFormula, n: int, v: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Values `[n]`, log Z_S, log Z_T and Σ_v ψ(v) per position (what the backward needs)."""
    lse_s_tiles, lse_t_tiles, gap_tiles = _statistics(s, t, n, v, formula.moments)
    if formula.moments is not None:
        a_tiles, b_tiles = (lse_s_tiles, lse_t_tiles) if formula.moments == "reverse" else (lse_t_tiles, lse_s_tiles)
        lse_a, gap_mean = combine_tiles(a_tiles, gap_tiles)
        lse_b, _ = combine_tiles(b_tiles)
        lse_s, lse_t = (lse_a, lse_b) if formula.moments == "reverse" else (lse_b, lse_a)
        values, score_sum = kl_from_moments(formula.moments, lse_s, lse_t, gap_mean)
        return values.float(), lse_s.float(), lse_t.float(), score_sum.float()
    lse_s, lse_t = combine_tiles(lse_s_tiles)[0].float(), combine_tiles(lse_t_tiles)[0].float()
    values, score_sum = torch.zeros(n, device=lse_s.device), torch.zeros(n, device=lse_s.device)
    for r0, r1, v0, v1, _ in _tiles(n, v):
        ls = s.tile(r0, r1, v0, v1).sub_(lse_s[r0:r1].unsqueeze(-1))
        lt = t.tile(r0, r1, v0, v1).sub_(lse_t[r0:r1].unsqueeze(-1))
        values[r0:r1] += formula.terms(ls, lt)
        score_sum[r0:r1] += formula.score(ls, lt).sum(-1)
    return values, lse_s, lse_t, score_sum


class _TiledDivergence(torch.autograd.Function):
    """Values in forward (`_forward`); closed-form gradients of the student's hidden states,
    head and bias in backward, one recomputed tile at a time."""

    @staticmethod
    def forward(ctx, s_side, t_side, formula, n_s, *tensors):
        s, t = s_side.with_tensors(tensors[:n_s]), t_side.with_tensors(tensors[n_s:])
        n, v = tensors[0].shape[0], tensors[1].shape[0]
        values, lse_s, lse_t, score_sum = _forward(s, t, formula, n, v)
        ctx.sides, ctx.formula, ctx.n_s = (s_side, t_side), formula, n_s
        ctx.save_for_backward(*tensors, lse_s, lse_t, score_sum)
        return values

    @staticmethod
    def backward(ctx, grad_out):
        *tensors, lse_s, lse_t, score_sum = ctx.saved_tensors
        n_s = ctx.n_s
        s, t = ctx.sides[0].with_tensors(tuple(tensors[:n_s])), ctx.sides[1].with_tensors(tuple(tensors[n_s:]))
        needs = ctx.needs_input_grad[4 : 4 + n_s]
        h, w = tensors[0], tensors[1]
        n, v = h.shape[0], w.shape[0]
        grads = [
            torch.zeros(x.shape, dtype=torch.float32, device=x.device) if need else None
            for x, need in zip(tensors[:n_s], needs)
        ]
        g_h, g_w = grads[0], grads[1]
        g_b = grads[2] if n_s == 3 else None
        # the upstream gradient per position, and the temperature's 1/T, scale each row of dz
        row_scale = (grad_out.float() / s.temperature).unsqueeze(-1)
        for r0, r1, v0, v1, _ in _tiles(n, v):
            ls = s.tile(r0, r1, v0, v1).sub_(lse_s[r0:r1].unsqueeze(-1))
            lt = t.tile(r0, r1, v0, v1).sub_(lse_t[r0:r1].unsqueeze(-1))
            dz = logit_gradient(ctx.formula.score(ls, lt), ls.exp(), score_sum[r0:r1]).mul_(row_scale[r0:r1])
            if g_b is not None:
                g_b[v0:v1] += dz.sum(0)
            dz = dz.to(h.dtype)
            if g_h is not None:
                _add_matmul(g_h[r0:r1], dz, w[v0:v1])
            if g_w is not None:
                _add_matmul(g_w[v0:v1], dz.t(), h[r0:r1])
        out = [None if g is None else g.to(x.dtype) for g, x in zip(grads, tensors[:n_s])]
        return (None, None, None, None, *out, *([None] * (len(tensors) - n_s)))


def _add_matmul(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc += a @ b, with `acc` float32 whatever the dtype of `a` and `b`."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    else:
        acc += (a @ b).float()


def tiled_divergence(student, teacher, formula: TiledFormula) -> Optional[Tensor]:
    """`Σ_v φ(log p_S, log p_T)` per position, `[*batch]` float32, for a lazy student and a lazy
    or dense teacher; None when this path does not apply (the caller takes the generic one)."""
    s, t = _Side.of(student), _Side.of(teacher)
    if s is None or t is None or not s.lazy:
        return None
    n, v = s.tensors[0].shape[0], s.tensors[1].shape[0]
    if n == 0 or v == 0:
        return None
    grad = torch.is_grad_enabled()
    if grad and any(x.requires_grad for x in t.tensors):
        return None
    if grad and any(x.requires_grad for x in s.tensors):
        values = _TiledDivergence.apply(s, t, formula, len(s.tensors), *s.tensors, *t.tensors)
    else:
        with torch.no_grad():
            values = _forward(s, t, formula, n, v)[0]
    return values.reshape(student.batch_shape)
