"""Text-to-image pipelines (tiny random SD3 and FLUX from configs): the rollout is the pipeline's
own sampling, the trained-on transitions are plain transformer forwards, the per-step KL is
the hand-computed one, and a 3-step run exports a pipeline that regenerates its eval images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, FluxPipeline
from PIL import Image

import unified_opd as uo
from unified_opd.config import load_config
from unified_opd.domain import schema_for
from unified_opd.domains.diffusion.evaluate import eval_noise
from unified_opd.domains.diffusion.generator import guided_velocity, load_generator
from unified_opd.domains.diffusion.metrics import image_grid
from unified_opd.domains.diffusion.models import save_denoiser
from unified_opd.domains.diffusion.policy import DiffusionPolicy, DiffusionTeacher
from unified_opd.domains.diffusion.sampler import SamplerSpec, sample_trajectory
from unified_opd.domains.diffusion.zoo.tiny_pipelines import tiny_flux_pipeline, tiny_sd3_pipeline
from unified_opd.errors import ConfigError, UserError
from unified_opd.trainer import Trainer

from test_diffusion import tiny_dit
from test_diffusion_e2e import restore_threads  # noqa: F401  (autouse fixture: the runs set cpu_threads=1)

PROMPTS = ["a red circle", "a blue square", "a green dot"]
SEQ = 16  # student.max_sequence_length of the tiny pipelines


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipes")
    for seed, name in enumerate(["student", "teacher_a", "teacher_b"]):
        tiny_sd3_pipeline(seed).save_pretrained(root / f"sd3_{name}")
        tiny_flux_pipeline(seed).save_pretrained(root / f"flux_{name}")
    save_denoiser(tiny_dit(), __import__("diffusers").FlowMatchEulerDiscreteScheduler(), str(root / "dit"))
    with open(root / "prompts.jsonl", "w") as f:
        for p, task in zip(PROMPTS, ["color", "shape", "color"]):
            f.write(json.dumps({"prompt": p, "task": task}) + "\n")
    return root


def generator(path, family="sd3"):
    return load_generator(str(path), "student.path", "cpu", 16, SEQ)


def pipeline_latents(path, family, prompts, noise, steps, guidance):
    """What `DiffusionPipeline.from_pretrained(path)(...)` samples from `noise`, as latents."""
    pipe = DiffusionPipeline.from_pretrained(str(path))
    kw = dict(max_sequence_length=SEQ, num_inference_steps=steps, output_type="latent", height=16, width=16)
    if family == "flux":
        b, c, h, w = noise.shape
        cfg = dict(true_cfg_scale=guidance, negative_prompt=[""] * b) if guidance > 1 else {}
        out = pipe(prompts, latents=FluxPipeline._pack_latents(noise, b, c, h, w), **cfg, **kw).images
        return FluxPipeline._unpack_latents(out, 16, 16, pipe.vae_scale_factor)
    return pipe(prompts, latents=noise, guidance_scale=guidance, **kw).images


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_ode_sampling_with_guidance_is_the_pipelines_own(pipes, family):
    gen = generator(pipes / f"{family}_student")
    noise = torch.randn(2, *gen.spec.shape, generator=torch.Generator().manual_seed(0))
    for w in (1.0, 3.0):
        policy = DiffusionPolicy(gen, SamplerSpec(num_steps=3, mode="ode"), 1, "cpu", w)
        ours = sample_trajectory(gen.field(PROMPTS[:2], "cpu", w), policy.sigmas, noise, policy.sampler).image
        ref = pipeline_latents(pipes / f"{family}_student", family, PROMPTS[:2], noise, 3, w)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def sd3_plain_velocity(pipe, x, sigma, prompts, w):
    """v by hand: the SD3 transformer called on `encode_prompt`'s embeddings, guided by w."""
    pe, npe, pooled, npooled = pipe.encode_prompt(prompts, prompts, prompts, do_classifier_free_guidance=True, max_sequence_length=SEQ)
    t = sigma * 1000

    def v(e, p):
        return pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=e, pooled_projections=p).sample

    vc = v(pe, pooled)
    return vc if w == 1 else v(npe, npooled) + w * (vc - v(npe, npooled))


