"""End to end: tiny diffusers models saved and loaded back, distilled by the core Trainer."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from unified_opd.config import load_config
from unified_opd.domain import schema_for
from unified_opd.domains.diffusion.models import save_denoiser
from unified_opd.errors import ConfigError, UserError
from unified_opd.trainer import Trainer

from test_diffusion import tiny_dit, tiny_unet


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    sched = FlowMatchEulerDiscreteScheduler()
    save_denoiser(tiny_dit(seed=0), sched, str(root / "student"))
    save_denoiser(tiny_dit(seed=1), sched, str(root / "expert_a"))
    save_denoiser(tiny_unet(seed=2), sched, str(root / "expert_b"))
    save_denoiser(tiny_unet(size=16, seed=3), sched, str(root / "big"))
    return root


@pytest.fixture(autouse=True)
def restore_threads():
    """The runs set `cpu_threads=1` (tiny models: far faster on a shared CPU); undo it after."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def overrides(models, out, *extra):
    return [
        "domain=diffusion",
        "cpu_threads=1",
        f"student.path={models / 'student'}",
        f"teacher.experts=[{{path: {models / 'expert_a'}, classes: [0, 1]}}, {{path: {models / 'expert_b'}, classes: [2, 3]}}]",
        "data.classes=[0,1,2,3]",
        "divergence.name=kl",
        "rollout.batch_size=4",
        "rollout.num_samples=2",
        "rollout.num_steps=4",
        "eval.classifier=null",
        "eval.samples_per_class=2",
        "eval.grid_per_class=2",
        "trainer.max_steps=40",
        "trainer.lr=3e-3",
        "trainer.save_every=0",
        f"trainer.output_dir={out}",
        *extra,
    ]


def metrics(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl") if '"loss"' in line]


def test_mean_matching_loss_falls_with_routed_experts_anchor_and_cold_start(models, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, overrides(models, out, "anchor.weight=0.1", "anchor.samples_per_class=4", "cold_start.steps=2"), schema_for)
    torch.manual_seed(0)
    Trainer(cfg).train()
    m = metrics(out)
    first, last = sum(r["kl"] for r in m[:5]) / 5, sum(r["kl"] for r in m[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert all("anchor_fm" in r for r in m)
    assert (out / "samples" / "step_000000.png").is_file() and (out / "samples" / "step_000040.png").is_file()
    student = type(tiny_dit()).from_pretrained(out / "final")  # diffusers format
    assert FlowMatchEulerDiscreteScheduler.from_pretrained(out / "final").config.num_train_timesteps == 1000
    assert sum(p.numel() for p in student.parameters()) > 0


def test_ode_mode_with_lambda_extrapolation_runs(models, tmp_path):
    out = tmp_path / "ode"
    extra = ("rollout.mode=ode", "objective.lam=1.5", "teacher.reference=student", "trainer.max_steps=3",
             "objective.weights=[{name: timestep, schedule: sigma}]")
    summary = Trainer(load_config(None, overrides(models, out, *extra), schema_for)).train()
    assert summary["steps"] == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in metrics(out))


def test_bad_config_names_the_field(models, tmp_path):
    def build(*extra):
        return Trainer(load_config(None, overrides(models, tmp_path / "bad", *extra), schema_for))

    with pytest.raises(ConfigError, match="data.classes"):
        build("data.classes=[0,7]")
    with pytest.raises(ConfigError, match="teacher.experts.*class"):
        build(f"teacher.experts=[{{path: {models / 'expert_a'}, classes: [0, 1]}}]")
    with pytest.raises(UserError, match="teacher.experts\\[0\\].path.*latents"):
        build(f"teacher.experts=[{{path: {models / 'big'}, classes: [0, 1, 2, 3]}}]")
    with pytest.raises(ConfigError, match="objective.lam"):
        Trainer(load_config(None, overrides(models, tmp_path / "lam", "objective.lam=2.0", "trainer.max_steps=1"), schema_for)).train()
    with pytest.raises(ConfigError, match="rollout.mode"):
        build("rollout.mode=ddpm")


def test_replaced_keys_and_unavailable_kinds_fail_before_any_load(models, tmp_path):
    def build(*extra):
        return Trainer(load_config(None, overrides(models, tmp_path / "bad", "student.path=/nonexistent", *extra), schema_for))

    with pytest.raises(ConfigError, match="teacher.combine was replaced by teacher.kind: router|pool"):
        build("teacher.combine=pool")
    with pytest.raises(ConfigError, match="teacher.pool_weights was replaced by teacher.weights"):
        build("teacher.pool_weights=[0.5,0.5]")
    with pytest.raises(ConfigError, match="teacher.kind: 'best_of' is not available in the diffusion domain"):
        build("teacher.kind=best_of", f"teacher.members=[{models / 'expert_a'}]")
    with pytest.raises(ConfigError, match="teacher.members: required by teacher.kind=pool"):
        build("teacher.kind=pool")
    with pytest.raises(ConfigError, match="teacher.pool_rule: diffusion pools with fixed weights only"):
        build("teacher.kind=pool", f"teacher.members=[{models / 'expert_a'}]", "teacher.pool_rule=confidence")
    with pytest.raises(ConfigError, match="eval.sampler"):
        build("eval.sampler=ddim")


def test_core_kinds_pool_ema_self_and_a_reference_model_train(models, tmp_path):
    a, b = models / "expert_a", models / "expert_b"
    pool = ("teacher.kind=pool", f"teacher.members=[{a},{b}]", "teacher.weights=[0.25,0.75]", "trainer.max_steps=2")
    tr = Trainer(load_config(None, overrides(models, tmp_path / "pool", *pool), schema_for))
    assert tr.teacher.weights == [0.25, 0.75] and tr.train()["steps"] == 2
    ema = ("teacher.kind=self", "teacher.ema=0.5", f"teacher.reference={a}", "objective.lam=1.5", "trainer.max_steps=2")
    tr = Trainer(load_config(None, overrides(models, tmp_path / "ema", *ema), schema_for))
    before = [p.clone() for p in tr.teacher.copy.parameters()]
    assert tr.train()["steps"] == 2
    assert any(not torch.equal(x, y) for x, y in zip(before, tr.teacher.copy.parameters()))
