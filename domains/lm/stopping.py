"""Where a completion ends: every EOS id the model declares, and `rollout.stop` strings.

A chat model ends its turn on its own token (`<|im_end|>`, `<end_of_turn>`), which its
`generation_config.eos_token_id` (an int or a list) names next to, or instead of, the tokenizer's
`eos_token_id`; `stop_ids` gathers them all for the sampler. Stop strings can end inside a token
and span several, so they are found on decoded text: while sampling, to end the row
(`stop_string_check`), and after it, to cut the loss mask at the token that completes one (`stop_string_mask`).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from unified_opd.errors import ConfigError


def stop_ids(tok, lm) -> List[int]:
    """The tokenizer's EOS id and every EOS id of `lm.generation_config`, without repeats."""
    ids = [tok.eos_token_id]
    gen = getattr(lm, "generation_config", None)
    declared = getattr(gen, "eos_token_id", None)
    ids += declared if isinstance(declared, (list, tuple)) else [declared]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def check_stop_strings(stop) -> None:
    """`rollout.stop` is a list of non-empty strings."""
    for i, s in enumerate(stop):
        if not isinstance(s, str) or not s:
            raise ConfigError(f"rollout.stop[{i}]: expected a non-empty string, got {s!r}")


def stop_string_mask(tok, generated: Tensor, mask: Tensor, stops: Sequence[str]) -> Tensor:
    """`mask` cut after the token that completes the first stop string of each row (the string
    itself stays in the completion, what follows is masked out of the loss)."""
    if not stops:
        return mask
    mask = mask.clone()
    for row, (ids, keep) in enumerate(zip(generated.tolist(), mask.tolist())):
        n = sum(keep)
        text = ""
        for t in range(n):  # incremental decode: the first prefix that contains a stop string
            text = tok.decode(ids[: t + 1], skip_special_tokens=True)
            if any(s in text for s in stops):
                mask[row, t + 1 :] = 0
                break
    return mask


def stop_string_check(tok, stops: Sequence[str]) -> Optional[Callable[[Tensor], Tensor]]:
    """For `sample(stopped=...)`: which rows' latest tokens complete a stop string, so sampling
    ends there instead of at `max_new_tokens`. Only the tail is decoded: a string of n characters
    spans at most 4n byte-level tokens."""
    if not stops:
        return None
    window = 4 * max(len(s) for s in stops)

    def stopped(generated: Tensor) -> Tensor:
        texts = tok.batch_decode(generated[:, -window:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in stops) for t in texts], device=generated.device)

    return stopped


def cut_text(text: str, stops: Sequence[str]) -> str:
    """`text` up to and including its first stop string (a stop can end mid-token)."""
    ends = [text.index(s) + len(s) for s in stops if s in text]
    return text[: min(ends)] if ends else text
