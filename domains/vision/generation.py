"""Vision rollouts: (image, question) -> sampled answers -> a `Rollout` with a teacher view.

Sequences are `[left-padded prompt with image tokens | completion]`, scored as in the text
domain (`actions = sequence[:, 1:]`; `loss_mask` is 1 only on completion tokens up to the first
EOS, so image placeholder tokens, like every prompt token, never enter the loss). A view is a
dict `{input_ids, attention_mask, prompt_len, images}` where `images` holds the processor's
image tensors, one row per trajectory. The teacher view carries its own prompt tokens and
pixels (the crop, or the teacher processor's encoding of the full image) followed by the same
completion tokens; `unified_opd.domains.lm.view_distribution` scores a view (binding its `images`
to the forward) and aligns it to the student's positions.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from PIL import Image
from torch import nn

from unified_opd.data import verify
from unified_opd.domains.lm import Sampling, completion_mask, max_context
from unified_opd.errors import UserError
from unified_opd.rollout import Rollout

from .data import RecordError, load_image
from .models import image_token_id

TEXT_KEYS = ("input_ids", "attention_mask")
ImageTransform = Callable[[Dict[str, Any], Image.Image], Image.Image]


def format_prompts(processor, records: Sequence[Dict[str, Any]], data_cfg) -> List[str]:
    """One prompt per record holding one image: the processor's chat template with an image
    part and a text part, or `<image> question` when it has no template."""
    template = getattr(processor, "chat_template", None)
    image_token = getattr(processor, "image_token", None)
    if template is None and image_token is None:
        raise UserError("student.path: the processor has neither a chat template nor an image token to place the image")
    prompts = []
    for r in records:
        text = r[data_cfg.prompt_field]
        if template is None:
            prompts.append(f"{image_token} {text}")
            continue
        system = [{"role": "system", "content": [{"type": "text", "text": data_cfg.system_prompt}]}] if data_cfg.system_prompt else []
        user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        prompts.append(processor.apply_chat_template(system + user, tokenize=False, add_generation_prompt=True))
    return prompts


def encode(processor, prompts: List[str], images: List[Image.Image], device) -> Dict[str, torch.Tensor]:
    enc = processor(text=prompts, images=images, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor)}


def images_of(enc: Dict[str, torch.Tensor], repeat: int) -> Dict[str, torch.Tensor]:
    """The image tensors of an encoding, one row per trajectory (`repeat` samples per prompt)."""
    return {k: v.repeat_interleave(repeat, 0) for k, v in enc.items() if k not in TEXT_KEYS}


class ViewBuilder:
    """Builds a view of the same completions from another processor and/or transformed images
    (the crop teacher: student processor + cropper; the full teacher: its own processor)."""

    def __init__(self, processor, data_cfg, transform: Optional[ImageTransform] = None):
        self.processor = processor
        self.data_cfg = data_cfg
        self.transform = transform

    def __call__(
        self, records: Sequence[Dict[str, Any]], images: List[Image.Image], completion: torch.Tensor, completion_mask: torch.Tensor, n: int
    ) -> Dict[str, Any]:
        if self.transform is not None:
            images = [self.transform(r, im) for r, im in zip(records, images)]
        enc = encode(self.processor, format_prompts(self.processor, records, self.data_cfg), images, completion.device)
        return {
            "input_ids": torch.cat([enc["input_ids"].repeat_interleave(n, 0), completion], 1),
            "attention_mask": torch.cat([enc["attention_mask"].repeat_interleave(n, 0), completion_mask], 1),
            "prompt_len": enc["input_ids"].shape[1],
            "images": images_of(enc, n),
        }


@torch.no_grad()
def generate_rollout(
    lm: nn.Module,
    processor,
    records: Sequence[Dict[str, Any]],
    data_cfg,
    sampling: Sampling,
    image_transform: Optional[ImageTransform] = None,
    teacher_view: Optional[ViewBuilder] = None,
) -> Rollout:
    """Sample answers with `generate` on each record's image (after `image_transform`, e.g. a
    crop for evaluation) and package them as a `Rollout`, with `teacher_view` built when given."""
    tok = processor.tokenizer
    device = next(lm.parameters()).device
    try:
        images = [load_image(r) for r in records]
    except RecordError as e:  # the file changed after the run was built
        raise UserError(f"data: field {e.field!r}: {e}") from e
    shown = [image_transform(r, im) for r, im in zip(records, images)] if image_transform else images
    enc = encode(processor, format_prompts(processor, records, data_cfg), shown, device)
    prompt_len = enc["input_ids"].shape[1]
    ctx = max_context(lm)
    if ctx and prompt_len >= ctx:
        raise UserError(f"data.path: a prompt with its image tokens is {prompt_len} tokens, but the model's context is {ctx}")
    n = sampling.num_samples
    kwargs: Dict[str, Any] = dict(
        max_new_tokens=sampling.max_new_tokens if not ctx else min(sampling.max_new_tokens, ctx - prompt_len),
        num_return_sequences=n,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    placeholder = image_token_id(lm)
    if placeholder is not None:
        # a sampled image placeholder would demand image features that do not exist
        kwargs["suppress_tokens"] = [placeholder]
    if sampling.greedy:
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None)
    seq = lm.generate(**enc, **kwargs)
    gen = seq[:, prompt_len:]
    gen_mask = completion_mask(gen, tok.eos_token_id)
    attn = torch.cat([enc["attention_mask"].repeat_interleave(n, 0), gen_mask], 1)
    loss_mask = torch.cat([torch.zeros(seq.shape[0], prompt_len - 1, dtype=torch.long, device=device), gen_mask], 1)
    completions = tok.batch_decode(gen * gen_mask + tok.pad_token_id * (1 - gen_mask), skip_special_tokens=True)
    expanded = [r for r in records for _ in range(n)]
    scores = verify(data_cfg.verifier, completions, [r.get(data_cfg.answer_field) for r in expanded])
    return Rollout(
        actions=seq[:, 1:],
        loss_mask=loss_mask,
        step_ids=torch.zeros_like(loss_mask),
        student_view={"input_ids": seq, "attention_mask": attn, "prompt_len": prompt_len, "images": images_of(enc, n)},
        teacher_view=teacher_view(records, images, gen, gen_mask, n) if teacher_view is not None else None,
        outcome=None if any(s is None for s in scores) else torch.tensor(scores, device=device),
        task=[str(r["task"]) for r in expanded] if all("task" in r for r in records) else None,
        group_ids=torch.arange(len(records), device=device).repeat_interleave(n),
        meta={"completions": completions, "records": expanded},
    )