def test_trained_on_transitions_and_one_step_kl_match_a_hand_computation(pipes):
    torch.manual_seed(0)
    student_gen, teacher_gen = generator(pipes / "sd3_student"), generator(pipes / "sd3_teacher_a")
    a = 0.7
    policy = DiffusionPolicy(student_gen, SamplerSpec(num_steps=3, mode="sde", noise_level=a), 2, "cpu")
    teacher = DiffusionTeacher(teacher_gen, "teacher.path", "cpu", guidance_scale=2.0)
    with torch.no_grad():
        r = policy.rollout([{"prompt": PROMPTS[0]}, {"prompt": PROMPTS[1]}])
        ds, dt = policy.distribution(r), teacher.distribution(r)
    assert r.student_view["prompts"] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    sig = policy.sigmas.tolist()
    i = 1  # one middle step, by hand: SDE means of the plain transformer forwards, then the KL
    s, sn = sig[i], sig[i + 1]
    g = a * math.sqrt(s / (1 - s))
    x = r.student_view["x"][:, i]
    sigma = torch.full((4,), s)
    prompts = r.student_view["prompts"]
    with torch.no_grad():
        v_s = sd3_plain_velocity(student_gen.pipeline, x, sigma, prompts, 1.0)
        v_t = sd3_plain_velocity(teacher_gen.pipeline, x, sigma, prompts, 2.0)
    mean_s, mean_t = ((x + (v + g**2 / (2 * s) * (x + (1 - s) * v)) * (sn - s)) for v in (v_s, v_t))
    std = g * math.sqrt(s - sn)
    torch.testing.assert_close(ds.mean[:, i], mean_s, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dt.mean[:, i], mean_t, rtol=1e-4, atol=1e-5)
    mask = torch.zeros(4, 3, dtype=torch.bool)
    mask[:, i] = True
    kl = uo.divergence("kl")(ds.select(mask), dt.select(mask))
    torch.testing.assert_close(kl, ((mean_s - mean_t) ** 2).flatten(1).sum(-1) / (2 * std**2), rtol=1e-4, atol=1e-4)
    assert float(kl.min()) > 0


def test_classifier_free_guidance_formula():
    calls = []

    def call(x, sigma, cond):
        calls.append(x.shape[0])
        return cond["c"] * x

    x, sigma = torch.ones(2, 1), torch.ones(2)
    v = guided_velocity(call, x, sigma, {"c": torch.full((2, 1), 3.0)}, {"c": torch.full((2, 1), 1.0)}, 2.5)
    torch.testing.assert_close(v, torch.full((2, 1), 1.0 + 2.5 * (3.0 - 1.0)))  # v_u + w·(v_c − v_u)
    assert calls == [4]  # one batched call for both branches
    torch.testing.assert_close(guided_velocity(call, x, sigma, {"c": torch.full((2, 1), 3.0)}, None, 2.5), torch.full((2, 1), 3.0))


def overrides(pipes, family, out, *extra):
    return [
        "domain=diffusion", "cpu_threads=1", f"student.path={pipes / f'{family}_student'}",
        "student.resolution=16", f"student.max_sequence_length={SEQ}", "divergence.name=kl",
        "rollout.batch_size=2", "rollout.num_samples=2", "rollout.num_steps=3", "eval.classifier=null",
        "eval.samples_per_class=2", "eval.grid_per_class=2", "eval.sampler=ode", "eval.batch_size=4",
        "trainer.max_steps=3", "trainer.lr=1e-3", "trainer.save_every=0", "trainer.eval_every=0",
        f"trainer.output_dir={out}", *extra,
    ]


