"""Loading Hugging Face causal LMs and checking that two of them can be compared token by token."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from unified_opd.errors import UserError
from unified_opd.zoo import resolve

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_causal_lm(
    path: str, dtype: str, trust_remote_code: bool, field: str
) -> Tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model + tokenizer from a directory (or `zoo:` name); errors name `field`."""
    local = resolve(path, f"{field}.path")
    if not Path(local).is_dir():
        raise UserError(f"{field}.path: expected a model directory, got {path}")
    if dtype not in DTYPES:
        raise UserError(f"{field}.dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        tok = AutoTokenizer.from_pretrained(local, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            local, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{field}.path: cannot load a causal LM from {local}: {str(e).splitlines()[0]}") from e
    if not any(p.is_floating_point() for p in model.parameters()):
        raise UserError(f"{field}.dtype: the model has no floating-point parameters to distil")
    if tok.pad_token_id is None:
        # generation needs a pad id; reusing EOS is the usual convention and is masked out
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return model, tok


def check_same_vocabulary(student_tok, teacher_tok, student_lm, teacher_lm, what: str = "teacher") -> None:
    """A teacher must score the student's token ids: same vocabulary size and same token strings."""
    vs = student_lm.get_output_embeddings().weight.shape[0]
    vt = teacher_lm.get_output_embeddings().weight.shape[0]
    if vs != vt:
        raise UserError(
            f"{what}.path: vocabulary size {vt} differs from the student's {vs}; "
            f"on-policy distillation needs the same tokenizer for student and {what}"
        )
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        a, b = student_tok.get_vocab(), teacher_tok.get_vocab()
        diff = next((k for k in a if b.get(k) != a[k]), None) or next(k for k in b if k not in a)
        raise UserError(
            f"{what}.path: tokenizer differs from the student's (e.g. token {diff!r}); "
            f"on-policy distillation needs the same tokenizer for student and {what}"
        )


def _uses_plain_lm_head(lm: PreTrainedModel) -> bool:
    """True when logits = lm_head(hidden) exactly, so the lazy chunked projection is valid."""
    cfg = lm.config
    scaled = any(getattr(cfg, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logit_scale"))
    head = lm.get_output_embeddings()
    return not scaled and isinstance(head, nn.Linear)


class HiddenStates(nn.Module):
    """Wraps a causal LM so its forward returns what the loss needs, through one module call
    (so a DDP wrapper around it synchronises gradients): the last hidden states when the lazy
    projection is valid, else the full logits."""

    def __init__(self, lm: PreTrainedModel, lazy: bool = True):
        super().__init__()
        self.lm = lm
        self.lazy = lazy and _uses_plain_lm_head(lm)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # generate() derives positions from the attention mask; a plain forward must do the
        # same for left-padded prompts, or teacher and student score different positions
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        if self.lazy:
            return self.lm.base_model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
            ).last_hidden_state
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits

    def head(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        h = self.lm.get_output_embeddings()
        return h.weight, h.bias
