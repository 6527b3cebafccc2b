"""Registration of the `uopd/` environment ids with gymnasium, and a `make` that explains typos."""

from __future__ import annotations

import difflib

import gymnasium

ENTRY_POINTS = {
    "uopd/KeyDoor-v0": "unified_opd.envs.keydoor:KeyDoorEnv",
    "uopd/Shop-v0": "unified_opd.envs.shop:ShopEnv",
    "uopd/ToolCalc-v0": "unified_opd.envs.toolcalc:ToolCalcEnv",
    "uopd/TextWorld-v0": "unified_opd.envs.textworld_env:TextWorldEnv",
    "uopd/ScienceWorld-v0": "unified_opd.envs.scienceworld_env:ScienceWorldEnv",
}


def register_all() -> None:
    """Register every id once; a second import (or reload) leaves the registry untouched."""
    for env_id, entry_point in ENTRY_POINTS.items():
        if env_id not in gymnasium.registry:
            # Entry points are strings so that TextWorld and ScienceWorld are imported only when their env is made.
            gymnasium.register(id=env_id, entry_point=entry_point, disable_env_checker=False)


def registered_ids() -> list[str]:
    return sorted(i for i in gymnasium.registry if i.startswith("uopd/"))


def make(env_id: str, **kwargs) -> gymnasium.Env:
    """`gymnasium.make` for a registered id; an unknown id is a ValueError listing the `uopd/` ids."""
    if env_id not in gymnasium.registry:
        ids = registered_ids()
        close = difflib.get_close_matches(env_id, ids, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown environment id {env_id!r}.{hint} Registered uopd ids: {', '.join(ids)}")
    return gymnasium.make(env_id, **kwargs)
