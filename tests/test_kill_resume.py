"""SIGKILL a training run at random points, resume it with `trainer.resume=auto`, and check it
ends bit-identical to an uninterrupted run with the same seed; kill a run inside a checkpoint
save and check the previous checkpoint still counts and resumes.

Runs are subprocesses of the real CLI, so a kill lands wherever the process is: mid-step,
mid-eval or mid-save. Bit-identity only holds if a checkpoint brings back everything later steps
depend on (model, optimizer, scheduler, every RNG, data position, teacher state): a different
sampled rollout or batch after a resume changes every later weight.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Sequence

import pytest
import torch
from safetensors.torch import load_file

from conftest import text_overrides
from test_agent_e2e import _overrides as agent_overrides
from test_agent_e2e import tiny_agents  # noqa: F401  (fixture)
from test_diffusion_e2e import models  # noqa: F401  (fixture)
from test_diffusion_e2e import overrides as diffusion_overrides
from unified_opd import checkpoint
from unified_opd.cli import main

MAX_STEPS, SAVE_EVERY = 12, 2
TIMEOUT = 1200  # seconds for one launch: generous, the CPU may be shared
COMMON = [
    f"trainer.max_steps={MAX_STEPS}",
    f"trainer.save_every={SAVE_EVERY}",
    "trainer.log_every=1",  # the kill points are found in metrics.jsonl
    "trainer.keep_checkpoints=2",
    "trainer.max_time_minutes=0",
]
TEXT = {"eval.size": 8, "eval.batch_size": 8}


def _domain_config(domain: str) -> Callable[[Path], str]:
    def write(tmp: Path) -> str:
        path = tmp / f"{domain}.yaml"
        path.write_text(f"domain: {domain}\n")
        return str(path)

    return write


# domain -> (fixture with the tiny models, config file(tmp), overrides(models, out))
RUNS = {
    "text": ("tiny_text", lambda tmp: "configs/text/opd_arith.yaml", lambda m, out: text_overrides(m, out, **TEXT)),
    # the EMA self-teacher's weights are teacher state in the checkpoint
    "text-ema": (
        "tiny_text",
        lambda tmp: "configs/text/opsd_ema_arith.yaml",
        lambda m, out: text_overrides(m, out, **TEXT, **{"teacher.kind": "self", "teacher.ema": 0.9}),
    ),
    # the anchor draws its batches from a (seed, step) generator; the cold start runs again on
    # every start before the checkpoint overwrites its result
    "diffusion": (
        "models",
        _domain_config("diffusion"),
        lambda m, out: diffusion_overrides(m, out, "anchor.weight=0.1", "anchor.samples_per_class=4", "cold_start.steps=2"),
    ),
    # data records are env seeds; TCOD's curriculum depends on the step
    "agent": (
        "tiny_agents",
        _domain_config("agent"),
        lambda m, out: agent_overrides(
            m, out, **{"eval.episodes": 2, "eval.batch_size": 2, "objective.weights": "[{name: tcod, k0: 1, k_max: 2, ramp: 0.5}]"}
        ),
    ),
}


class Run:
    """One configured run in `out`, launched as `python -m unified_opd.cli train ...` (or through
    `driver`, a `python -c` program taking the same arguments) as often as needed."""

    def __init__(self, domain: str, models: Path, out: Path, driver: Sequence[str] = ()):
        _, config, overrides = RUNS[domain]
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.driver = list(driver) or ["-m", "unified_opd.cli", "train"]
        self.args = [config(out.parent), *overrides(models, out), *COMMON]
        self.launches = 0

    def start(self) -> subprocess.Popen:
        self.launches += 1
        self.log = self.out.parent / f"{self.out.name}.{self.launches}.log"
        # one thread: these models are tiny, and a shared CPU makes more threads slower
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(self.log, "w") as log:
            return subprocess.Popen([sys.executable, *self.driver, *self.args], stdout=subprocess.DEVNULL, stderr=log, env=env)

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def to_the_end(self, in_process: bool = False) -> None:
        """Run to max_steps; `in_process` saves a subprocess start where the launch itself is not
        under test (the same CLI and thread count, so the same bits)."""
        if not in_process:
            proc = self.start()
            assert proc.wait(timeout=TIMEOUT) == 0, self.tail()
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert main(["train", *self.args]) == 0
        finally:
            torch.set_num_threads(threads)

    def start_and_wait_for(self, step: int) -> subprocess.Popen:
        """Launch, and return once this launch has logged training step `step`."""
        metrics = self.out / "metrics.jsonl"
        offset = metrics.stat().st_size if metrics.exists() else 0
        proc = self.start()
        deadline = time.monotonic() + TIMEOUT
        while _last_logged_step(metrics, offset) < step:
            assert proc.poll() is None, f"the run ended before step {step}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no step {step} after {TIMEOUT} s:\n{self.tail()}"
            time.sleep(0.005)
        return proc

    def kill_after(self, step: int, delay: float) -> None:
        """SIGKILL the run `delay` seconds after it logs `step`."""
        proc = self.start_and_wait_for(step)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        # a run that finished before the signal would make this kill point a no-op
        assert proc.wait(timeout=60) == -signal.SIGKILL, f"the run ended before the kill:\n{self.tail()}"

    def summary(self) -> Dict:
        return json.loads((self.out / "summary.json").read_text())


def _last_logged_step(metrics: Path, offset: int) -> int:
    """The latest step logged after byte `offset` (the current launch's lines)."""
    try:
        with open(metrics, "rb") as f:
            f.seek(offset)
            lines = f.read().split(b"\n")[:-1]
    except FileNotFoundError:
        return -1
    steps = [-1]
    for line in lines:
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:  # a line an earlier kill cut short, now glued to this launch's first
            continue
    return max(steps)


def _saved_tensors(out: Path) -> Dict[str, torch.Tensor]:
    """Every tensor of the final model and of the last checkpoint (optimizer, RNG, teacher)."""
    last = checkpoint.latest_checkpoint(out / "checkpoints")
    files = [*sorted((out / "final").glob("*.safetensors")), *sorted(last.glob("*.safetensors"))]
    return {f"{f.parent.name}/{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


def assert_same_end(run: Run, reference: Path) -> None:
    a, b = _saved_tensors(reference), _saved_tensors(run.out)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ from the uninterrupted run, e.g. {different[:3]}"
    # pruned to trainer.keep_checkpoints, and nothing left of the killed saves
    assert sorted(os.listdir(run.out / "checkpoints")) == sorted(os.listdir(reference / "checkpoints"))
    assert run.summary()["steps"] == MAX_STEPS


def models_for(request, domain: str) -> Path:
    return request.getfixturevalue(RUNS[domain][0])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """reference(domain, models): the uninterrupted run's output directory, run once per module."""
    done: Dict[str, Path] = {}

    def get(domain: str, models: Path) -> Path:
        if domain not in done:
            run = Run(domain, models, tmp_path_factory.mktemp(f"reference_{domain}") / "run")
            run.to_the_end(in_process=True)
            done[domain] = run.out
        return done[domain]

    return get


def kill_and_resume(request, reference, tmp_path: Path, domain: str, seed: int, kills: int, in_process: bool) -> None:
    rng = random.Random(seed)
    models = models_for(request, domain)
    run = Run(domain, models, tmp_path / "run")
    # the last kill comes after the first checkpoint, so the last launch has to resume
    for step in sorted(rng.sample(range(SAVE_EVERY + 1, MAX_STEPS - 1), kills)):
        run.kill_after(step, delay=rng.uniform(0.0, 0.2))
    run.to_the_end(in_process)
    assert run.summary()["steps_this_run"] < MAX_STEPS, "the last launch started from scratch"
    assert_same_end(run, reference(domain, models))


def test_sigkill_then_resume_is_bit_identical(request, reference, tmp_path):
    kill_and_resume(request, reference, tmp_path, "text", seed=1000, kills=1, in_process=True)


def test_sigterm_saves_a_checkpoint_then_stops(request, reference, tmp_path):
    """SIGTERM: the run finishes its step, checkpoints it (whatever save_every says), exits 0, and
    the same command resumes it."""
    models = models_for(request, "text")
    run = Run("text", models, tmp_path / "run")
    proc = run.start_and_wait_for(SAVE_EVERY + 1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT) == 0, run.tail()
    stopped_at = _last_logged_step(run.out / "metrics.jsonl", 0)
    assert stopped_at < MAX_STEPS and not (run.out / "final").exists()
    assert checkpoint.latest_checkpoint(run.out / "checkpoints").name == f"{checkpoint.PREFIX}{stopped_at:08d}"
    run.to_the_end(in_process=True)
    assert run.summary()["steps_this_run"] == MAX_STEPS - stopped_at
    assert_same_end(run, reference("text", models))


SLOW = [("text", s) for s in range(3)] + [("text-ema", s) for s in range(2)] + [("diffusion", s) for s in range(3)] + [
    ("agent", s) for s in range(2)
]


@pytest.mark.slow
@pytest.mark.parametrize("domain, seed", SLOW, ids=[f"{d}-{s}" for d, s in SLOW])
def test_random_sigkills_then_resume_are_bit_identical(request, reference, tmp_path, domain, seed):
    """10 runs x 2 kills: 20 random kill points over text, an EMA self-teacher, diffusion and agents."""
    kill_and_resume(request, reference, tmp_path, domain, seed, kills=2, in_process=False)


# ------------------------------------------------------------------ a kill inside a save
# The driver is the CLI with one checkpoint write or delete replaced by a self-SIGKILL once step
# CRASH_STEP's save reaches it, so the kill lands at a chosen point inside the save.
DRIVER = """
import os, shutil, signal, sys
from pathlib import Path
from unified_opd import checkpoint
from unified_opd.cli import main

step, where = sys.argv[1], sys.argv[2]


def ours(path):
    return f"{checkpoint.PREFIX}{int(step):08d}" in Path(path).name


def die():
    os.kill(os.getpid(), signal.SIGKILL)


write_json, rmtree = checkpoint._write_json, shutil.rmtree


def crash_before_writing(path, obj):
    if path.name == where and ours(path.parent):
        die()
    write_json(path, obj)


def crash_while_deleting(path, *args, **kwargs):
    if where == "delete" and ours(path):
        (Path(path) / "model.safetensors").unlink()  # rmtree got this far
        die()
    rmtree(path, *args, **kwargs)


checkpoint._write_json = crash_before_writing
checkpoint.shutil.rmtree = crash_while_deleting
sys.exit(main(["train", *sys.argv[3:]]))
"""


def crash_in_save(request, reference, tmp_path: Path, where: str, step: int) -> None:
    models = models_for(request, "text")
    run = Run("text", models, tmp_path / "run", driver=["-c", DRIVER, str(step), where])
    proc = run.start()
    assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL, f"the save never reached {where}:\n{run.tail()}"
    ckpts = run.out / "checkpoints"
    latest = checkpoint.latest_checkpoint(ckpts)
    assert checkpoint.load_checkpoint(latest)["state"]["step"] == step - SAVE_EVERY
    assert any(p.name.startswith(checkpoint.TMP) for p in ckpts.iterdir()), "no save was interrupted"
    run.to_the_end(in_process=True)  # the same run through the plain CLI
    assert run.summary()["steps_this_run"] == MAX_STEPS - (step - SAVE_EVERY)
    assert_same_end(run, reference("text", models))


def test_kill_inside_a_save_keeps_the_previous_checkpoint(request, reference, tmp_path):
    """Killed after the model and optimizer tensors of step 4 are written, before the rest."""
    crash_in_save(request, reference, tmp_path, "optimizer.json", step=4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "where, step",
    [
        ("COMPLETE", 6),  # every file written but the marker
        ("delete", MAX_STEPS),  # the end of the run re-saves its last step: killed deleting the old copy
    ],
)
def test_kill_at_other_points_of_a_save(request, reference, tmp_path, where, step):
    crash_in_save(request, reference, tmp_path, where, step)


# ------------------------------------------------------------------ keep_checkpoints
def test_keep_checkpoints_keeps_the_newest_complete_ones(tmp_path):
    model, opt = {"w": torch.ones(2)}, {"state": {}, "param_groups": []}
    (tmp_path / f"{checkpoint.TMP}{checkpoint.PREFIX}00000009_1").mkdir()  # left by a killed save
    for step in range(1, 6):
        checkpoint.save_checkpoint(tmp_path, step, model, opt, {}, keep=2)
    assert sorted(os.listdir(tmp_path)) == ["step_00000004", "step_00000005"]
    checkpoint.save_checkpoint(tmp_path, 5, model, opt, {}, keep=2)  # a re-save of the same step
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000004", "step_00000005"]
    for step in range(6, 9):
        checkpoint.save_checkpoint(tmp_path, step, model, opt, {}, keep=0)  # 0: keep them all
    assert len(checkpoint.list_checkpoints(tmp_path)) == 5
