"""Config schema of the agent domain (multi-turn OPD in gymnasium text environments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import MISSING

from unified_opd.config import DivergenceConfig, RunConfig


@dataclass
class StudentConfig:
    path: str = MISSING  # a model directory (AutoModelForCausalLM + AutoTokenizer) or zoo:NAME/sub
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False
    lazy_logits: bool = True  # project hidden states to the vocabulary in chunks (no N x V logits)


@dataclass
class TeacherConfig:
    path: str = MISSING  # must share the student's tokenizer
    dtype: str = "float32"
    trust_remote_code: bool = False


@dataclass
class EnvConfig:
    id: str = MISSING  # a registered gymnasium id, e.g. uopd/KeyDoor-v0
    kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make
    train_seed_start: int = 0  # training episodes reset with seeds [start, start + train_seeds)
    train_seeds: int = 10000
    eval_seed_start: int = 1_000_000  # held-out episodes use seeds [start, start + eval.episodes)


@dataclass
class RolloutConfig:
    batch_size: int = 16  # episodes per step (the data stream's records are env seeds)
    max_turns: int = 0  # the agent's turn limit per episode (0 = only the env's own truncation)
    max_action_tokens: int = 16  # tokens the agent may emit per turn (an unfinished action is still sent)
    max_episode_tokens: int = 0  # transcript length cap (0 = the smaller model context of student/teacher)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    outcome: str = "success"  # success (1/0) | return (sum of rewards): the rollout's outcome
    chat_template: str = "auto"  # auto (use the tokenizer's if it has one) | always | never
    system_prompt: Optional[str] = None  # first system message when a chat template is used


@dataclass
class EvalConfig:
    episodes: int = 100  # held-out episodes (seeds from env.eval_seed_start)
    batch_size: int = 50  # episodes run side by side
    greedy: bool = True  # greedy actions (else the rollout's sampling settings)
    teacher: bool = True  # also report the teacher's figures (computed once per run)
    kl: bool = True  # also report the reverse KL to the teacher on the student's agent tokens


@dataclass
class AgentRunConfig(RunConfig):
    domain: str = "agent"
    # MAD-OPD: JSD for agentic tasks; `divergence.name=reverse_kl` switches to plain OPD
    divergence: DivergenceConfig = field(default_factory=lambda: DivergenceConfig(name="jsd"))
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
