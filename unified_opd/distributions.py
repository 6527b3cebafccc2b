"""What a policy outputs at each position: `Categorical` (tokens) and `Gaussian` (denoising steps).

A `Categorical` is stored in one of three forms and never converts between them behind the
user's back:

* dense  -- `from_logits`: logits `[..., V]`;
* lazy   -- `from_hidden`: hidden states `[..., H]` plus the `lm_head` weight `[V, H]`; the
  vocabulary projection happens a tile at a time, so no `N x V` logits tensor is ever held:
  full-vocabulary divergences against a lazy or dense teacher go through `unified_opd.tiled`
  (position x vocabulary tiles, closed-form gradients); everything else through `rowwise`
  (a chunk of positions at a time, the backward pass recomputing each chunk);
* sparse -- `from_topk`: top-k log-probs and their token ids, plus the implied tail mass, as an
  offline cache or a remote teacher returns them.

`pool` is log-linear pooling, the one operation behind G-OPD/ExOPD targets, multi-teacher
consensus and confidence-weighted ensembles.
"""

from __future__ import annotations

import abc
import math
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

# A log-probability below this is zero probability in float32; flooring there keeps
# `p * (log p - log q)` finite (and its gradient free of 0 * inf) when a tail bucket is empty.
LOG_FLOOR = -1.0e4
# Rows per chunk are chosen so one chunk of float32 logits is about this many elements (~32 MiB).
# Not less: glibc serves smaller blocks from its heap, which keeps freed chunks resident (16 MiB
# chunks raised the peak RSS of benchmarks/divergence.py by 60% over 32 MiB ones).
CHUNK_ELEMENTS = 1 << 23

Weight = Union[float, Tensor]


def rowwise(
    fn: Callable[..., Tensor],
    rows: Sequence[Tensor],
    shared: Sequence[Tensor],
    chunk_rows: int,
    projected: Sequence[bool] = (),
) -> Tensor:
    """Apply `fn(*row_chunk, *shared)` to chunks of rows and concatenate the results.

    `rows` all have the same leading dimension N; `shared` tensors (e.g. the lm_head weight) are
    passed whole to every chunk. When gradients are needed and there is more than one chunk, no
    chunk's `[chunk, V]` intermediates are kept: the backward pass recomputes one chunk at a time.
    `projected[j]` says that shared tensor j reaches `fn`'s output only through a `Projection`;
    its gradient is then added chunk by chunk into one buffer, instead of each chunk allocating
    a `[V, H]` gradient of its own (twice the head's size at the peak, and a page-faulted
    allocation per chunk).
    """
    n = rows[0].shape[0]
    if n <= chunk_rows:
        return fn(*rows, *shared)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*rows, *shared)):
        flags = tuple(projected) or (False,) * len(shared)
        return _Chunked.apply(fn, chunk_rows, len(rows), flags, *rows, *shared)
    return torch.cat([fn(*(r[i : i + chunk_rows] for r in rows), *shared) for i in range(0, n, chunk_rows)])


class _Chunked(torch.autograd.Function):
    """`rowwise` with gradients: forward without keeping intermediates, backward chunk by chunk."""

    @staticmethod
    def forward(ctx, fn, chunk_rows, n_rows, projected, *tensors):
        ctx.fn, ctx.chunk_rows, ctx.n_rows, ctx.projected = fn, chunk_rows, n_rows, projected
        ctx.save_for_backward(*tensors)
        rows, shared = tensors[:n_rows], tensors[n_rows:]
        n = rows[0].shape[0]
        return torch.cat([fn(*(r[i : i + chunk_rows] for r in rows), *shared) for i in range(0, n, chunk_rows)])

    @staticmethod
    def backward(ctx, grad_out):
        tensors, nr, cr = ctx.saved_tensors, ctx.n_rows, ctx.chunk_rows
        needs = ctx.needs_input_grad[4:]
        sink = [needs[i] and i >= nr and ctx.projected[i - nr] for i in range(len(tensors))]
        grads = [torch.zeros_like(t) if need else None for t, need in zip(tensors, needs)]
        wanted = [i for i in range(len(tensors)) if needs[i]]
        for start in range(0, tensors[0].shape[0], cr):
            inputs = []
            for i, t in enumerate(tensors):
                x = (t[start : start + cr] if i < nr else t).detach().requires_grad_(needs[i])
                if sink[i]:
                    x._grad_sink = grads[i]  # a Projection adds into it and returns no gradient
                inputs.append(x)
            with torch.enable_grad():
                out = ctx.fn(*inputs)
            got = torch.autograd.grad(out, [inputs[i] for i in wanted], grad_out[start : start + cr], allow_unused=True)
            for i, g in zip(wanted, got):
                if g is not None:
                    (grads[i][start : start + cr] if i < nr else grads[i]).add_(g)
        return (None, None, None, None, *grads)


