"""Diffusion domain: formulas against hand computations and independent references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DiTTransformer2DModel, FlowMatchEulerDiscreteScheduler, UNet2DModel

import unified_opd as uo
from unified_opd.domains.diffusion.conditioning import ClassConditioner
from unified_opd.domains.diffusion.generator import Generator
from unified_opd.domains.diffusion.metrics import frechet_distance
from unified_opd.domains.diffusion.models import latent_spec, load_denoiser, save_denoiser
from unified_opd.domains.diffusion.policy import DiffusionPolicy, DiffusionTeacher
from unified_opd.domains.diffusion.sampler import SamplerSpec, scheduler_sigmas, step_coefficients
from unified_opd.domains.diffusion.sde import flow_matching_pair, transition_mean
from unified_opd.domains.diffusion.weights import timestep_schedule
from unified_opd.errors import ConfigError, UserError
from unified_opd.weights import WEIGHTS, WeightInputs


def tiny_unet(classes: int = 4, size: int = 8, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=size, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=classes, norm_num_groups=4,
    )


def tiny_dit(classes: int = 4, size: int = 8, seed: int = 0) -> DiTTransformer2DModel:
    torch.manual_seed(seed)
    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=1, num_layers=1, sample_size=size,
        patch_size=4, num_embeds_ada_norm=classes, norm_num_groups=1,
    )


def class_generator(model, sched=None):
    spec = latent_spec(model, "student.path")
    return Generator(model, sched or FlowMatchEulerDiscreteScheduler(), spec, ClassConditioner(spec.num_classes))


def make_policy(model, mode="sde", steps=4, samples=2):
    sched = FlowMatchEulerDiscreteScheduler(shift=2.0)
    return DiffusionPolicy(class_generator(model, sched), SamplerSpec(num_steps=steps, mode=mode), samples, "cpu")


# ---------------------------------------------------------------- divergence
def test_gaussian_kl_matches_torch_and_select_gives_per_step_values():
    torch.manual_seed(0)
    b, s = 3, 4
    ms, mt = torch.randn(b, s, 1, 4, 4), torch.randn(b, s, 1, 4, 4)
    ss, st = torch.rand(b, s, 1, 1, 1) + 0.2, torch.rand(b, s, 1, 1, 1) + 0.2
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1], [1, 0, 0, 0]]).bool()
    got = uo.divergence("kl")(uo.Gaussian(ms, ss).select(mask), uo.Gaussian(mt, st).select(mask))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(ms[mask], ss.expand_as(ms)[mask]), torch.distributions.Normal(mt[mask], st.expand_as(mt)[mask])
    ).flatten(1).sum(-1)
    assert got.shape == (int(mask.sum()),)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # equal std: mean matching ‖μ_s − μ_t‖² / 2σ²
    mm = uo.divergence("kl")(uo.Gaussian(ms, st).select(mask), uo.Gaussian(mt, st).select(mask))
    hand = ((ms - mt) ** 2 / (2 * st**2))[mask].flatten(1).sum(-1)
    torch.testing.assert_close(mm, hand, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- SDE / ODE steps
def test_sde_step_mean_and_std_against_hand_computation_from_scheduler_sigmas():
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(5)
    sig = [float(v) for v in sched.sigmas]
    a = 0.7
    spec = SamplerSpec(num_steps=5, mode="sde", noise_level=a)
    coeff = step_coefficients(scheduler_sigmas(sched, 5), spec)
    torch.manual_seed(0)
    x, v = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    for i in (0, 2, 4):  # σ = 1 (clamped g), a middle step, the last step to σ = 0
        s, sn = sig[i], sig[i + 1]
        g = a * math.sqrt(s / (1 - (sig[1] if s == 1.0 else s)))
        mean = x + (v + g**2 / (2 * s) * (x + (1 - s) * v)) * (sn - s)
        std = g * math.sqrt(s - sn)
        got = transition_mean(x, v, coeff["sigma"][i : i + 1], coeff["sigma_next"][i : i + 1], coeff["g"][i : i + 1])
        torch.testing.assert_close(got, mean, rtol=1e-5, atol=1e-6)
        assert coeff["std"][i].item() == pytest.approx(std, rel=1e-5)


def test_ode_step_is_the_schedulers_euler_step_and_kl_is_velocity_matching():
    sched = FlowMatchEulerDiscreteScheduler(shift=2.0)
    sched.set_timesteps(6)
    spec = SamplerSpec(num_steps=6, mode="ode", ode_std=0.25)
    coeff = step_coefficients(sched.sigmas.float(), spec)
    torch.manual_seed(1)
    x, v, v2 = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for i, t in enumerate(sched.timesteps[:3]):
        sched._step_index = i
        ref = sched.step(v, t, x).prev_sample
        sigma = coeff["sigma"][i].expand(3)
        # the model is called at σ·num_train_timesteps, which is the scheduler's own timestep
        assert float(sigma[0] * sched.config.num_train_timesteps) == pytest.approx(float(t), rel=1e-5)
        got = transition_mean(x, v, sigma, coeff["sigma_next"][i].expand(3), coeff["g"][i].expand(3))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        std = coeff["std"][i]
        m2 = transition_mean(x, v2, sigma, coeff["sigma_next"][i].expand(3), coeff["g"][i].expand(3))
        kl = uo.divergence("kl")(uo.Gaussian(got, std), uo.Gaussian(m2, std))
        torch.testing.assert_close(kl, ((v - v2) ** 2).flatten(1).sum(-1) / (2 * 0.25**2), rtol=1e-4, atol=1e-5)


def test_flow_matching_pair():
    x0, eps, sigma = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2), torch.tensor([0.25, 0.8])
    x, target = flow_matching_pair(x0, eps, sigma)
    torch.testing.assert_close(x[1], 0.2 * x0[1] + 0.8 * eps[1])
    torch.testing.assert_close(target, eps - x0)


# ---------------------------------------------------------------- the student's own trajectory
@pytest.mark.parametrize("make", [tiny_unet, tiny_dit])
def test_loss_is_computed_on_the_students_own_trajectory(make):
    torch.manual_seed(0)
    for mode in ("ode", "sde"):
        policy = make_policy(make(), mode=mode, steps=4, samples=3)
        policy.module.eval()
        with torch.no_grad():
            r = policy.rollout([{"class": 1}, {"class": 3}])
        x = r.student_view["x"]
        assert r.actions.shape == (6, 4, 1, 8, 8) and r.loss_mask.shape == (6, 4)
        assert r.student_view["labels"].tolist() == [1, 1, 1, 3, 3, 3] and r.task == ["1"] * 3 + ["3"] * 3
        torch.testing.assert_close(x[:, 1:], r.actions[:, :-1])  # each state is the previous action
        with torch.no_grad():
            d = policy.distribution(r)
        if mode == "ode":
            torch.testing.assert_close(d.mean, r.actions, rtol=1e-4, atol=1e-5)
        else:
            z = (r.actions - d.mean) / d.std  # the sampled noise: standard normal
            assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1
        # a teacher identical to the student has zero KL on every step of this trajectory
        teacher = DiffusionTeacher(policy.generator, "teacher", "cpu")
        loss, m = uo.Objective(uo.divergence("kl"))(d, teacher.distribution(r), r)
        assert m["kl"] < 1e-6


def test_distribution_has_gradients_and_std_is_the_rollouts():
    policy = make_policy(tiny_unet(), mode="sde")
    with torch.no_grad():
        r = policy.rollout([{"class": 0}])
    d = policy.distribution(r)
    assert d.mean.requires_grad
    torch.testing.assert_close(d.std[:, :, 0, 0, 0], r.student_view["std"])


# ---------------------------------------------------------------- weights, pooling, metrics
def test_timestep_weight_reads_sigma_of_each_step():
    policy = make_policy(tiny_unet(), mode="sde", steps=3, samples=1)
    with torch.no_grad():
        r = policy.rollout([{"class": 0}, {"class": 2}])
    mask = torch.tensor([[1, 0, 1], [0, 1, 1]]).bool()
    r.loss_mask = mask.long()
    sig = r.student_view["sigma"]
    inputs = WeightInputs(
        rollout=r, student=None, teacher=None, divergence=torch.zeros(4), batch_index=torch.tensor([0, 0, 1, 1]),
        position=torch.tensor([0, 1, 0, 1]), step_ids=torch.tensor([0, 2, 1, 2]),
    )
    w = WEIGHTS.get("timestep")(inputs, schedule="one_minus_sigma", power=2.0)
    torch.testing.assert_close(w, (1 - torch.stack([sig[0, 0], sig[0, 2], sig[1, 1], sig[1, 2]])) ** 2)
    assert timestep_schedule(torch.tensor([0.3]), "uniform", 1.0).item() == 1.0
    with pytest.raises(ConfigError, match="schedule"):
        timestep_schedule(torch.tensor([0.3]), "late", 1.0)


def test_lambda_extrapolated_target_pools_teacher_and_reference():
    mt, mr, std = torch.randn(2, 3, 1, 2, 2), torch.randn(2, 3, 1, 2, 2), torch.full((2, 3, 1, 1, 1), 0.3)
    lam = 1.5
    p = uo.pool([uo.Gaussian(mt, std), uo.Gaussian(mr, std)], [lam, 1 - lam])
    torch.testing.assert_close(p.mean, lam * mt + (1 - lam) * mr)
    torch.testing.assert_close(p.std, std.expand_as(mt))


def test_frechet_distance_against_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 5)), rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.5
    m1, m2, c1, c2 = a.mean(0), b.mean(0), np.cov(a.T), np.cov(b.T)
    ref = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * scipy_linalg.sqrtm(c1 @ c2).real)
    got = frechet_distance(*(torch.tensor(t) for t in (m1, c1, m2, c2)))
    assert got == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(*(torch.tensor(t) for t in (m1, c1, m1, c1))) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- bad input
def test_save_load_roundtrip_and_bad_models(tmp_path):
    model = tiny_dit()
    save_denoiser(model, FlowMatchEulerDiscreteScheduler(shift=2.0), str(tmp_path / "ok"))
    loaded, sched, spec = load_denoiser(str(tmp_path / "ok"), "student.path")
    assert isinstance(loaded, DiTTransformer2DModel) and sched.config.shift == 2.0 and spec.shape == (1, 8, 8)
    save_denoiser(tiny_unet(), DDPMScheduler(), str(tmp_path / "ddpm"))
    with pytest.raises(ConfigError, match="student.path.*not a flow-matching"):
        load_denoiser(str(tmp_path / "ddpm"), "student.path")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="teacher.experts\\[0\\].path"):
        load_denoiser(str(tmp_path / "empty"), "teacher.experts[0].path")
    unc = tmp_path / "unconditional"
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(unc)
    with pytest.raises(UserError, match="not class-conditioned"):
        load_denoiser(str(unc), "student.path")
    assert json.loads((tmp_path / "ok" / "scheduler_config.json").read_text())["_class_name"] == "FlowMatchEulerDiscreteScheduler"


def test_teacher_rejects_mismatched_latents_and_unknown_classes():
    policy = make_policy(tiny_unet(size=8), steps=2, samples=1)
    with torch.no_grad():
        r = policy.rollout([{"class": 3}])
    big = tiny_unet(size=16)
    with pytest.raises(UserError, match="teacher.experts\\[1\\].path.*latents"):
        DiffusionTeacher(class_generator(big), "teacher.experts[1].path", "cpu").distribution(r)
    few = tiny_unet(classes=2)
    with pytest.raises(UserError, match="class ids"):
        DiffusionTeacher(class_generator(few), "teacher.experts[0].path", "cpu").distribution(r)
    with pytest.raises(UserError, match="data.classes"):
        policy.rollout([{"class": 9}])
    with pytest.raises(ConfigError, match="rollout.mode"):
        SamplerSpec(num_steps=2, mode="ddim")
