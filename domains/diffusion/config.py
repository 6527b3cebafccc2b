"""Config schema of the diffusion domain (every key documented in docs/diffusion.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from unified_opd.config import RunConfig
from unified_opd.errors import ConfigError, require_one_of
from unified_opd.lora import LoraConfig, check_lora
from unified_opd.teacher_config import TeacherConfig as CoreTeacherConfig
from unified_opd.teacher_config import check_replaced_keys
from unified_opd.teacher_kinds import check_teacher

from .generator import ATTENTION_PROJECTIONS, is_pipeline
from .sampler import SamplerSpec
from .teachers import DiffusionTeacherSource


@dataclass
class StudentConfig:
    # a diffusers pipeline directory (model_index.json: StableDiffusion3Pipeline, FluxPipeline), a
    # class-conditioned denoiser directory (config.json + scheduler_config.json), or zoo:digits/student
    path: str = MISSING
    guidance_scale: float = 1.0  # the student's own classifier-free guidance (1 = a guidance-free student)
    resolution: int = 0  # pipelines: image height = width in pixels (0 = the pipeline's default)
    max_sequence_length: int = 0  # pipelines: T5 tokens per prompt (0 = the pipeline's default: SD3 256, FLUX 512)
    # LoRA on the transformer / denoiser (PEFT; unified_opd/lora.py), on the attention projections
    # by default as diffusers' LoRA fine-tuning does; final/ then holds the merged pipeline and lora/
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(target_modules=list(ATTENTION_PROJECTIONS)))


@dataclass
class ExpertConfig:
    path: str = MISSING  # a pipeline or denoiser directory (as student.path) or zoo:digits/expert_0_4
    classes: List[int] = field(default_factory=list)  # class-conditioned: the class ids this expert teaches (routing)
    tasks: List[str] = field(default_factory=list)  # text-to-image: the record `task` tags it teaches; no classes/tasks = all


@dataclass
class TeacherConfig(CoreTeacherConfig):
    """The core teacher shape; `experts` also decide, whatever the kind, which teacher makes the
    anchor's samples of a class and how the evaluation groups classes."""

    kind: str = "router"  # router (each class to its expert) | pool | model | self (registry unified_opd/teacher_kinds.py)
    experts: List[ExpertConfig] = field(default_factory=list)
    guidance_scale: float = 1.0  # classifier-free guidance of every teacher (w in v_u + w·(v_c − v_u); 1 = none)
    combine: Any = None  # replaced by teacher.kind (kept to say so)
    pool_weights: Any = None  # replaced by teacher.weights (kept to say so)


REPLACED_TEACHER_KEYS = {
    "combine": "teacher.kind: router|pool (pool: the models in teacher.members, weights in teacher.weights)",
    "pool_weights": "teacher.weights (with teacher.kind: pool and teacher.members)",
}


@dataclass
class DataConfig:
    classes: List[int] = field(default_factory=lambda: list(range(10)))  # class-conditioned: the classes distilled on
    prompts: List[str] = field(default_factory=list)  # text-to-image: the prompts distilled on (or data.path)
    path: Optional[str] = None  # text-to-image: JSONL / JSON / parquet / CSV / datasets records with `prompt` (+ `task`)


@dataclass
class RolloutConfig:
    batch_size: int = 10  # conditions (class records) per step
    num_samples: int = 2  # trajectories per condition
    num_steps: int = 10  # scheduler steps per trajectory
    mode: str = "sde"  # sde (Flow-GRPO SDE, Gaussian steps) | ode (Euler; KL = velocity matching)
    noise_level: float = 0.7  # SDE: a in g(σ) = a·sqrt(σ/(1−σ))
    ode_std: float = 0.1  # ODE: reference std r; step std = r·|Δσ|, KL = ‖v_s − v_t‖²/(2r²)


@dataclass
class AnchorConfig:
    weight: float = 0.0  # manifold anchor: weight of a flow-matching loss on teacher samples (0 = off)
    batch_size: int = 64  # teacher samples per anchor step
    samples_per_class: int = 64  # teacher samples per class or prompt, generated once (ODE), for the anchor and the cold start


