"""Game files made by `tw-make`, as a user would make them (needs the textworld package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def tw_make(dest: Path, seed: int) -> Path:
    """A two-room game with a one-step quest, `dest` (a `.z8`, its `.json` and `.ni` beside it)."""
    # beside the interpreter too: a venv's python run without activating the venv has its bin/ off PATH
    tool = shutil.which("tw-make") or shutil.which("tw-make", path=str(Path(sys.executable).parent))
    assert tool, "the textworld package installs tw-make"
    args = ["custom", "--world-size", "2", "--nb-objects", "2", "--quest-length", "1", "--seed", str(seed)]
    subprocess.run([tool, *args, "--output", str(dest), "-f", "--silent"], check=True, capture_output=True)
    return dest