class _SinkLinear(torch.autograd.Function):
    """`h @ w.T (+ b)` for 2-d `h`, adding the weight and bias gradients into `w._grad_sink` /
    `b._grad_sink` (when set) instead of returning them."""

    @staticmethod
    def forward(ctx, h, w, b):
        ctx.save_for_backward(h, w)
        ctx.sinks = (getattr(w, "_grad_sink", None), None if b is None else getattr(b, "_grad_sink", None))
        return h @ w.t() if b is None else torch.addmm(b, h, w.t())

    @staticmethod
    def backward(ctx, dz):
        h, w = ctx.saved_tensors
        w_sink, b_sink = ctx.sinks
        if w_sink is not None:
            w_sink.addmm_(dz.t(), h)
        if b_sink is not None:
            b_sink.add_(dz.sum(0))
        return (dz @ w if ctx.needs_input_grad[0] else None), None, None


class Scaled:
    """The logits of a dense Categorical: `z / temperature`. A class rather than a lambda so that
    the tiled divergences (`unified_opd.tiled`) can take vocabulary slices of `z`."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(temperature)

    def __call__(self, z: Tensor) -> Tensor:
        return z if self.temperature == 1.0 else z / self.temperature


class Projection:
    """The logits of a lazy Categorical: `(h @ w.T + b) / temperature`. A class rather than a
    closure so that `rowwise` knows the weight and bias enter only through it."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(temperature)

    def __call__(self, h: Tensor, w: Tensor, b: Optional[Tensor] = None) -> Tensor:
        if hasattr(w, "_grad_sink") or hasattr(b, "_grad_sink"):
            z = _SinkLinear.apply(h, w, b)
        elif b is None:
            z = h @ w.t()
        else:
            z = torch.addmm(b, h, w.t()) if h.dim() == 2 else h @ w.t() + b
        return z if self.temperature == 1.0 else z / self.temperature


def default_chunk_rows(vocab_size: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, vocab_size))


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate near 0 and near -inf."""
    x = x.clamp(max=0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class Distribution(abc.ABC):
    """What `Policy.distribution` and `Teacher.distribution` return."""

    batch_shape: torch.Size
    kind: str  # "categorical" or "gaussian": which divergences are defined for it

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Where its tensors live."""

    @abc.abstractmethod
    def select(self, mask: Tensor) -> "Distribution":
        """The positions where the boolean `mask` is true, as a flat batch."""