@dataclass
class ColdStartConfig:
    steps: int = 0  # supervised flow-matching steps on teacher samples before OPD (0 = off)
    lr: float = 1e-3
    batch_size: int = 64


@dataclass
class EvalConfig:
    # judge: the digit classifier (accuracy, FD) or a prompt judge (zoo:shapes/judge: score, FD); None: grids only
    classifier: Optional[str] = "zoo:digits/classifier"
    samples_per_class: int = 50  # per class or prompt
    batch_size: int = 250
    prompts: List[str] = field(default_factory=list)  # text-to-image: evaluation prompts (empty: the first max_prompts training prompts)
    max_prompts: int = 8
    sampler: str = "rollout"  # rollout (the training sampler) | ode | sde
    seed: int = 1234  # fixed noise, shared by student and teachers, so evals are comparable
    grid_per_class: int = 10  # samples per class in the PNG grid
    teacher: bool = True  # also report the experts' figures (once per run)


@dataclass
class DiffusionRunConfig(RunConfig):
    domain: str = "diffusion"
    cpu_threads: int = 0  # torch intra-op threads (0 = torch's default; 1 is fastest for tiny models on a busy CPU)
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


EVAL_SAMPLERS = ("rollout", "ode", "sde")
DIGIT_JUDGE = "zoo:digits/classifier"


def check_text_inputs(cfg: Any, text: bool) -> None:
    """A text-to-image student needs prompts and a prompt judge, not the digit classifier (checked before any load
    when `student.path` is a local pipeline, `config.check`; after the student's load otherwise)."""
    if text and cfg.eval.classifier == DIGIT_JUDGE:
        raise ConfigError(f"eval.classifier: {DIGIT_JUDGE} judges class-conditioned digits; a text-to-image student needs a prompt judge (zoo:shapes/judge) or null")
    if text and not cfg.data.prompts and not cfg.data.path:
        raise ConfigError("data.prompts: a text-to-image student needs prompts (data.prompts, or data.path records with a 'prompt' field)")


def check(cfg) -> None:
    """The diffusion domain's value checks, before any model load or zoo build. The checks that
    need a model (class ids against the model's classes, latent shapes) come with the loads."""
    t = cfg.teacher
    check_replaced_keys(t, "teacher", REPLACED_TEACHER_KEYS)
    if len(t.experts) == 0:
        raise ConfigError("teacher.experts: at least one expert teacher is required")
    check_teacher(t, DiffusionTeacherSource)
    check_lora(cfg.student)
    if t.pool_rule != "fixed":
        # every teacher's step Gaussian has the rollout's std, so their entropies never differ
        raise ConfigError(f"teacher.pool_rule: diffusion pools with fixed weights only (teacher.weights), got {t.pool_rule!r}")
    if cfg.rollout.num_samples < 1:
        raise ConfigError(f"rollout.num_samples: expected a positive integer, got {cfg.rollout.num_samples}")
    SamplerSpec.from_config(cfg.rollout)
    for key, value in (("student.guidance_scale", cfg.student.guidance_scale), ("teacher.guidance_scale", t.guidance_scale)):
        if value < 1:
            raise ConfigError(f"{key}: expected a guidance scale >= 1 (1 = no guidance), got {value}")
    for key, value in (("student.resolution", cfg.student.resolution), ("student.max_sequence_length", cfg.student.max_sequence_length)):
        if value < 0:
            raise ConfigError(f"{key}: expected a positive integer or 0 (the pipeline's default), got {value}")
    if cfg.data.prompts and cfg.data.path:
        raise ConfigError("data.prompts: give the prompts either inline (data.prompts) or in a file (data.path), not both")
    require_one_of("eval.sampler", cfg.eval.sampler, EVAL_SAMPLERS)
    if not str(cfg.student.path).startswith("zoo:"):
        check_text_inputs(cfg, is_pipeline(str(cfg.student.path)))
