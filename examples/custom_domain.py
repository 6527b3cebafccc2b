"""A domain written outside the package: a point-mass reaching a goal, with Gaussian actions.

This is the README's "Adding a domain", step by step, for a non-text domain. Put the file on
the Python path (or in a package of yours) and name its module in a config:

    # reach.yaml
    domain: custom_domain            # or mypkg.custom_domain: the module is imported, which registers it
    trainer: {max_steps: 200, lr: 3e-3}

    PYTHONPATH=examples uopd train reach.yaml

The task: a point starts at `start` and should reach `goal` in `rollout.horizon` moves,
s_{t+1} = s_t + a_t. The teacher is a proportional controller, a ~ N(gain · (goal − s), σ²);
the student is a small MLP with a Gaussian head of the same σ, starting from random weights.
Each move is one position of the rollout, so OPD here is the per-step Gaussian KL
(`divergence.name: kl`, the closed-form mean matching ‖μ_θ − μ_T‖² / 2σ²) on the student's own
trajectories. The domain draws its action noise from its own `torch.Generator`, handed to the
trainer in `Components.generators`, so a resumed run continues the same stream (the resume
contract, docs/design.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from safetensors.torch import save_file
from torch import nn

import unified_opd as uo
from unified_opd.config import RunConfig


# ---------------------------------------------------------------- 2. the config schema
@dataclass
class StudentConfig:
    hidden: int = 32  # width of the MLP's hidden layer


@dataclass
class TeacherConfig:
    gain: float = 0.5  # the controller's a = gain · (goal − s)


@dataclass
class DataConfig:
    train_size: int = 256  # (start, goal) pairs to train on
    eval_size: int = 64  # held-out pairs
    seed: int = 1234  # the pairs are drawn from this seed, not trainer.seed


@dataclass
class RolloutConfig:
    batch_size: int = 16  # episodes per step
    horizon: int = 4  # moves per episode
    std: float = 0.1  # σ of every action, student and teacher alike


@dataclass
class EvalConfig:
    samples: int = 4  # sampled episodes per held-out pair for `sampled_distance`


@dataclass
class ReachRunConfig(RunConfig):
    domain: str = "reach"
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def check(cfg) -> None:
    """Values the schema's types cannot express; runs before anything is built."""
    positive = {
        "student.hidden": cfg.student.hidden,
        "rollout.horizon": cfg.rollout.horizon,
        "rollout.std": cfg.rollout.std,
        "rollout.batch_size": cfg.rollout.batch_size,
        "data.train_size": cfg.data.train_size,
        "data.eval_size": cfg.data.eval_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise uo.ConfigError(f"{key}: expected a positive number, got {value}")


# ---------------------------------------------------------------- 1. policy and teacher
def _views(states: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
    """What both sides see at each move: the position and the goal, `[B, T, 4]`."""
    return torch.cat([states, goals.unsqueeze(1).expand_as(states)], dim=-1)


class ReachPolicy(uo.Policy):
    def __init__(self, hidden: int, horizon: int, std: float, generator: torch.Generator):
        self.module = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        self.horizon, self.std, self.generator = horizon, std, generator

    def rollout(self, batch: Sequence[Dict[str, Any]], mean_actions: bool = False) -> uo.Rollout:
        state = torch.tensor([r["start"] for r in batch])
        goal = torch.tensor([r["goal"] for r in batch])
        states, actions = [], []
        for _ in range(self.horizon):
            mean = self.module(torch.cat([state, goal], -1))
            noise = torch.zeros_like(mean) if mean_actions else torch.randn(mean.shape, generator=self.generator)
            action = mean + self.std * noise
            states.append(state)
            actions.append(action)
            state = state + action
        distance = (state - goal).norm(dim=-1)
        b, t = len(batch), self.horizon
        return uo.Rollout(
            actions=torch.stack(actions, 1),  # [B, T, 2]
            loss_mask=torch.ones(b, t),
            step_ids=torch.arange(t).expand(b, t).clone(),
            student_view=_views(torch.stack(states, 1), goal),
            outcome=(distance < 0.1).float(),
            meta={"distance": distance},
        )

    def distribution(self, rollout: uo.Rollout) -> uo.Gaussian:
        return uo.Gaussian(self.train_module(rollout.student_view), self.std)

    def save(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.module.state_dict().items()}, os.path.join(path, "model.safetensors"))


class ControllerTeacher(uo.Teacher):
    """a ~ N(gain · (goal − s), σ²) at every state the student visited."""

    def __init__(self, gain: float, std: float):
        self.gain, self.std = gain, std

    def distribution(self, rollout: uo.Rollout) -> uo.Gaussian:
        view = rollout.view_for_teacher
        return uo.Gaussian(self.gain * (view[..., 2:] - view[..., :2]), self.std)


# ---------------------------------------------------------------- 3. build and register
def _pairs(n: int, generator: torch.Generator) -> List[Dict[str, Any]]:
    points = torch.rand(n, 2, 2, generator=generator) * 2 - 1
    return [{"start": p[0].tolist(), "goal": p[1].tolist()} for p in points]


def _evaluate(cfg, teacher: ControllerTeacher, held_out: List[Dict[str, Any]]):
    def evaluate(policy: ReachPolicy, step: int) -> Dict[str, float]:
        greedy = policy.rollout(held_out, mean_actions=True)
        kl = uo.divergence("kl")(policy.distribution(greedy).select(greedy.mask), teacher.distribution(greedy).select(greedy.mask))
        sampled = policy.rollout(held_out * cfg.eval.samples)  # draws from the domain's generator
        return {
            "kl_to_teacher": float(kl.mean()),
            "distance": float(greedy.meta["distance"].mean()),
            "sampled_distance": float(sampled.meta["distance"].mean()),
        }

    return evaluate


def build(cfg, accelerator) -> uo.Components:
    data_rng = torch.Generator().manual_seed(cfg.data.seed)
    train, held_out = _pairs(cfg.data.train_size, data_rng), _pairs(cfg.data.eval_size, data_rng)
    noise = torch.Generator().manual_seed(cfg.trainer.seed)
    policy = ReachPolicy(cfg.student.hidden, cfg.rollout.horizon, cfg.rollout.std, noise)  # init: global torch RNG
    teacher = ControllerTeacher(cfg.teacher.gain, cfg.rollout.std)
    return uo.Components(policy, teacher, train, evaluate=_evaluate(cfg, teacher, held_out), generators=[noise])


uo.register_domain("reach", ReachRunConfig, build, check=check, distribution="gaussian")