class Categorical(Distribution):
    """A categorical distribution per position, dense, lazy or sparse (see module docstring).

    Internally a dense or lazy Categorical is `rows` (tensors indexed by position), `shared`
    tensors, and `logits_fn(*rows, *shared) -> [n, V]` over flattened rows; pooling composes
    `logits_fn`s, so a pool of lazy teachers stays lazy.
    """

    kind = "categorical"

    def __init__(
        self,
        *,
        rows: Tuple[Tensor, ...],
        shared: Tuple[Tensor, ...],
        logits_fn: Optional[Callable[..., Tensor]],
        batch_shape: torch.Size,
        vocab_size: int,
        topk: Optional[Tuple[Tensor, Tensor]] = None,
        lazy: bool = False,
    ):
        self._rows = rows
        self._shared = shared
        self._logits_fn = logits_fn
        self.batch_shape = torch.Size(batch_shape)
        self.vocab_size = int(vocab_size)
        self._topk = topk
        self.is_lazy = lazy

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_logits(cls, logits: Tensor, temperature: float = 1.0) -> "Categorical":
        """Dense: logits `[..., V]`, divided by `temperature`."""
        if logits.dim() < 1:
            raise ValueError("Categorical.from_logits: logits must have a vocabulary dimension [..., V]")
        return cls(
            rows=(logits,),
            shared=(),
            logits_fn=Scaled(temperature),
            batch_shape=logits.shape[:-1],
            vocab_size=logits.shape[-1],
        )

    @classmethod
    def from_hidden(
        cls, hidden: Tensor, weight: Tensor, bias: Optional[Tensor] = None, temperature: float = 1.0
    ) -> "Categorical":
        """Lazy: logits = (hidden @ weight.T + bias) / temperature, projected a chunk at a time."""
        if hidden.shape[-1] != weight.shape[-1]:
            raise ValueError(
                f"Categorical.from_hidden: hidden size {hidden.shape[-1]} does not match weight [V, H] = {tuple(weight.shape)}"
            )
        shared = (weight,) if bias is None else (weight, bias)
        return cls(
            rows=(hidden,),
            shared=shared,
            logits_fn=Projection(temperature),
            batch_shape=hidden.shape[:-1],
            vocab_size=weight.shape[0],
            lazy=True,
        )

    @classmethod
    def from_topk(cls, logprobs: Tensor, indices: Tensor, vocab_size: int) -> "Categorical":
        """Sparse: the top-k log-probs `[..., K]` of tokens `indices`, plus a tail bucket holding
        the remaining mass `1 - sum(exp(logprobs))` spread over the other V - K tokens.

        With K = V and the K probabilities summing to 1 there is no tail: the result is dense (an
        empty tail bucket would have log-mass -inf, whose gradient is NaN in every divergence that
        reads it). K = V with mass left over keeps that mass as a tail outside the vocabulary
        (a teacher with a larger vocabulary, e.g. ULD's zero-padded ranks)."""
        if logprobs.shape != indices.shape:
            raise ValueError(
                f"Categorical.from_topk: logprobs {tuple(logprobs.shape)} and indices {tuple(indices.shape)} must match"
            )
        if indices.numel() and int(indices.max()) >= vocab_size:
            raise ValueError(f"Categorical.from_topk: an index is >= vocab_size={vocab_size}")
        if logprobs.shape[-1] == vocab_size and bool(((logprobs.float().exp().sum(-1) - 1).abs() < 1e-4).all()):
            return cls.from_logits(torch.empty_like(logprobs).scatter(-1, indices.long(), logprobs))
        return cls(
            rows=(),
            shared=(),
            logits_fn=None,
            batch_shape=logprobs.shape[:-1],
            vocab_size=vocab_size,
            topk=(logprobs, indices.long()),
        )

    # ----------------------------------------------------------------- structure
    @property
    def is_sparse(self) -> bool:
        return self._topk is not None

    @property
    def device(self) -> torch.device:
        return self._topk[0].device if self._topk is not None else self._rows[0].device

    @property
    def topk(self) -> Tuple[Tensor, Tensor]:
        if self._topk is None:
            raise ValueError("this Categorical is not sparse (it was not built with from_topk)")
        return self._topk

    def logit_source(self) -> Optional[Tuple[Tuple[Tensor, ...], bool, float]]:
        """`(tensors, lazy, temperature)` when the logits are one projection `(h @ W.T [+ b]) / T`
        (lazy: tensors are `h [n, H]`, `W`, and `b` if any) or one dense tensor `z [n, V] / T`;
        None for sparse, pooled or other composed distributions. What tiled evaluation reads."""
        if self.is_sparse or len(self._rows) != 1:
            return None
        fn = self._logits_fn
        if isinstance(fn, Projection):
            return (*self._flat_rows(), *self._shared), True, fn.temperature
        if isinstance(fn, Scaled) and not self._shared:
            return self._flat_rows(), False, fn.temperature
        return None

    def _flat_rows(self) -> Tuple[Tensor, ...]:
        n = self.batch_shape.numel()
        nb = len(self.batch_shape)
        return tuple(r.reshape(n, *r.shape[nb:]) for r in self._rows)

    def _map_rows(self, f: Callable[[Tensor], Tensor], batch_shape: torch.Size) -> "Categorical":
        topk = None if self._topk is None else (f(self._topk[0]), f(self._topk[1]))
        return Categorical(
            rows=tuple(f(r) for r in self._rows),
            shared=self._shared,
            logits_fn=self._logits_fn,
            batch_shape=batch_shape,
            vocab_size=self.vocab_size,
            topk=topk,
            lazy=self.is_lazy,
        )

    def select(self, mask: Tensor) -> "Categorical":
        """The positions where boolean `mask` (shaped like the batch) is true, as a flat batch `[N]`."""
        mask = mask.bool()
        if mask.shape != self.batch_shape:
            raise ValueError(f"select: mask shape {tuple(mask.shape)} != batch shape {tuple(self.batch_shape)}")
        return self._map_rows(lambda r: r[mask], torch.Size([int(mask.sum())]))

    def reshape(self, *shape: int) -> "Categorical":
        nb = len(self.batch_shape)
        new = torch.Size(shape)
        return self._map_rows(lambda r: r.reshape(*new, *r.shape[nb:]), torch.empty(self.batch_shape).reshape(new).shape)

    def detach(self) -> "Categorical":
        out = self._map_rows(lambda r: r.detach(), self.batch_shape)
        out._shared = tuple(s.detach() for s in self._shared)
        return out

    def with_temperature(self, temperature: float) -> "Categorical":
        t = float(temperature)
        if t == 1.0:
            return self
        if self.is_sparse:
            raise ValueError("temperature != 1 is undefined for a top-k Categorical (the tail is not a set of logits)")
        fn = self._logits_fn
        out = self._map_rows(lambda r: r, self.batch_shape)
        if isinstance(fn, (Projection, Scaled)):
            out._logits_fn = type(fn)(fn.temperature * t)
        else:
            out._logits_fn = lambda *a: fn(*a) / t
        return out

    def chunk_rows(self) -> int:
        return default_chunk_rows(self.vocab_size)

    def projected(self) -> Tuple[bool, ...]:
        """Per shared tensor: does it enter the logits only through a `Projection` (see `rowwise`)?"""
        return (isinstance(self._logits_fn, Projection),) * len(self._shared)

    # ----------------------------------------------------------------- values
    def log_probs_fn(self) -> Callable[..., Tensor]:
        """f(*flat_rows, *shared) -> float32 log-probs [n, V] (dense/lazy only)."""
        if self.is_sparse:
            raise ValueError("full-vocabulary log-probs are not available from a top-k Categorical")
        fn = self._logits_fn
        return lambda *a: torch.log_softmax(fn(*a).float(), dim=-1)

    def log_probs(self) -> Tensor:
        """Materialise the full `[..., V]` log-probs (tests and small vocabularies only)."""
        return self.log_probs_fn()(*self._flat_rows(), *self._shared).reshape(*self.batch_shape, self.vocab_size)

    def log_prob(self, actions: Tensor) -> Tensor:
        """log p(actions) for integer actions shaped like the batch; float32."""
        if actions.shape != self.batch_shape:
            raise ValueError(f"log_prob: actions {tuple(actions.shape)} != batch shape {tuple(self.batch_shape)}")
        if self.is_sparse:
            lp, idx = self._topk
            hit = idx == actions.unsqueeze(-1)
            tail = log1mexp(torch.logsumexp(lp.float(), -1)) - math.log(max(1, self.vocab_size - lp.shape[-1]))
            return torch.where(hit.any(-1), (lp.float() * hit).sum(-1), tail)
        fn = self._logits_fn
        nr = len(self._rows)

        def gather(*a):
            rows, acts, shared = a[:nr], a[nr], a[nr + 1 :]
            z = fn(*rows, *shared).float()
            return z.gather(-1, acts.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, -1)

        flat = (*self._flat_rows(), actions.reshape(-1))
        return rowwise(gather, flat, self._shared, self.chunk_rows(), self.projected()).reshape(self.batch_shape)

    def entropy(self) -> Tensor:
        """Shannon entropy per position (nats, float32). Sparse: over the K+1 buckets."""
        if self.is_sparse:
            b = bucket_log_probs(self._topk[0])
            return -(b.exp() * b).sum(-1)
        lp_fn = self.log_probs_fn()

        def ent(*a):
            lp = lp_fn(*a)
            return -(lp.exp() * lp).sum(-1)

        return rowwise(ent, self._flat_rows(), self._shared, self.chunk_rows(), self.projected()).reshape(self.batch_shape)


