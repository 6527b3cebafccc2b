"""Domains plug into the core through one registration.

A domain provides a config schema (a `RunConfig` subclass with its `student`, `teacher`, `data`,
`rollout` and `eval` sections) and a `build(cfg, accelerator) -> Components` function. The
trainer only sees `Components`, so it never branches on the domain.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from .config import RunConfig
from .errors import ConfigError
from .interfaces import Policy, Teacher
from .registry import Registry

DOMAINS = Registry("domain", "domain")
BUILTIN_DOMAINS = ("text", "diffusion", "agent", "vision")


@dataclass
class Components:
    """Everything the trainer needs, built by a domain from the config.

    evaluate(policy, step) -> metrics on held-out data (accuracy, KL to the teacher, ...);
    it may cache teacher-only figures itself.
    extra_loss(policy, step) -> (loss, metrics): a domain's additional training term (e.g. a
    regulariser on fixed data), added to the objective's loss of every micro-step; it must run
    the student's forward through `policy.train_module`.
    """

    policy: Policy
    teacher: Teacher
    train_records: List[Any]
    evaluate: Optional[Callable[[Policy, int], Dict[str, float]]] = None
    reference: Optional[Teacher] = None
    summary_keys: List[str] = field(default_factory=list)
    extra_loss: Optional[Callable[[Policy, int], Tuple[Any, Dict[str, float]]]] = None


@dataclass
class Domain:
    """`check(cfg)` raises `ConfigError` for bad values; it runs before any model load or zoo build."""

    name: str
    schema: Type[RunConfig]
    build: Callable[..., Components]
    check: Optional[Callable[[Any], None]] = None


def register_domain(
    name: str, schema: Type[RunConfig], build: Callable[..., Components], check: Optional[Callable[[Any], None]] = None
) -> Domain:
    return DOMAINS.register(name, Domain(name, schema, build, check))


def get_domain(name: str) -> Domain:
    """Look a domain up, importing `unified_opd.domains.<name>` (or a dotted module path) first."""
    if name not in DOMAINS:
        module = f"unified_opd.domains.{name}" if name in BUILTIN_DOMAINS else name
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if name in BUILTIN_DOMAINS or "." in name:
                raise ConfigError(f"domain: cannot import the module for domain {name!r}: {e}") from e
    return DOMAINS.get(name)


def schema_for(name: str) -> Type[RunConfig]:
    return get_domain(name).schema
