"""Teacher views: what a (self-)teacher reads instead of the student's prompt.

A view builder maps a task record to the privileged prompt text; `privileged_view` puts that
prompt in front of the student's completion tokens, so the teacher scores exactly the student's
decisions with more context (OPSD: the reference answer in the prompt). Builders live in the
`TEACHER_VIEWS` registry, named by `teacher.view`; `same` means no separate view.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from unified_opd.errors import UserError
from unified_opd.registry import Registry
from unified_opd.rollout import Rollout

from .generation import encode_prompts, format_prompts

TEACHER_VIEWS = Registry("teacher view", "teacher.view")
ViewFn = Callable[[Dict[str, Any], str, Any], str]



@TEACHER_VIEWS.register("same")
def same(record: Dict[str, Any], prompt: str, data_cfg) -> str:
    """The student's own prompt: no separate teacher view is built."""
    return prompt


@TEACHER_VIEWS.register("answer_hint")
def answer_hint(record: Dict[str, Any], prompt: str, data_cfg) -> str:
    """The reference answer, a space, then the prompt: `"231 47+85="` (arith's tokenizer has
    digits, operators, `=` and space only, so the hint uses no other character)."""
    answer = record.get(data_cfg.answer_field)
    if answer is None:
        raise UserError(f"teacher.view: answer_hint needs the {data_cfg.answer_field!r} field in every record")
    return f"{answer} {prompt}"


def privileged_view(tok, records: Sequence[Dict[str, Any]], rollout: Rollout, data_cfg, fn: ViewFn) -> Dict[str, Any]:
    """`[left-padded privileged prompt | the student's completion]` with its own `prompt_len`.

    `records` holds one record per trajectory (as `rollout.meta["records"]`).
    """
    view = rollout.student_view
    prompt_len = view["prompt_len"]
    prompts: List[str] = [fn(r, p, data_cfg) for r, p in zip(records, format_prompts(tok, records, data_cfg))]
    device = view["input_ids"].device
    enc = {k: v.to(device) for k, v in encode_prompts(tok, prompts, 0, "teacher.view").items()}
    completion = view["input_ids"][:, prompt_len:]
    completion_attn = view["attention_mask"][:, prompt_len:]
    return {
        "input_ids": torch.cat([enc["input_ids"], completion], 1),
        "attention_mask": torch.cat([enc["attention_mask"], completion_attn], 1),
        "prompt_len": enc["input_ids"].shape[1],
    }


def view_builder(name: str) -> Optional[ViewFn]:
    """The registered builder, or None for `same` (the teacher reads the student's view)."""
    fn = TEACHER_VIEWS.get(name, "teacher.view")
    return None if fn is same else fn