def bucket_log_probs(topk_logprobs: Tensor) -> Tensor:
    """[..., K] top-k log-probs -> [..., K+1] log-probs with the tail bucket last."""
    lp = topk_logprobs.float()
    tail = log1mexp(torch.logsumexp(lp, -1, keepdim=True))
    return torch.cat([lp, tail], -1).clamp_min(LOG_FLOOR)


def _student_buckets(student_logp: Tensor, indices: Tensor) -> Tensor:
    """Student full log-probs [n, V] -> the same K+1 buckets as a sparse teacher [n, K+1]."""
    at_k = student_logp.gather(-1, indices)
    tail = log1mexp(torch.logsumexp(at_k, -1, keepdim=True))
    return torch.cat([at_k, tail], -1).clamp_min(LOG_FLOOR)


def check_aligned(student: Categorical, teacher: Categorical) -> None:
    """Raise ValueError unless the two Categoricals share batch shape and vocabulary size."""
    if student.batch_shape != teacher.batch_shape:
        raise ValueError(
            f"student batch shape {tuple(student.batch_shape)} != teacher batch shape {tuple(teacher.batch_shape)}"
        )
    if student.vocab_size != teacher.vocab_size:
        raise ValueError(f"student vocab size {student.vocab_size} != teacher vocab size {teacher.vocab_size}")


