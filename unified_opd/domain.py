"""Domains plug into the core through one registration.

A domain provides a config schema (a `RunConfig` subclass with its `student`, `teacher`, `data`,
`rollout` and `eval` sections), a `build(cfg, accelerator) -> Components` function and, optionally,
a `check(cfg)` that rejects bad values before anything is loaded. The trainer only sees
`Components`, so it never branches on the domain.

`domain:` in a config is a registered name (`text`), a built-in domain, or a dotted module path
(`mypkg.mydomain`): the module is imported, which registers it, under that path or a short name.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

import torch

from .config import RunConfig
from .errors import ConfigError
from .interfaces import Policy, Teacher
from .registry import Registry

DOMAINS = Registry("domain", "domain")
BUILTIN_DOMAINS = ("text", "diffusion", "agent", "vision")
DISTRIBUTION_KINDS = ("categorical", "gaussian")


@dataclass
class Components:
    """Everything the trainer needs, built by a domain from the config.

    policy / teacher: the student and what it is distilled toward; `reference`: the G-OPD
    reference model (`teacher.reference`), needed when `objective.lam` != 1.
    train_records: the task records `DataStream` draws training batches from.
    evaluate(policy, step) -> metrics on held-out data (accuracy, KL to the teacher, ...);
    it may cache teacher-only figures itself. It runs without gradients, and every random
    generator is restored after it, so what it draws never changes training.
    extra_loss(policy, step) -> (loss, metrics): a domain's additional training term (e.g. a
    regulariser on fixed data), added to the objective's loss of every micro-step; it must run
    the student's forward through `policy.train_module`.
    generators: the domain's own `torch.Generator`s, if it keeps any; the trainer checkpoints and
    restores them with the global ones.

    Resume contract (bit-identical resume): randomness during training is drawn from the global
    Python / NumPy / torch generators (seeded by `trainer.seed`) or from `generators`; all are
    checkpointed. Any other state that changes during training must live in the policy's module,
    the teacher's `state()` or `generators`.
    """

    policy: Policy
    teacher: Teacher
    train_records: List[Any]
    evaluate: Optional[Callable[[Policy, int], Dict[str, float]]] = None
    reference: Optional[Teacher] = None
    summary_keys: List[str] = field(default_factory=list)
    extra_loss: Optional[Callable[[Policy, int], Tuple[Any, Dict[str, float]]]] = None
    generators: List[torch.Generator] = field(default_factory=list)


@dataclass
class Domain:
    """`check(cfg)` raises `ConfigError` for bad values; it runs before any model load or zoo build.
    `distribution` ("categorical" or "gaussian", None: undeclared) is the kind of distribution its
    policy outputs: a divergence not defined for it is a ConfigError at start-up."""

    name: str
    schema: Type[RunConfig]
    build: Callable[..., Components]
    check: Optional[Callable[[Any], None]] = None
    distribution: Optional[str] = None


def register_domain(
    name: str,
    schema: Type[RunConfig],
    build: Callable[..., Components],
    check: Optional[Callable[[Any], None]] = None,
    distribution: Optional[str] = None,
) -> Domain:
    if distribution is not None and distribution not in DISTRIBUTION_KINDS:
        raise ValueError(f"register_domain: distribution must be one of {DISTRIBUTION_KINDS}, got {distribution!r}")
    domain = DOMAINS.register(name, Domain(name, schema, build, check, distribution))
    _REGISTERED_IN[name] = sys._getframe(1).f_globals.get("__name__", "")
    return domain


_REGISTERED_IN: Dict[str, str] = {}  # domain name -> the module whose code registered it


def get_domain(name: str) -> Domain:
    """Look a domain up, importing `unified_opd.domains.<name>` (or a dotted module path) first.

    A module that registers itself under a short name (`register_domain("mydomain", ...)` in
    `mypkg/mydomain.py`) is found by its module path too. An import failure shows the real error.
    """
    if name in DOMAINS:
        return DOMAINS.get(name)
    module = f"unified_opd.domains.{name}" if name in BUILTIN_DOMAINS else name
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module or "." in name or name in BUILTIN_DOMAINS:
            raise _import_error(module, name, e) from e
        return DOMAINS.get(name)  # no such module either: an unknown name, with did-you-mean
    except Exception as e:  # a missing dependency, a syntax error, an error in the module's code
        raise _import_error(module, name, e) from e
    if name in DOMAINS:
        return DOMAINS.get(name)
    found = [d for d, m in _REGISTERED_IN.items() if m == module or m.startswith(module + ".")]
    if len(found) != 1:
        what = "no domain" if not found else "several domains (" + ", ".join(sorted(found)) + ")"
        raise ConfigError(
            f"domain: the module {module!r} registers {what}; it should call "
            f"unified_opd.register_domain(name, schema, build) once"
        )
    return DOMAINS.get(found[0])


def _import_error(module: str, name: str, e: Exception) -> ConfigError:
    return ConfigError(f"domain: cannot import the module {module!r} for domain {name!r}: {type(e).__name__}: {e}")


def checked_domain(cfg: Any) -> Domain:
    """The config's domain, after its `check(cfg)`: every command calls this before `build`."""
    domain = get_domain(cfg.domain)
    if domain.check is not None:
        domain.check(cfg)
    return domain


def schema_for(name: str) -> Type[RunConfig]:
    return get_domain(name).schema