def check_export_regenerates_eval_images(pipes, family, out, guidance):
    """`final/` is a pipeline directory whose samples from the eval noise are the run's last grid."""
    assert (out / "final" / "model_index.json").is_file()
    gen = generator(out / "final")
    prompts = [p for p in PROMPTS for _ in range(2)]
    noise = eval_noise(1234, len(prompts), gen.spec.shape)
    latents = pipeline_latents(out / "final", family, prompts, noise, 3, guidance)
    grid = np.asarray(image_grid(gen.decode(latents), len(PROMPTS)))
    png = Image.open(out / "samples" / "step_000003.png")
    png = np.asarray(png.resize((png.width // 4, png.height // 4), Image.NEAREST))
    assert np.abs(grid.astype(int) - png.astype(int)).max() <= 1


def test_sd3_routed_experts_from_jsonl_train_three_steps_and_export(pipes, tmp_path):
    out = tmp_path / "sd3"
    experts = (f"teacher.experts=[{{path: {pipes / 'sd3_teacher_a'}, tasks: [color]}}, "
               f"{{path: {pipes / 'sd3_teacher_b'}, tasks: [shape]}}]")
    cfg = load_config(None, overrides(pipes, "sd3", out, experts, f"data.path={pipes / 'prompts.jsonl'}",
                                      "teacher.guidance_scale=2.0", "cold_start.steps=2", "anchor.weight=0.5",
                                      "anchor.samples_per_class=2", "anchor.batch_size=4"), schema_for)
    tr = Trainer(cfg)
    assert sorted(tr.teacher.routes) == ["color", "shape"] and tr.teacher.routes["color"] is not tr.teacher.routes["shape"]
    before = [p.clone() for p in tr.policy.module.parameters()]
    assert tr.train()["steps"] == 3
    assert any(not torch.equal(x, y) for x, y in zip(before, tr.policy.module.parameters()))
    rows = [json.loads(line) for line in open(out / "metrics.jsonl") if '"kl"' in line]
    assert len(rows) == 3 and all(r["kl"] > 0 and "anchor_fm" in r for r in rows)
    check_export_regenerates_eval_images(pipes, "sd3", out, 1.0)
    image = DiffusionPipeline.from_pretrained(str(out / "final"))(
        "a red circle", height=16, width=16, num_inference_steps=2, max_sequence_length=SEQ, output_type="np"
    ).images
    assert image.shape == (1, 16, 16, 3) and np.isfinite(image).all()


def test_flux_guided_student_from_inline_prompts_trains_three_steps_and_exports(pipes, tmp_path):
    out = tmp_path / "flux"
    cfg = load_config(None, overrides(pipes, "flux", out, "teacher.kind=model", f"teacher.path={pipes / 'flux_teacher_a'}",
                                      f"teacher.experts=[{{path: {pipes / 'flux_teacher_a'}}}]", f"data.prompts={PROMPTS}",
                                      "teacher.guidance_scale=3.0", "student.guidance_scale=1.5"), schema_for)
    summary = Trainer(cfg).train()
    assert summary["steps"] == 3
    check_export_regenerates_eval_images(pipes, "flux", out, 1.5)


def test_text_to_image_bad_inputs_name_the_field(pipes, tmp_path):
    def build(*extra):
        return Trainer(load_config(None, overrides(pipes, "sd3", tmp_path / "bad", *extra), schema_for))

    one = f"teacher.experts=[{{path: {pipes / 'sd3_teacher_a'}}}]"
    with pytest.raises(ConfigError, match="data.prompts: a text-to-image student needs prompts"):
        build(one)
    with pytest.raises(ConfigError, match="eval.classifier"):
        build(one, f"data.prompts={PROMPTS}", "eval.classifier=zoo:digits/classifier")
    with pytest.raises(UserError, match="teacher.experts\\[0\\].path: a class-conditioned teacher cannot teach a prompt"):
        build(f"teacher.experts=[{{path: {pipes / 'dit'}}}]", f"data.prompts={PROMPTS}")
    with pytest.raises(ConfigError, match="teacher.experts: no expert teaches task tag"):
        build(f"teacher.experts=[{{path: {pipes / 'sd3_teacher_a'}, tasks: [color]}}]", f"data.path={pipes / 'prompts.jsonl'}")
    with pytest.raises(ConfigError, match="teacher.guidance_scale: expected a guidance scale >= 1"):
        build(one, "student.path=/nonexistent", "teacher.guidance_scale=0.5")
    with pytest.raises(ConfigError, match="data.prompts: give the prompts either"):
        build(one, "student.path=/nonexistent", f"data.prompts={PROMPTS}", f"data.path={pipes / 'prompts.jsonl'}")
    with pytest.raises(UserError, match="student.guidance_scale: guidance 2.0 needs a text-to-image pipeline"):
        build(one, f"student.path={pipes / 'dit'}", "student.guidance_scale=2.0")


def test_lora_sd3_student_trains_only_its_adapter_and_exports_merged(pipes, tmp_path):
    pytest.importorskip("peft")
    from peft import PeftModel

    out = tmp_path / "lora"
    cfg = load_config(None, overrides(pipes, "sd3", out, "teacher.kind=model", f"teacher.path={pipes / 'sd3_teacher_a'}",
                                      f"teacher.experts=[{{path: {pipes / 'sd3_teacher_a'}}}]", f"data.prompts={PROMPTS}",
                                      "student.lora.r=4", "student.lora.alpha=8", "trainer.lr=1e-2"), schema_for)
    tr = Trainer(cfg)
    named = dict(tr.policy.module.named_parameters())
    trained = {n for n, p in named.items() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    before = {n: p.detach().clone() for n, p in named.items()}
    assert tr.train()["steps"] == 3
    after = dict(tr.policy.module.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in named if n not in trained)
    assert any(not torch.equal(before[n], after[n]) for n in trained)
    # final/ loads as a plain pipeline whose transformer is the trained student merged
    check_export_regenerates_eval_images(pipes, "sd3", out, 1.0)
    merged = DiffusionPipeline.from_pretrained(str(out / "final")).transformer
    base = DiffusionPipeline.from_pretrained(str(pipes / "sd3_student")).transformer
    adapter = PeftModel.from_pretrained(base, str(out / "final" / "lora"))
    x, t = torch.randn(1, *tr.policy.spec.shape), torch.full((1,), 500.0)
    cond = dict(encoder_hidden_states=torch.randn(1, 8, merged.config.joint_attention_dim),
                pooled_projections=torch.randn(1, merged.config.pooled_projection_dim))
    with torch.no_grad():
        expected = tr.policy.module(hidden_states=x, timestep=t, **cond).sample
        torch.testing.assert_close(merged(hidden_states=x, timestep=t, **cond).sample, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(adapter(hidden_states=x, timestep=t, **cond).sample, expected, rtol=1e-4, atol=1e-5)
