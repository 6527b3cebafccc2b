"""Per-family handling of image-text models: how a processor's image tensors travel with each
trajectory, which extra inputs go with them, and how positions are computed.

A processor returns each tensor in one of four layouts, named by what its first dimension counts:

- prompts (`per_prompt`): Idefics3 / SmolVLM `pixel_values` `[prompts, images and tiles, 3, H, W]`
  with `pixel_attention_mask`, LLaVA-OneVision `batch_num_images`;
- images of the whole batch, in prompt order (`per_image`): LLaVA / PaliGemma / Gemma 3
  `pixel_values`, LLaVA-OneVision `pixel_values` and `image_sizes`, Qwen-VL `image_grid_thw`;
- patches of all images together (`per_patch`): Qwen-VL `pixel_values`, image i owning
  `prod(image_grid_thw[i])` rows;
- prompt tokens (`token_types`): Qwen-VL `mm_token_type_ids` (0 text, 1 image), PaliGemma
  `token_type_ids` (0 prefix, 1 the causal suffix), Gemma 3 `token_type_ids` (1 image tokens);
  scoring continues them over the completion with the family's completion value.

`Family.pack` turns an encoding into per-trajectory rows (per-patch tensors, and per-image ones when
a prompt has several images, padded to `[trajectories, most, ...]` with the counts `n_patches` /
`n_images`; with one image per prompt a per-image tensor already has one row per prompt), so `Rollout.subset` and
repeating a prompt's images for its samples select whole trajectories; `Family.unpack` restores
the model's own layout. Repeating a per-patch tensor along dim 0 (what a LLaVA-style tensor
allows) would give a trajectory another image's patches: the first silent error this avoids.
`Family.positions` is what a plain forward of the unpadded sequence uses: positions counted from
the attention mask (left padding), or, for M-RoPE families, the model's own `get_rope_index`:
the second one (1-D positions where Qwen-VL expects 3-D ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from unified_opd.errors import ConfigError, UserError

TEXT_KEYS = ("input_ids", "attention_mask")
N_IMAGES, N_PATCHES = "n_images", "n_patches"


@dataclass(frozen=True)
class Family:
    """What the vision domain knows about one family's processor outputs and positions."""

    per_prompt: Tuple[str, ...] = ()
    per_image: Tuple[str, ...] = ()
    per_patch: Tuple[str, ...] = ()
    token_types: Optional[str] = None  # a per-token key continued over the completion
    completion_type: int = 0  # its value on completion tokens
    first_position: int = 0  # PaliGemma counts positions from 1
    rope_index: bool = False  # positions from the model's get_rope_index (M-RoPE, 3 x B x L)
    patch_grid: str = "image_grid_thw"  # per-image key whose product is an image's patch rows

    def pack(self, enc: Dict[str, Tensor], images_per_prompt: Sequence[int], repeat: int, field: str = "student.path") -> Dict[str, Tensor]:
        """The encoding's image inputs as one row per trajectory (`repeat` samples per prompt)."""
        known = set(TEXT_KEYS) | set(self.per_prompt) | set(self.per_image) | set(self.per_patch) | {self.token_types}
        unknown = sorted(set(enc) - known)
        if unknown:
            raise UserError(
                f"{field}: the processor returned {unknown}, which the vision domain cannot assign to trajectories "
                f"(known here: {sorted(known - {None})})"
            )
        out = {k: enc[k] for k in (*self.per_prompt, self.token_types) if k is not None and k in enc}
        counts = torch.tensor(list(images_per_prompt), device=enc["input_ids"].device)
        if any(k in enc for k in self.per_image) and bool((counts == 1).all()):
            out.update({k: enc[k] for k in self.per_image if k in enc})  # one image per prompt: already one row each
        elif any(k in enc for k in self.per_image):
            out[N_IMAGES] = counts
            out.update({k: _pad_split(enc[k], counts.tolist()) for k in self.per_image if k in enc})
        if any(k in enc for k in self.per_patch):
            rows = enc[self.patch_grid].prod(-1)
            patches = torch.stack([r.sum() for r in rows.split(counts.tolist())])
            out[N_PATCHES] = patches
            out.update({k: _pad_split(enc[k], patches.tolist()) for k in self.per_patch if k in enc})
        return {k: v.repeat_interleave(repeat, 0) for k, v in out.items()}

    def unpack(self, images: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Per-trajectory rows back to the model's layout (token types as packed: prompt length)."""
        out = {k: images[k] for k in (*self.per_prompt, self.token_types) if k is not None and k in images}
        for count, keys in ((N_IMAGES, self.per_image), (N_PATCHES, self.per_patch)):
            rows = (lambda t: _unpad(t, images[count])) if count in images else (lambda t: t)
            out.update({k: rows(images[k]) for k in keys if k in images})
        return out

    def model_inputs(self, lm, input_ids: Tensor, attention_mask: Tensor, images: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The keyword arguments of one forward over `[prompt | completion]` sequences."""
        kwargs = self.unpack(images)
        if self.token_types in kwargs:
            kwargs[self.token_types] = continue_token_types(kwargs[self.token_types], input_ids.shape[1], self.completion_type)
        kwargs["position_ids"] = self.positions(lm, input_ids, attention_mask, kwargs)
        return dict(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def positions(self, lm, input_ids: Tensor, attention_mask: Tensor, inputs: Dict[str, Tensor]) -> Tensor:
        """Left padding is skipped: the first real token has position `first_position`; with
        `rope_index`, the model's `get_rope_index` (3-D M-RoPE positions of the unpadded tokens)."""
        if self.rope_index and self.patch_grid in inputs:
            grid = {self.patch_grid: inputs[self.patch_grid]}
            return lm.model.get_rope_index(input_ids, inputs[self.token_types], attention_mask=attention_mask, **grid)[0]
        return (attention_mask.long().cumsum(-1) - 1).clamp_min(0) + self.first_position


def continue_token_types(types: Tensor, length: int, value: int) -> Tensor:
    """Prompt token types `[B, P]` continued to `length` tokens with `value`."""
    return torch.cat([types, types.new_full((types.shape[0], length - types.shape[1]), value)], 1)


def _pad_split(t: Tensor, sizes: List[int]) -> Tensor:
    """Rows of `t` split into consecutive groups of `sizes`, zero-padded to `[groups, max(sizes), ...]`."""
    out = t.new_zeros((len(sizes), max(sizes), *t.shape[1:]))
    for i, chunk in enumerate(t.split(sizes)):
        out[i, : chunk.shape[0]] = chunk
    return out


def _unpad(t: Tensor, counts: Tensor) -> Tensor:
    return torch.cat([row[:n] for row, n in zip(t, counts.tolist())])


QWEN_VL = Family(per_image=("image_grid_thw",), per_patch=("pixel_values",), token_types="mm_token_type_ids", rope_index=True)
LLAVA = Family(per_prompt=("batch_num_images",), per_image=("pixel_values", "image_sizes"))
IDEFICS = Family(per_prompt=("pixel_values", "pixel_attention_mask"))
# model_type (config.json) -> its handling; a type not listed is refused, never guessed
FAMILIES: Dict[str, Family] = {
    "qwen2_vl": QWEN_VL,
    "qwen2_5_vl": QWEN_VL,
    "qwen3_vl": QWEN_VL,
    "llava": LLAVA,
    "llava_onevision": LLAVA,
    "idefics3": IDEFICS,
    "smolvlm": IDEFICS,
    # prefix-LM: the prompt (0) attends both ways, the answer (1) causally; positions from 1
    "paligemma": Family(per_image=("pixel_values",), token_types="token_type_ids", completion_type=1, first_position=1),
    # image tokens (1) attend to each other both ways; answer tokens are text (0)
    "gemma3": Family(per_image=("pixel_values",), token_types="token_type_ids"),
}


def family_of(model_type: str, field: str = "student.path") -> Family:
    """The handling of `model_type`; a ConfigError for a family the domain cannot reason about."""
    if model_type not in FAMILIES:
        raise ConfigError(
            f"{field}: model type {model_type!r} is not a supported image-text family (supported: {sorted(FAMILIES)}); "
            "its image inputs and positions would be guessed"
        )
    return FAMILIES[model_type]
