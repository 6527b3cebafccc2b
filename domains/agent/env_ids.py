"""Which gymnasium env `env.id` names, made once at start-up to check it is a text env.

An id may be

* registered already (`uopd/KeyDoor-v0`, or one the user's code registered in this process);
* gymnasium's `module:Env-v0` form: `module` is imported (it registers `Env-v0`), then the env is
  made by that name, as `gymnasium.make` does;
* `namespace/Env-v0` whose namespace is an importable module that registers it on import (a
  fresh `uopd` process has not imported the user's package yet); only a namespace that is not
  an importable module, or one that registers no such id, is an unknown environment.

The agent acts in strings, so the env's `observation_space` and `action_space` must be
`gymnasium.spaces.Text`; anything else (CartPole's `Box` / `Discrete`) is a ConfigError naming
`env.id` and the spaces found. An env that declares OpenAI-style function tools
(`env.unwrapped.tools`, a list of `{"type": "function", "function": {...}}`) hands them to the
chat template (`transcript.ChatFormat`).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import gymnasium

from unified_opd.errors import ConfigError


def _import(module: str, env_id: str, required: bool) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        # only the module the id names may be missing; an import error inside it is the user's bug
        if not required and e.name == module:
            return
        raise ConfigError(f"env.id: {env_id!r} names module {module!r}, which cannot be imported: {e}") from e
    except Exception as e:  # a module that fails while registering must say so, not "unknown id"
        raise ConfigError(f"env.id: importing {module!r} for {env_id!r} failed: {type(e).__name__}: {e}") from e


def registered_name(env_id: str) -> str:
    """The registry name `env_id` resolves to, importing what the id names; ConfigError if none."""
    import unified_opd.envs  # noqa: F401  (registers the uopd/ ids)

    module, name = env_id.split(":", 1) if ":" in env_id else (None, env_id)
    if module is not None:
        _import(module, env_id, required=True)
    elif name not in gymnasium.registry and "/" in name:
        _import(name.split("/", 1)[0], env_id, required=False)
    if name not in gymnasium.registry:
        ours = sorted(i for i in gymnasium.registry if i.startswith("uopd/"))
        close = difflib.get_close_matches(name, list(gymnasium.registry), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"env.id: unknown environment {env_id!r} ({hint}registered uopd ids: {', '.join(ours)}; "
            "a user env is `package:Env-v0` or an id its package registers on import)"
        )
    return name


def check_text_spaces(env: gymnasium.Env, env_id: str) -> None:
    """ConfigError unless both spaces are `gymnasium.spaces.Text`."""
    spaces = {which: getattr(env, which, None) for which in ("observation_space", "action_space")}
    if not all(isinstance(s, gymnasium.spaces.Text) for s in spaces.values()):
        found = ", ".join(f"{k} {v!r}" for k, v in spaces.items())
        raise ConfigError(
            f"env.id: {env_id} is not a text environment: the agent domain needs observation_space and "
            f"action_space to be gymnasium.spaces.Text (string observations and actions), got {found}"
        )


@dataclass
class EnvMaker:
    """`() -> env` for a checked id, with what the start-up check read off one instance."""

    name: str  # the registry name
    kwargs: Dict[str, Any]
    tools: Optional[List[dict]] = field(default=None)  # OpenAI function schemas the env declares

    def __call__(self) -> gymnasium.Env:
        return gymnasium.make(self.name, disable_env_checker=True, **self.kwargs)


def env_factory(env_id: str, kwargs: Dict[str, Any]) -> EnvMaker:
    """A checked `() -> env`; an unknown id, bad kwargs or a non-text env is a ConfigError naming the field."""
    maker = EnvMaker(registered_name(env_id), dict(kwargs))
    try:
        env = maker()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"env.kwargs: {env_id} rejects {dict(kwargs)}: {e}") from e
    except Exception as e:  # whatever a broken env raises, the user must learn which env it was
        raise ConfigError(f"env.id: {env_id} cannot be created: {type(e).__name__}: {e}") from e
    try:
        check_text_spaces(env, env_id)
        tools = getattr(env.unwrapped, "tools", None)
        maker.tools = list(tools) if tools else None
    finally:
        env.close()
    return maker
