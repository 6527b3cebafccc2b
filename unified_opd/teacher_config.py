"""The one teacher config shape of every domain; a domain's `TeacherConfig` subclasses it.

A domain adds its own fields (the text domain: dtype, view, cache) or narrows a type (diffusion's
`experts` is a list of `{path, classes}`), but the kinds in `teacher_kinds.py` read only these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from .errors import ConfigError


@dataclass
class ServerConfig:
    """kind server (and a URL as any teacher path): how the OpenAI-compatible endpoint is called."""

    model: Optional[str] = None  # the served model id (GET /v1/models); None = the server's only model
    top_k: int = 20  # prompt log-probs per position (vLLM's --max-logprobs defaults to 20); the rest is the tail bucket
    batch_size: int = 16  # sequences per request
    concurrency: int = 2  # requests in flight per URL
    timeout_s: float = 60.0  # per request
    retries: int = 5  # after a connection error, timeout or HTTP 5xx/429: tries beyond the first, each on the next URL
    backoff_s: float = 1.0  # wait before retry i: backoff_s * 2^i, at most 30 s


@dataclass
class TeacherConfig:
    kind: str = "model"  # model | self | router | pool | best_of | server, plus a domain's own (registry unified_opd/teacher_kinds.py)
    path: Optional[str] = None  # a teacher model (kind model; the default route of a router)
    reference: Optional[str] = None  # G-OPD reference: a model path, or "student" (frozen copy of the initial student)
    ema: float = 0.0  # kind self: 0 = the live student; in (0, 1) = an EMA copy with this decay; 1 = a frozen copy
    experts: Dict[str, str] = field(default_factory=dict)  # kind router: task tag -> model path
    members: List[str] = field(default_factory=list)  # kind pool / best_of: model paths
    weights: List[float] = field(default_factory=list)  # kind pool: fixed log-linear weights, one per member (empty: equal)
    pool_rule: str = "fixed"  # kind pool: fixed | confidence (per-position softmax of -entropy / temperature)
    confidence_temperature: float = 1.0
    select: str = "verifier"  # kind best_of: verifier (greedy answer correct, ties by likelihood) | likelihood
    urls: List[str] = field(default_factory=list)  # kind server: teacher endpoints (http://host:port), taken in turn
    server: ServerConfig = field(default_factory=ServerConfig)


def check_server(t: Any) -> None:
    """Value checks of `teacher.urls` and `teacher.server` (nothing is contacted here)."""
    for i, url in enumerate(t.urls):
        if not str(url).startswith(("http://", "https://")):
            raise ConfigError(f"teacher.urls[{i}]: expected http://host:port or https://..., got {url!r}")
    s = t.server
    for key in ("top_k", "batch_size", "concurrency"):
        if s[key] < 1:
            raise ConfigError(f"teacher.server.{key}: expected a positive integer, got {s[key]}")
    if s.timeout_s <= 0 or s.retries < 0 or s.backoff_s < 0:
        raise ConfigError("teacher.server: expected timeout_s > 0, retries >= 0 and backoff_s >= 0, "
                          f"got {s.timeout_s}, {s.retries}, {s.backoff_s}")


def check_replaced_keys(section: Any, prefix: str, replaced: Mapping[str, str]) -> None:
    """A key a schema keeps only to say what replaced it (typed `Any`, default None) must be unset."""
    for key, new in replaced.items():
        if section.get(key) is not None:
            raise ConfigError(f"{prefix}.{key} was replaced by {new}")
