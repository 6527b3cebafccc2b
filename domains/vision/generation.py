"""Vision rollouts: (image, question) -> sampled answers -> a `Rollout` with a teacher view.

Sequences are `[left-padded prompt with image tokens | completion]`, scored as in the text
domain (`actions = sequence[:, 1:]`; `loss_mask` is 1 only on completion tokens up to the first
EOS, so image placeholder tokens, like every prompt token, never enter the loss). A view is a
dict `{input_ids, attention_mask, prompt_len, images}` where `images` holds the processor's
image tensors laid out one row per trajectory by the model family (`families.Family.pack`). The teacher view carries its own prompt tokens and
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

from .data import IMAGE_PATH, RecordError, load_images
from .families import Family, family_of
from .models import image_token_id

ImageTransform = Callable[[Dict[str, Any], Image.Image], Image.Image]


def image_parts(record: Dict[str, Any]) -> int:
    """How many images a record's prompt holds."""
    return len(record[IMAGE_PATH]) if isinstance(record[IMAGE_PATH], list) else 1


def format_prompts(processor, records: Sequence[Dict[str, Any]], data_cfg) -> List[str]:
    """One prompt per record: its chat `messages` (`data.messages_field`, image parts in image
    order) or, from `data.prompt_field`, a user turn with one image part per image then the text,
    through the processor's chat template; `<image> … question` when it has no template."""
    template = getattr(processor, "chat_template", None)
    image_token = getattr(processor, "image_token", None)
    if template is None and image_token is None:
        raise UserError("student.path: the processor has neither a chat template nor an image token to place the image")
    system = [{"role": "system", "content": [{"type": "text", "text": data_cfg.system_prompt}]}] if data_cfg.system_prompt else []
    prompts = []
    for r in records:
        messages = r.get(data_cfg.messages_field)
        if template is None:
            if messages is not None:
                raise UserError("data.messages_field: record messages need a processor with a chat template (student.path has none)")
            prompts.append(" ".join([image_token] * image_parts(r) + [r[data_cfg.prompt_field]]))
            continue
        if messages is None:
            parts = [{"type": "image"}] * image_parts(r) + [{"type": "text", "text": r[data_cfg.prompt_field]}]
            messages = [{"role": "user", "content": parts}]
        prompts.append(processor.apply_chat_template(system + list(messages), tokenize=False, add_generation_prompt=True))
    return prompts


def encode(processor, prompts: List[str], images: List[List[Image.Image]], device) -> Dict[str, torch.Tensor]:
    """The processor's tensors for prompts with their images (one list per prompt)."""
    enc = processor(text=prompts, images=images, padding=True, return_tensors="pt")
    # PaliGemma's processor also returns training labels; the domain's loss needs none
    return {k: v.to(device) for k, v in enc.items() if isinstance(v, torch.Tensor) and k != "labels"}


def transformed(records, images: List[List[Image.Image]], transform: Optional[ImageTransform]) -> List[List[Image.Image]]:
    """`transform` (a crop) applied to each record's first image: the record's box is on it."""
    if transform is None:
        return images
    return [[transform(r, ims[0]), *ims[1:]] for r, ims in zip(records, images)]


class ViewBuilder:
    """Builds a view of the same completions from another processor and/or transformed images
    (the crop teacher: student processor + cropper; the full teacher: its own processor and
    `family`, the teacher model's)."""

    def __init__(self, processor, data_cfg, transform: Optional[ImageTransform] = None, family: Optional[Family] = None):
        self.processor = processor
        self.data_cfg = data_cfg
        self.transform = transform
        self.family = family

    def __call__(
        self, records: Sequence[Dict[str, Any]], images: List[List[Image.Image]], completion: torch.Tensor, completion_mask: torch.Tensor,
        n: int, student_family: Family,
    ) -> Dict[str, Any]:
        """The view of `n` completions per record; `student_family` when the view's model is the student's."""
        family = self.family or student_family
        enc = encode(self.processor, format_prompts(self.processor, records, self.data_cfg), transformed(records, images, self.transform), completion.device)
        return {
            "input_ids": torch.cat([enc["input_ids"].repeat_interleave(n, 0), completion], 1),
            "attention_mask": torch.cat([enc["attention_mask"].repeat_interleave(n, 0), completion_mask], 1),
            "prompt_len": enc["input_ids"].shape[1],
            "images": family.pack(enc, [image_parts(r) for r in records], n, "teacher.path"),
        }


def generate_kwargs(lm, tok, sampling: Sampling, prompt_len: int) -> Dict[str, Any]:
    """`generate`'s options: length within the context, EOS, the image placeholder suppressed."""
    ctx = max_context(lm)
    if ctx and prompt_len >= ctx:
        raise UserError(f"data.path: a prompt with its image tokens is {prompt_len} tokens, but the model's context is {ctx}")
    kwargs: Dict[str, Any] = dict(
        max_new_tokens=sampling.max_new_tokens if not ctx else min(sampling.max_new_tokens, ctx - prompt_len),
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
    return kwargs


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
    """Sample answers with `generate` on each record's images (after `image_transform`, e.g. a
    crop for evaluation) and package them as a `Rollout`, with `teacher_view` built when given.

    The prompts are repeated per sample here, images included (`Family.pack`), rather than by
    `generate`'s `num_return_sequences`, which repeats every tensor along dim 0: right for one
    LLaVA image per prompt, wrong for several images per prompt."""
    tok, family = processor.tokenizer, family_of(lm.config.model_type)
    device = next(lm.parameters()).device
    try:
        images = [load_images(r) for r in records]
    except RecordError as e:  # the file changed after the run was built
        raise UserError(f"data: field {e.field!r}: {e}") from e
    enc = encode(processor, format_prompts(processor, records, data_cfg), transformed(records, images, image_transform), device)
    n, prompt_len = sampling.num_samples, enc["input_ids"].shape[1]
    packed = family.pack(enc, [image_parts(r) for r in records], n)
    prompt_mask = enc["attention_mask"].repeat_interleave(n, 0)
    prompt = dict(input_ids=enc["input_ids"].repeat_interleave(n, 0), attention_mask=prompt_mask)
    seq = lm.generate(**prompt, **family.unpack(packed), **generate_kwargs(lm, tok, sampling, prompt_len))
    gen = seq[:, prompt_len:]
    gen_mask = completion_mask(gen, tok.eos_token_id)
    loss_mask = torch.cat([torch.zeros(seq.shape[0], prompt_len - 1, dtype=torch.long, device=device), gen_mask], 1)
    completions = tok.batch_decode(gen * gen_mask + tok.pad_token_id * (1 - gen_mask), skip_special_tokens=True)
    expanded = [r for r in records for _ in range(n)]
    scores = verify(data_cfg.verifier, completions, [r.get(data_cfg.answer_field) for r in expanded])
    return Rollout(
        actions=seq[:, 1:],
        loss_mask=loss_mask,
        step_ids=torch.zeros_like(loss_mask),
        student_view={"input_ids": seq, "attention_mask": torch.cat([prompt_mask, gen_mask], 1), "prompt_len": prompt_len, "images": packed},
        teacher_view=teacher_view(records, images, gen, gen_mask, n, family) if teacher_view is not None else None,
        outcome=None if any(s is None for s in scores) else torch.tensor(scores, device=device),
        task=[str(r["task"]) for r in expanded] if all("task" in r for r in records) else None,
        group_ids=torch.arange(len(records), device=device).repeat_interleave(n),
        meta={"completions": completions, "records": expanded},
    )
