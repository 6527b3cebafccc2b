"""Generate TextWorld challenge games once and keep them in a cache directory.

Games are compiled with TextWorld's own challenge generators (the same code `tw-make` runs),
named by challenge, settings and seed, so a (challenge, settings, seed) triple always maps to
the same file and is compiled only the first time it is asked for.
"""

from __future__ import annotations

import contextlib
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
