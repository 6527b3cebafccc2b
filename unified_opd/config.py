"""Run configuration: an omegaconf YAML plus dotted `key=value` overrides, checked against a schema.

The schema is a dataclass: the core sections below (`divergence`, `objective`, `trainer`) plus
the sections a domain registers (`student`, `teacher`, `data`, `rollout`, `eval`, ...). Unknown
keys, wrong types and missing required values raise `ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Type

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    ConfigTypeError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from .errors import ConfigError


@dataclass
class DivergenceConfig:
    """Which divergence compares student and teacher at each position."""

    name: str = "reverse_kl"  # reverse_kl | forward_kl | jsd | tv | skew_kl | skew_reverse_kl | kl
    beta: float = 0.5  # jsd: weight of the teacher in the mixture (0 = forward KL, 1 = reverse KL)
    alpha: float = 0.1  # skew_kl / skew_reverse_kl: skew of the mixture
    temperature: float = 1.0  # both distributions' logits are divided by it


@dataclass
class ObjectiveConfig:
    """How the per-position values become a loss."""

    estimator: str = "auto"  # auto | sampled | analytic | supervised (auto: sampled for reverse KL on tokens; supervised: SeqKD)
    lam: float = 1.0  # G-OPD reward scale λ; target ∝ teacher^λ · reference^(1-λ); needs a reference if != 1
    baseline: str = "none"  # none | reverse_kl (vOPD control variate, sampled estimator only)
    clip_eps: float = 0.2  # importance-ratio clip when a rollout is reused
    discount: float = 0.0  # sampled estimator: γ of the return G_t = A_t + γ·G_{t+1} (0 = per-token advantage, 1 = return-to-go)
    weights: List[Any] = field(default_factory=list)  # per-position weights: names or {name: ..., options}
    baseline_top_k: int = 0  # vOPD baseline over the student's top-k tokens (0 = full vocabulary)
    lam_rule: str = "constant"  # constant | tv_adaptive (per-token k = clip(lam_tv / TV(teacher, ref), 1, lam))
    lam_tv: float = 0.1  # tv_adaptive: the TV distance δ at which extrapolation stops
    outcome_advantage: str = "none"  # none | grpo | reward: adds the term −c·w_o·sg(A_i)·log π_θ(a_t)
    outcome_coef: float = 1.0  # c, the outcome term's coefficient
    outcome_weights: List[Any] = field(default_factory=list)  # weights of the outcome term (same registry)


@dataclass
class TrainerConfig:
    """The training loop, checkpoints and logging."""

    max_steps: int = 200
    max_time_minutes: float = 0.0  # stop after this much training wall-clock time, summed over resumes (0 = no limit)
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant | linear | cosine (after warm-up; ends with max_steps or the time budget)
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    grad_accum: int = 1  # micro-steps (rollout batches) per optimiser step
    updates_per_rollout: int = 1  # optimiser updates on each step's rollouts (PPO epochs); >1 reuses them with objective.clip_eps
    seed: int = 0
    output_dir: str = "runs/opd"
    log_every: int = 1
    eval_every: int = 0  # 0 = evaluate only before and after training
    save_every: int = 100  # checkpoint period in steps (0 = only at the end)
    keep_checkpoints: int = 2  # newest complete checkpoints kept (0 = all)
    resume: str = "auto"  # auto (latest complete checkpoint if any) | never | path to a checkpoint
    # no | bf16 | fp16: accelerate's autocast of the student's forward; the weights and AdamW's state
    # stay in student.dtype, so float32 weights with bf16 here is training in bf16 with fp32 master weights
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False  # recompute the student's activations in the backward pass (less memory, ~1/3 more compute)
    cpu: bool = False  # CPU processes even when a GPU is present (a machine without GPUs always runs on CPU)
    max_nonfinite: int = 3  # consecutive non-finite losses skipped before the run stops
    profile: bool = False  # print a per-phase timing table at the end
    report_to: List[str] = field(default_factory=list)  # accelerate trackers: tensorboard, wandb, mlflow, ... (metrics.jsonl always)
    project: str = "unified_opd"  # the trackers' project name (W&B project; the run is named after output_dir)
    push_to_hub: bool = False  # upload final/ (model card included) to the Hugging Face Hub at the end
    hub_model_id: str = ""  # the Hub repository for push_to_hub (default: output_dir's name under your account)
    hub_private: bool = True  # create that repository private
    tensorboard: Any = None  # replaced by trainer.report_to
    callbacks: List[Any] = field(default_factory=list)  # after-step hooks: names or {name: ..., options} (unified_opd.callbacks)


@dataclass
class RunConfig:
    """Top level. Domains subclass it and give `student`, `teacher`, `data`, `rollout`, `eval` types."""

    domain: str = "text"
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


_OVERRIDE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_\d][\w]*)*=")


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for o in overrides:
        if not _OVERRIDE.match(o):
            raise ConfigError(f"override {o!r}: expected dotted.key=value (e.g. trainer.max_steps=200)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError(f"overrides: {e}") from e


def read_yaml(path: str, _including: Tuple[Path, ...] = ()) -> DictConfig:
    """A YAML config, with its `defaults:` merged under it.

    `defaults: [base.yaml, ...]` (paths relative to the file) are read first, in order, each with
    its own defaults; the file's own keys then override theirs (a list replaces a list). So a
    recipe holds only what differs from its base."""
    p = Path(path)
    where = f"{_including[-1]}: defaults" if _including else "config"
    if not p.is_file():
        raise ConfigError(f"{where}: file not found: {path}")
    if p.resolve() in _including:
        chain = " -> ".join(str(x) for x in (*_including, p.resolve()))
        raise ConfigError(f"{where}: the defaults form a cycle: {chain}")
    try:
        cfg = OmegaConf.load(p)
    except Exception as e:  # yaml errors come in several classes; all mean the same to the user
        raise ConfigError(f"config: {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config: {path} must hold a mapping at the top level")
    if "defaults" not in cfg:
        return cfg
    bases = cfg.pop("defaults")
    bases = [bases] if isinstance(bases, str) else bases
    if not (isinstance(bases, (ListConfig, list)) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: defaults: expected a list of YAML file paths relative to the config, got {bases!r}")
    chain = (*_including, p.resolve())
    return OmegaConf.merge(*(read_yaml(str(p.parent / b), chain) for b in bases), cfg)


def _type_name(schema_cls: Type, dotted: str) -> str:
    """The declared type of a dotted key in the schema, for error messages."""
    cls: Any = schema_cls
    typ: Any = None
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls):
            return ""
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return ""
        typ = cls = hints[part]
    return getattr(typ, "__name__", str(typ)).replace("typing.", "")


def _key(e: OmegaConfBaseException) -> str:
    full = getattr(e, "full_key", None)
    if full:
        return str(full)
    m = re.search(r"full_key: ([^\n]+)", str(e))
    return m.group(1).strip() if m else "config"


def build_config(schema: Type, *sources: DictConfig) -> DictConfig:
    """Merge `sources` onto the schema in struct mode, turning omegaconf errors into ConfigError."""
    base = OmegaConf.structured(schema)
    try:
        merged = OmegaConf.merge(base, *sources)
        OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except (ConfigAttributeError, ConfigKeyError) as e:
        key = _key(e)
        raise ConfigError(f"{key}: unknown config key (check the spelling; see README's config table)") from e
    except MissingMandatoryValue as e:
        raise ConfigError(f"{_key(e)}: required value is missing") from e
    except (ValidationError, ConfigTypeError) as e:
        key = _key(e)
        expected = _type_name(schema, key)
        value = getattr(e, "value", None)
        what = f"expected {expected}" if expected else "wrong type"
        got = f", got {value!r}" if value is not None else ""
        raise ConfigError(f"{key}: {what}{got}") from e
    except OmegaConfBaseException as e:
        raise ConfigError(f"{_key(e)}: {str(e).splitlines()[0]}") from e
    return merged


def load_config(path: Optional[str], overrides: Sequence[str] = (), schema_for=None) -> DictConfig:
    """Read YAML + overrides, pick the domain's schema by the `domain` key, validate, return.

    `schema_for(domain_name) -> dataclass type` comes from the domain registry.
    """
    raw = read_yaml(path) if path else OmegaConf.create({})
    over = parse_overrides(overrides)
    domain = OmegaConf.select(over, "domain", default=None) or raw.get("domain", "text")
    schema = schema_for(str(domain)) if schema_for else RunConfig
    return build_config(schema, raw, over)