def aligned_log_probs(
    student: Categorical, teacher: Categorical, fn: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """Evaluate `fn(logp_s, logp_t) -> [n]` over the two distributions' common support.

    Full vs full: the vocabulary. Either side sparse: the sparse side's K top tokens plus one
    tail bucket (the other side's mass outside those K tokens). Runs chunk by chunk (see
    `rowwise`), so lazy inputs never materialise `N x V` logits. Returns `[*batch]` float32.
    """
    check_aligned(student, teacher)
    shape = student.batch_shape
    if student.is_sparse and teacher.is_sparse:
        ls, lt = student.topk, teacher.topk
        if not torch.equal(ls[1], lt[1]):
            raise ValueError("two top-k Categoricals can only be compared when they share the same token ids")
        return fn(bucket_log_probs(ls[0]), bucket_log_probs(lt[0]))
    if teacher.is_sparse or student.is_sparse:
        flip = student.is_sparse
        full, sparse = (teacher, student) if flip else (student, teacher)
        lp_fn = full.log_probs_fn()
        nr = len(full._rows)
        k_lp, k_idx = sparse.topk
        n = shape.numel()

        def f(*a):
            rows, lp_k, idx, shared = a[:nr], a[nr], a[nr + 1], a[nr + 2 :]
            full_b = _student_buckets(lp_fn(*rows, *shared), idx)
            sparse_b = bucket_log_probs(lp_k)
            return fn(sparse_b, full_b) if flip else fn(full_b, sparse_b)

        flat = (*full._flat_rows(), k_lp.reshape(n, -1), k_idx.reshape(n, -1))
        return rowwise(f, flat, full._shared, full.chunk_rows(), full.projected()).reshape(shape)

    s_fn, t_fn = student.log_probs_fn(), teacher.log_probs_fn()
    ns, nss, nt = len(student._rows), len(student._shared), len(teacher._rows)

    def f(*a):
        s_rows, t_rows = a[:ns], a[ns : ns + nt]
        s_shared, t_shared = a[ns + nt : ns + nt + nss], a[ns + nt + nss :]
        return fn(s_fn(*s_rows, *s_shared), t_fn(*t_rows, *t_shared))

    flat = (*student._flat_rows(), *teacher._flat_rows())
    shared = (*student._shared, *teacher._shared)
    projected = (*student.projected(), *teacher.projected())
    return rowwise(f, flat, shared, student.chunk_rows(), projected).reshape(shape)


class Gaussian(Distribution):
    """Diagonal Gaussian per batch element: `mean [B, ...]`, `std` broadcastable to it.

    Dimension 0 is the batch; every other dimension is an event dimension (divergences sum
    over them). Used for one denoising transition of a flow-matching SDE/ODE step.
    """

    kind = "gaussian"

    def __init__(self, mean: Tensor, std: Union[Tensor, float]):
        std_t = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
        try:
            std_t = torch.broadcast_to(std_t, mean.shape)
        except RuntimeError as e:
            raise ValueError(f"Gaussian: std {tuple(std_t.shape)} does not broadcast to mean {tuple(mean.shape)}") from e
        self.mean = mean
        self.std = std_t
        self.batch_shape = mean.shape[:1]

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def select(self, mask: Tensor) -> "Gaussian":
        mask = mask.bool()
        return Gaussian(self.mean[mask], self.std[mask])

    def detach(self) -> "Gaussian":
        return Gaussian(self.mean.detach(), self.std.detach())

    def log_prob(self, x: Tensor) -> Tensor:
        """Sum over event dims of log N(x; mean, std) -> [B] float32."""
        m, s, x = self.mean.float(), self.std.float(), x.float()
        lp = -((x - m) ** 2) / (2 * s**2) - torch.log(s) - 0.5 * math.log(2 * math.pi)
        return lp.flatten(1).sum(-1)


def _broadcast_weight(w: Weight, like: Tensor, batch_dims: int) -> Union[float, Tensor]:
    """A scalar weight, or a per-position weight shaped like the batch, broadcast over the rest."""
    if isinstance(w, Tensor) and w.dim() > 0:
        return w.reshape(*w.shape, *([1] * (like.dim() - batch_dims)))
    return float(w)


def pool(dists: Sequence[Distribution], weights: Sequence[Weight]) -> Distribution:
    """Log-linear pooling: p ∝ Π_i p_i^{w_i}, of the same kind as the inputs.

    Categorical: log p = log_softmax(Σ_i w_i · log p_i). Weights may be floats or per-position
    tensors shaped like the batch (token-adaptive extrapolation); they need not sum to one and may
    be negative (`[λ, 1-λ]` with λ > 1 is the ExOPD extrapolated target).
    Gaussian: the product of Gaussians raised to w_i is Gaussian with precision
    τ = Σ_i w_i/σ_i² and mean Σ_i (w_i/σ_i²)·μ_i / τ; with equal variances and Σw = 1 this is the
    weighted mean of means at the same σ. τ must stay positive.
    """
    if len(dists) == 0 or len(dists) != len(weights):
        raise ValueError(f"pool: need as many weights as distributions (got {len(dists)} and {len(weights)})")
    kinds = {type(d) for d in dists}
    if len(kinds) != 1:
        raise ValueError(f"pool: all distributions must be of one kind, got {sorted(k.__name__ for k in kinds)}")
    if isinstance(dists[0], Gaussian):
        return _pool_gaussian(list(dists), list(weights))
    return _pool_categorical(list(dists), list(weights))


def _pool_gaussian(dists: list, weights: list) -> Gaussian:
    prec = 0.0
    num = 0.0
    for d, w in zip(dists, weights):
        wb = _broadcast_weight(w, d.mean, 1)
        p = wb / d.std**2
        prec = prec + p
        num = num + p * d.mean
    if bool((torch.as_tensor(prec) <= 0).any()):
        raise ValueError("pool: the pooled Gaussian precision Σ w_i/σ_i² must be positive")
    return Gaussian(num / prec, prec.rsqrt())


def _pool_categorical(dists: list, weights: list) -> Categorical:
    shape = dists[0].batch_shape
    for d in dists:
        if d.batch_shape != shape or d.vocab_size != dists[0].vocab_size:
            raise ValueError("pool: Categoricals must share batch shape and vocabulary size")
        if d.is_sparse:
            raise ValueError("pool: top-k Categoricals cannot be pooled (their supports differ); pool dense or lazy ones")
    rows: list = []
    shared: list = []
    parts = []
    for d, w in zip(dists, weights):
        w_is_tensor = isinstance(w, Tensor) and w.dim() > 0
        if w_is_tensor and w.shape != shape:
            raise ValueError(f"pool: a per-position weight must have the batch shape {tuple(shape)}, got {tuple(w.shape)}")
        parts.append((d.log_probs_fn(), len(rows), len(d._rows), len(shared), len(d._shared), w_is_tensor, w))
        rows.extend(d._rows)
        shared.extend(d._shared)
        if w_is_tensor:
            rows.append(w)
    n_rows = len(rows)

    def logits_fn(*a):
        r, s = a[:n_rows], a[n_rows:]
        total = 0.0
        for lp_fn, r0, nr, s0, ns, w_is_tensor, w in parts:
            lp = lp_fn(*r[r0 : r0 + nr], *s[s0 : s0 + ns])
            wt = r[r0 + nr].float().unsqueeze(-1) if w_is_tensor else float(w)
            total = total + wt * lp
        return total

    return Categorical(
        rows=tuple(rows),
        shared=tuple(shared),
        logits_fn=logits_fn,
        batch_shape=shape,
        vocab_size=dists[0].vocab_size,
        lazy=any(d.is_lazy for d in dists),
    )
