"""Config schema of the diffusion domain (every key documented in docs/diffusion.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from unified_opd.config import RunConfig


@dataclass
class StudentConfig:
    path: str = MISSING  # a diffusers model directory (+ scheduler_config.json) or zoo:digits/student


@dataclass
class ExpertConfig:
    path: str = MISSING  # a diffusers model directory or zoo:digits/expert_0_4
    classes: List[int] = field(default_factory=list)  # the class ids this expert teaches (routing); empty = all


@dataclass
class TeacherConfig:
    experts: List[ExpertConfig] = field(default_factory=list)
    combine: str = "route"  # route (each class to its expert) | pool (log-linear pool of all experts)
    pool_weights: List[float] = field(default_factory=list)  # combine=pool: one weight per expert
    reference: Optional[str] = None  # "student": frozen initial student, the reference of objective.lam != 1


@dataclass
class DataConfig:
    classes: List[int] = field(default_factory=lambda: list(range(10)))  # conditions the student is distilled on


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
    samples_per_class: int = 64  # teacher samples generated once (ODE) for the anchor and the cold start


@dataclass
class ColdStartConfig:
    steps: int = 0  # supervised flow-matching steps on teacher samples before OPD (0 = off)
    lr: float = 1e-3
    batch_size: int = 64


@dataclass
class EvalConfig:
    classifier: Optional[str] = "zoo:digits/classifier"  # judge of accuracy and FD (None: grids only)
    samples_per_class: int = 50
    batch_size: int = 250
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
