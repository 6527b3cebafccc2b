"""Agent domain: multi-turn on-policy distillation of a causal LM acting in gymnasium text envs.

Registers the `agent` domain (config schema, value checks, builder), the `tcod` and `sod`
per-position weights, and the `keydoor`, `shop` and `toolcalc` zoo entries.
"""

from unified_opd.domain import register_domain

from . import weights  # noqa: F401  (registers tcod and sod)
from . import zoo  # noqa: F401  (registers the zoo entries)
from .build import build
from .config import AgentRunConfig, check

register_domain("agent", AgentRunConfig, build, check, distribution="categorical")
