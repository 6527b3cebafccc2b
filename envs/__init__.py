"""Gymnasium text environments for multi-turn agent distillation.

Importing this package registers `uopd/KeyDoor-v0`, `uopd/Shop-v0`, `uopd/ToolCalc-v0`,
`uopd/TextWorld-v0` and `uopd/ScienceWorld-v0` (the last two need `pip install
unified_opd[textworld]` / `unified_opd[scienceworld]` when made). Each env
has string observations and actions, a `max_turns` truncation, `info["success"]`, and a scripted
expert: `expert_action(env)` (or `env.unwrapped.expert_action()`, also in
`info["expert_action"]` while the episode runs). Each module's docstring gives its grammar.
"""

from .registry import make, register_all, registered_ids
from .text_env import CHARSET, TextEnv, expert_action, text_space

register_all()

__all__ = ["CHARSET", "TextEnv", "expert_action", "make", "registered_ids", "text_space"]
