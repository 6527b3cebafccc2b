"""Every `trainer.*` value checked before anything is loaded, so a typo costs a second, not a
model load or a zoo build (the schema has already checked the types)."""

from __future__ import annotations

import re
from typing import Callable, Tuple

from omegaconf import DictConfig, OmegaConf

from . import fsdp
from .accelerator import check_trackers
from .callbacks import build_callbacks
from .domain import checked_domain
from .errors import ConfigError, UserError, require_one_of
from .lr_schedule import lr_lambda
from .objective import Objective
from .teacher_config import check_replaced_keys

# field -> (what a valid value satisfies, how the error says it)
_BOUNDS: dict[str, Tuple[Callable[[float], bool], str]] = {
    "max_steps": (lambda v: v >= 0, "an integer >= 0 (0 = no update: the build, e.g. a cold start, then evaluation and export)"),
    "max_time_minutes": (lambda v: v >= 0, "a number >= 0 (0 = no limit)"),
    "lr": (lambda v: v >= 0, "a number >= 0"),
    "weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "warmup_steps": (lambda v: v >= 0, "an integer >= 0"),
    "grad_clip": (lambda v: v >= 0, "a number >= 0 (0 = off)"),
    "grad_accum": (lambda v: v >= 1, "an integer >= 1"),
    "updates_per_rollout": (lambda v: v >= 1, "an integer >= 1"),
    "log_every": (lambda v: v >= 1, "an integer >= 1"),
    "eval_every": (lambda v: v >= 0, "an integer >= 0 (0 = only before and after)"),
    "save_every": (lambda v: v >= 0, "an integer >= 0 (0 = only at the end)"),
    "keep_checkpoints": (lambda v: v >= 0, "an integer >= 0 (0 = all)"),
    "max_nonfinite": (lambda v: v >= 1, "an integer >= 1"),
}
MIXED_PRECISION = ("no", "bf16", "fp16")
_REPO_ID = re.compile(r"^([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def check_trainer(t: DictConfig) -> None:
    """A ConfigError naming the first bad `trainer.*` value; a UserError when `push_to_hub` cannot work."""
    check_replaced_keys(t, "trainer", {"tensorboard": "trainer.report_to (e.g. trainer.report_to=[tensorboard])"})
    for key, (ok, expected) in _BOUNDS.items():
        if not ok(t[key]):
            raise ConfigError(f"trainer.{key}: expected {expected}, got {t[key]}")
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        raise ConfigError(f"trainer.betas: expected two numbers in [0, 1), got {list(t.betas)}")
    require_one_of("trainer.mixed_precision", t.mixed_precision, MIXED_PRECISION)
    check_trackers(t.report_to)
    if t.push_to_hub:
        check_can_push(t.hub_model_id)


def check_can_push(repo: str) -> None:
    """The Hub is reachable and a token is set: otherwise a run would train for hours and then fail to upload."""
    from huggingface_hub import constants, get_token

    from .hub import hub_unreachable

    if repo and not _REPO_ID.match(repo):
        raise ConfigError(f"trainer.hub_model_id: expected a Hub repository id 'owner/name' or 'name', got {repo!r}")
    if constants.HF_HUB_OFFLINE or hub_unreachable():
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub is unreachable"
        raise UserError(f"trainer.push_to_hub: {why}; set trainer.push_to_hub=false and upload {{output_dir}}/final later (hf upload)")
    if get_token() is None:
        raise UserError("trainer.push_to_hub: no Hugging Face token; run `hf auth login` or set HF_TOKEN")


def check_before_loading(cfg: DictConfig):
    """The config's domain, objective and callbacks, every value checked: nothing is loaded yet."""
    t = cfg.trainer
    objective = Objective.from_config(cfg)
    check_trainer(t)
    fsdp.check_request(cfg)
    lr_lambda(t)  # the schedule's name
    callbacks = build_callbacks(list(OmegaConf.to_container(t.callbacks)))
    domain = checked_domain(cfg)
    if domain.distribution is not None:
        objective.divergence.check_kind(domain.distribution)
    return domain, objective, callbacks
