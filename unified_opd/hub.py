"""Hugging Face Hub names (`owner/name`) and whether the Hub can serve them.

Shared by Hub datasets (`data_sources`) and Hub models (`domains/lm/loading`): one 3 s probe, so
an offline machine fails at once with a one-line error instead of after the libraries' retries.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from .errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(path: str) -> bool:
    """`owner/name` that is not a local path (an existing `models/mine` stays a directory)."""
    return bool(HUB_ID.match(str(path))) and not Path(str(path)).exists()


def hub_unreachable() -> bool:
    """A 3 s probe of the Hub endpoint's port 443."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return False
    except OSError:
        return True


def check_hub_model(repo: str, revision: Optional[str], field: str) -> None:
    """A UserError naming `field` and `repo` when the model can be neither fetched nor read from the cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(repo, "config.json", revision=revision), str)
    if cached or not (constants.HF_HUB_OFFLINE or hub_unreachable()):
        return
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub is unreachable"
    at = f" at revision {revision!r}" if revision else ""
    raise UserError(
        f"{field}: Hub model {repo!r}{at} cannot be fetched: {why} and it is not in the Hugging Face cache; "
        f"download it on a connected machine (huggingface-cli download {repo} --local-dir DIR) and set {field}=DIR"
    )
