"""LoRA students through PEFT, for any domain whose student is a torch module (a transformers or
diffusers model): the `student.lora` schema and its checks, `apply_lora`, a PEFT adapter
directory as `student.path`, the adapter-only checkpoint state, and the frozen base (adapters
disabled) as a teacher at no extra memory.

A LoRA layer computes W·x + (α / r)·B·A·x with W frozen and A [r, in], B [out, r] trained; B
starts at zero, so a fresh adapter's student is exactly its base model.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .distributions import Distribution
from .errors import ConfigError, UserError
from .interfaces import Teacher
from .rollout import Rollout

ADAPTER_CONFIG = "adapter_config.json"
ALL_LINEAR = "all-linear"
MERGED = "merged"  # final/merged/: the base with the adapter merged in, a plain model directory


@dataclass
class LoraConfig:
    """`student.lora`: train low-rank adapters (PEFT) instead of the student's weights."""

    r: int = 0  # adapter rank; 0 = no LoRA (every weight is trained)
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter's input during training
    # module names (or name suffixes) to adapt; all-linear = every linear layer except the output head
    target_modules: List[str] = field(default_factory=lambda: [ALL_LINEAR])
    merge: bool = False  # final/ holds the adapter; with merge also final/merged/, the merged model (plain transformers)


def adapter_dir(path: Optional[str]) -> Optional[Path]:
    """`path` as a local PEFT adapter directory (it holds adapter_config.json), else None."""
    if not path:
        return None
    p = Path(str(path))
    return p if (p / ADAPTER_CONFIG).is_file() else None


def adapter_base(adapter: Path, field: str) -> str:
    """The base model an adapter directory was trained on (its `base_model_name_or_path`)."""
    try:
        base = json.loads((adapter / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise UserError(f"{field}: cannot read {adapter / ADAPTER_CONFIG}: {e}") from e
    if not base:
        raise UserError(f"{field}: {adapter / ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    return str(base)


def _peft(field: str):
    try:
        import peft
    except ImportError as e:
        raise ConfigError(f"{field}: LoRA needs peft, which is not installed (pip install 'unified_opd[lora]')") from e
    return peft


def check_lora(student: Any, field: str = "student") -> None:
    """Value checks of `student.lora` (and of an adapter directory as `student.path`), before any load."""
    cfg, where = student.lora, f"{field}.lora"
    if cfg.r < 0:
        raise ConfigError(f"{where}.r: expected 0 (off) or a rank >= 1, got {cfg.r}")
    if cfg.alpha <= 0:
        raise ConfigError(f"{where}.alpha: expected a number > 0, got {cfg.alpha}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"{where}.dropout: expected a probability in [0, 1), got {cfg.dropout}")
    if not cfg.target_modules or not all(isinstance(m, str) and m for m in cfg.target_modules):
        raise ConfigError(f"{where}.target_modules: expected a list of module names or [{ALL_LINEAR}], got {list(cfg.target_modules)}")
    # a domain whose student section has no `path` (built in code) still has `lora`
    adapter = adapter_dir(getattr(student, "path", None))
    if adapter is not None and cfg.r:
        raise ConfigError(
            f"{where}.r: {field}.path is a PEFT adapter, which sets its own rank and targets; leave {where}.r at 0 to train it further"
        )
    if cfg.r or adapter is not None:
        _peft(f"{where}.r" if cfg.r else f"{field}.path")


def apply_lora(model: nn.Module, cfg: Any, field: str = "student.lora") -> nn.Module:
    """`model` with fresh LoRA adapters (PEFT `get_peft_model`): only the adapters are trainable.

    Any domain calls it on its loaded student (a transformers or diffusers model, or any torch
    module with the named linear layers)."""
    peft = _peft(f"{field}.r")
    targets = list(cfg.target_modules)
    spec = peft.LoraConfig(
        r=int(cfg.r), lora_alpha=float(cfg.alpha), lora_dropout=float(cfg.dropout),
        target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else targets,
    )
    try:
        adapted = peft.get_peft_model(model, spec)
    except ValueError as e:
        raise UserError(f"{field}.target_modules: {str(e).splitlines()[0]}") from e
    adapted.merge_on_save = bool(cfg.merge)
    return adapted


def load_adapter(model: nn.Module, adapter: Path, merge: bool, field: str = "student.path") -> nn.Module:
    """`model` (the adapter's base) with the trained adapter at `adapter` loaded, trainable."""
    peft = _peft(field)
    try:
        adapted = peft.PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"{field}: cannot load the PEFT adapter {adapter}: {str(e).splitlines()[0]}") from e
    adapted.merge_on_save = bool(merge)
    return adapted


def adapted_model(module: nn.Module) -> Optional[nn.Module]:
    """The PEFT model inside `module` (the student's module, e.g. a wrapper of the LM), or None."""
    return next((m for m in module.modules() if hasattr(m, "disable_adapter") and hasattr(m, "peft_config")), None)


def inner_model(model: nn.Module) -> nn.Module:
    """The transformers / diffusers model under a PEFT wrapper (the same object, with the LoRA
    layers in place), else `model` itself."""
    return model.get_base_model() if hasattr(model, "peft_config") else model


def is_fresh(adapted: nn.Module) -> bool:
    """True when every adapter's B is zero, so the adapted model computes exactly its base."""
    return all(not p.any() for n, p in adapted.named_parameters() if "lora_B" in n)


def save_adapted(model: nn.Module, path: str) -> Optional[nn.Module]:
    """Write `model` to `path` (the adapter only, when it is a PEFT model); returns the merged
    model to write beside it when `student.lora.merge` asked for one, else None.

    The merge runs on a copy, so the student keeps training (or evaluating) unmerged."""
    model.save_pretrained(path)
    if not getattr(model, "merge_on_save", False):
        return None
    return copy.deepcopy(model).merge_and_unload()


def checkpoint_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    """What a checkpoint stores of the student: its whole state, or with LoRA only the trainable
    tensors (the adapter), since the frozen base is reloaded from `student.path`."""
    state = module.state_dict()
    if adapted_model(module) is None:
        return state
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state.items() if k in trainable}


def load_checkpoint_state(module: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """The inverse of `checkpoint_state`: a LoRA checkpoint must hold every trainable tensor and
    nothing else (a RuntimeError otherwise, like `load_state_dict`'s)."""
    if adapted_model(module) is None:
        module.load_state_dict(state)
        return
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    if set(state) != trainable:
        missing, unexpected = sorted(trainable - set(state)), sorted(set(state) - trainable)
        raise RuntimeError(f"LoRA checkpoint mismatch: missing {missing[:2]}, unexpected {unexpected[:2]}")
    module.load_state_dict(state, strict=False)


class BaseModelTeacher(Teacher):
    """The student with its adapters disabled: the frozen base model, scored by `view` (the
    domain's scorer of the student's own `module`), with no copy of any weight."""

    def __init__(self, view: Teacher, module: nn.Module, adapted: nn.Module):
        self.view, self.module, self.adapted = view, module, adapted

    def distribution(self, rollout: Rollout) -> Distribution:
        # eval mode, as a frozen copy would be: the base's own dropout must not fire; a lazy
        # distribution keeps hidden states and the output head, which LoRA leaves as it is (an
        # adapted head is no plain linear layer, so the scorer returns full logits instead)
        training = self.module.training
        self.module.eval()
        try:
            with self.adapted.disable_adapter():
                return self.view.distribution(rollout)
        finally:
            self.module.train(training)
