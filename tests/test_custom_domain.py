"""`examples/custom_domain.py` used as the README says: a module outside the package, named by
its dotted path in a config, trained through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_domain.py"


@pytest.fixture
def user_dir(tmp_path):
    """A user's project: `mypkg/custom_domain.py` (the example), a module that cannot import, a config."""
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    shutil.copy(EXAMPLE, pkg / "custom_domain.py")
    (pkg / "broken.py").write_text("import not_a_real_dependency  # noqa: F401\n")
    (tmp_path / "reach.yaml").write_text(
        "domain: mypkg.custom_domain\n"
        "divergence: {name: kl}\n"
        "trainer: {max_steps: 40, lr: 0.01, save_every: 10, log_every: 10}\n"
    )
    return tmp_path


def _uopd(user_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user_dir), str(EXAMPLE.parent)]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "unified_opd.cli", *args], capture_output=True, text=True, cwd=user_dir, env=env, timeout=600
    )


def _train(user_dir: Path, out: Path, *overrides: str) -> dict:
    r = _uopd(user_dir, "train", "reach.yaml", f"trainer.output_dir={out}", *overrides)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_trains_toward_the_teacher_and_resumes_bit_identically(user_dir):
    whole = _train(user_dir, user_dir / "whole")
    assert whole["steps"] == 40
    assert whole["after"]["kl_to_teacher"] < 0.5 * whole["before"]["kl_to_teacher"]
    assert whole["after"]["distance"] < whole["before"]["distance"]
    # the same run in two launches: 20 steps (with its final evaluation, which draws from the
    # domain's generator), then resumed to 40 from the step-20 checkpoint
    _train(user_dir, user_dir / "split", "trainer.max_steps=20")
    second = _train(user_dir, user_dir / "split")
    assert second["steps"] == 40
    for name in ("model.safetensors",):
        assert (user_dir / "whole" / "final" / name).read_bytes() == (user_dir / "split" / "final" / name).read_bytes()
    assert second["after"] == whole["after"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("student.hiden=8", "student.hiden: unknown config key"),  # the example's own schema
        ("rollout.horizon=0", "rollout.horizon: expected a positive number"),  # its check hook
        ("divergence.name=jsd", "divergence.name: 'jsd' is not defined for gaussian distributions"),
        ("domain=mypkg.broken", "No module named 'not_a_real_dependency'"),
        ("domain=mypkg.nothing_here", "No module named 'mypkg.nothing_here'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(user_dir, override, message):
    out = user_dir / "bad"
    r = _uopd(user_dir, "train", "reach.yaml", f"trainer.output_dir={out}", override)
    assert r.returncode == 2, r.stderr[-3000:]
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()  # rejected before anything was written


def test_the_short_module_name_and_eval_work_too(user_dir):
    r = _uopd(user_dir, "eval", "reach.yaml", "domain=custom_domain")  # examples/ on the path, as in its docstring
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(json.loads(r.stdout)) == {"kl_to_teacher", "distance", "sampled_distance"}
