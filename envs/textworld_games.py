"""Generate TextWorld challenge games once and keep them in a cache directory.

Games are compiled with TextWorld's own challenge generators (the same code `tw-make` runs),
named by challenge, settings and seed, so a (challenge, settings, seed) triple always maps to
the same file and is compiled only the first time it is asked for. `user_games` checks game
files the user brings (`game_file`, `games_dir`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
import warnings

INSTALL_HINT = "TextWorld environments need the textworld package: pip install unified_opd[textworld]"

DEFAULT_SETTINGS = {
    "tw-simple": {"rewards": "dense", "goal": "detailed", "test": False},
    "tw-coin_collector": {"level": 1},
    "tw-treasure_hunter": {"level": 1},
}


def require_textworld():
    """The textworld module, or an ImportError that says how to install it."""
    try:
        import textworld
        import textworld.challenges
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return textworld


@contextlib.contextmanager
def quiet_jericho():
    """Hide jericho's "unsupported game" warnings, expected for every TextWorld game.

    TextWorld silences them globally at import, but pytest and `warnings.catch_warnings()`
    reset the filters.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unable to find valid actions")
        warnings.filterwarnings("ignore", message=".*is not fully supported")
        yield


def default_cache_dir() -> str:
    return os.environ.get("UOPD_TEXTWORLD_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "unified_opd", "textworld"
    )


def game_file(challenge: str, settings: dict, seed: int, cache_dir: str) -> str:
    """Path of the compiled game (.z8, with its .json beside it), generating it if missing."""
    textworld = require_textworld()
    if challenge not in textworld.challenges.CHALLENGES:
        known = ", ".join(sorted(textworld.challenges.CHALLENGES))
        raise ValueError(f"unknown TextWorld challenge {challenge!r}; available: {known}")
    tag = "_".join(f"{k}-{v}" for k, v in sorted(settings.items()))
    name = re.sub(r"[^A-Za-z0-9_.-]", "", f"{challenge}_{tag}_seed{seed}")
    path = os.path.join(cache_dir, name + ".z8")
    if os.path.exists(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    # Compile in a private directory and move the files into place, .z8 last: a .z8 in the
    # cache is then always complete, even with several processes generating at once.
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp, quiet_jericho():
        options = textworld.GameOptions()
        options.seeds = seed
        options.path = os.path.join(tmp, name + ".z8")
        options.file_ext = ".z8"
        options.force_recompile = True
        make = textworld.challenges.CHALLENGES[challenge][1]
        game = make(settings=dict(settings), options=options)
        compiled = textworld.generator.compile_game(game, options)
        os.replace(os.path.splitext(compiled)[0] + ".json", os.path.splitext(path)[0] + ".json")
        os.replace(compiled, path)
    return path


_Z_MACHINE = re.compile(r"\.z[1-8]$")


def _check_game(path: str, field: str, admissible_commands: bool) -> str:
    if path.endswith(".ulx"):
        raise ValueError(f"{field}: {path} is a Glulx game, which TextWorld >= 1.7 cannot run; make a .z8 (tw-make's default)")
    if not _Z_MACHINE.search(path):
        raise ValueError(f"{field}: expected a Z-machine game file (.z1-.z8, e.g. made by tw-make), got {path}")
    if not os.path.isfile(path):
        raise ValueError(f"{field}: no such game file {path}")
    if admissible_commands and not os.path.isfile(os.path.splitext(path)[0] + ".json"):
        raise ValueError(
            f"{field}: {path} has no TextWorld metadata beside it ({os.path.splitext(path)[0]}.json, written by tw-make), "
            "which the admissible commands and the expert need; set admissible_commands=False to play it by free text"
        )
    return os.path.abspath(path)


def user_games(game_file: str | None, games_dir: str | None, admissible_commands: bool) -> list[str] | None:
    """The checked game files named by `game_file` or found in `games_dir` (sorted), or None when
    neither is set (the challenge generator's pool is used); ValueError naming the kwarg otherwise."""
    if game_file and games_dir:
        raise ValueError("game_file and games_dir: give one of them, not both")
    if game_file:
        return [_check_game(str(game_file), "game_file", admissible_commands)]
    if not games_dir:
        return None
    if not os.path.isdir(games_dir):
        raise ValueError(f"games_dir: no such directory {games_dir}")
    files = sorted(f for f in glob.glob(os.path.join(games_dir, "*")) if _Z_MACHINE.search(f))
    if not files:
        raise ValueError(f"games_dir: {games_dir} holds no .z1-.z8 game files")
    return [_check_game(f, "games_dir", admissible_commands) for f in files]
