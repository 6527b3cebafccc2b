"""Loading Hugging Face language models (causal or image-text) and checking that two of them
can be compared token by token."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from unified_opd.errors import UserError, require_one_of
from unified_opd.hub import check_hub_model, looks_like_hub_id
from unified_opd.lora import adapter_base, adapter_dir, apply_lora, load_adapter
from unified_opd.zoo import resolve

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_dir(path: str, dtype: str, field: str, revision: Optional[str] = None) -> str:
    """What `from_pretrained` loads for `path`: the local directory of a directory or `zoo:` name, or
    a Hub model id as is (fetched through the Hugging Face cache at `revision`); errors name `field`."""
    if looks_like_hub_id(path):
        check_hub_model(path, revision, f"{field}.path")
        local = path
    else:
        local = resolve(path, f"{field}.path")
        if not Path(local).is_dir():
            raise UserError(f"{field}.path: expected a model directory, got {path}")
    require_one_of(f"{field}.dtype", dtype, DTYPES, error=UserError)
    return local


def load_pretrained(auto_class, local: str, field: str, what: str, errors: Tuple[type, ...] = (OSError, ValueError, KeyError), **kwargs):
    """`auto_class.from_pretrained(local, **kwargs)`; a failure is a UserError naming `field` and `what` it was loading."""
    try:
        return auto_class.from_pretrained(local, **kwargs)
    except errors as e:
        raise UserError(f"{field}.path: cannot load {what} from {local}: {str(e).splitlines()[0]}") from e


def weights_options(dtype: str, trust_remote_code: bool) -> dict:
    """`from_pretrained` options of a model's weights: the dtype, safetensors only."""
    return {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code, "use_safetensors": True}


def prepare_tokenizer(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding, and a pad id (generation needs one; reusing EOS is the usual convention and is masked out)."""
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(
    path: str, dtype: str, trust_remote_code: bool, field: str, revision: Optional[str] = None
) -> Tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model + tokenizer from a directory, `zoo:` name or Hub id (at `revision`); errors name `field`."""
    local = model_dir(path, dtype, field, revision)
    tok = load_pretrained(AutoTokenizer, local, field, "a causal LM", trust_remote_code=trust_remote_code, revision=revision)
    options = weights_options(dtype, trust_remote_code)
    model = load_pretrained(AutoModelForCausalLM, local, field, "a causal LM", revision=revision, **options)
    if not any(p.is_floating_point() for p in model.parameters()):
        raise UserError(f"{field}.dtype: the model has no floating-point parameters to distil")
    return model, prepare_tokenizer(tok)


def load_student(student: Any, load: Callable[[str], Tuple[Any, Any]], field: str = "student") -> Tuple[Any, Any]:
    """The student section's model and preprocessor: `load(path)` (the domain's loader, e.g.
    `load_causal_lm` with the section's dtype) of `student.path`, then `student.lora`'s fresh
    adapters; a PEFT adapter directory as `student.path` loads its base and the adapter, trainable."""
    adapter = adapter_dir(student.path)
    if adapter is None:
        lm, pre = load(student.path)
        return (apply_lora(lm, student.lora, f"{field}.lora") if student.lora.r else lm), pre
    base = adapter_base(adapter, f"{field}.path")
    if not (looks_like_hub_id(base) or Path(base).is_dir()):
        raise UserError(f"{field}.path: the adapter {adapter} was trained on {base}, which is not a model directory here")
    lm, pre = load(base)
    return load_adapter(lm, adapter, student.lora.merge, f"{field}.path"), pre


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


def text_config(lm: PreTrainedModel) -> Any:
    """The config of the language part: multimodal models keep it on `text_config`."""
    return getattr(lm.config, "text_config", None) or lm.config


def max_context(lm: PreTrainedModel) -> int:
    """The model's context length in tokens (0 when it declares none)."""
    return int(getattr(text_config(lm), "max_position_embeddings", 0) or 0)
