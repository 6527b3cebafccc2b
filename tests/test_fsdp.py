"""FSDP / DeepSpeed launches: accelerate applies them only to GPU processes and on CPU falls back
to DDP silently, and sharded students are not yet gathered for rollouts and checkpoints, so a
launch that asks for either stops at start-up with a one-line error naming what happened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.utils import DistributedType

from conftest import text_overrides
from unified_opd.errors import UserError
from unified_opd.accelerator import check_engine

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


@pytest.mark.parametrize("variable, name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_a_requested_engine_that_accelerate_did_not_apply_is_an_error(variable, name):
    with pytest.raises(UserError, match=f"the config asks for {name}, but accelerate runs MULTI_CPU here"):
        check_engine(DistributedType.MULTI_CPU, {variable: "true"})


def test_an_applied_sharding_engine_is_an_error_until_rollouts_gather_it():
    with pytest.raises(UserError, match="FSDP sharding of the student is not supported yet"):
        check_engine(DistributedType.FSDP, {"ACCELERATE_USE_FSDP": "true"})


def test_ddp_and_single_process_launches_pass():
    check_engine(DistributedType.MULTI_CPU, {"ACCELERATE_USE_FSDP": "false"})
    check_engine(DistributedType.NO, {})


@pytest.mark.slow
def test_the_shipped_fsdp2_config_on_two_cpu_processes_stops_before_loading(tiny_text, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("domain: text\n")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp2.yaml"),
        "-m", "unified_opd.cli", "train", str(config), *text_overrides(tiny_text, tmp_path / "run", **{"trainer.cpu": True}),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode != 0
    said = " ".join(r.stderr.split())  # the console wraps long lines
    assert "the config asks for FSDP, but accelerate runs MULTI_CPU here" in said, r.stderr[-2000:]
    assert "Loading weights" not in r.stderr and not (tmp_path / "run").exists()
