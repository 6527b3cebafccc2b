"""Config schema of the agent domain (multi-turn OPD in gymnasium text environments), and
`check`, its value checks (run before any model loads, env is made or zoo entry builds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import MISSING

from unified_opd.config import DivergenceConfig, RunConfig
from unified_opd.domains.lm import EngineConfig, check_chat_template, check_engine, check_positive, check_sampling, uses_sampled_estimator
from unified_opd.errors import ConfigError, require_one_of
from unified_opd.lora import LoraConfig, check_lora
from unified_opd.teacher_config import TeacherConfig as CoreTeacherConfig
from unified_opd.teacher_kinds import check_teacher

from .teachers import AgentTeacherSource

OUTCOMES = ("success", "return")


@dataclass
class StudentConfig:
    path: str = MISSING  # a model directory (AutoModelForCausalLM + AutoTokenizer) or zoo:NAME/sub
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False
    lazy_logits: bool = True  # project hidden states to the vocabulary in chunks (no N x V logits)
    lora: LoraConfig = field(default_factory=LoraConfig)  # train PEFT LoRA adapters instead of every weight (r > 0)


@dataclass
class TeacherConfig(CoreTeacherConfig):
    """The core teacher shape (by default kind model with `path`; also self, pool, and a G-OPD
    `reference`) plus the LM's loading options; teachers must share the student's tokenizer."""

    dtype: str = "float32"
    trust_remote_code: bool = False


@dataclass
class EnvConfig:
    id: str = MISSING  # a registered gymnasium id, e.g. uopd/KeyDoor-v0
    kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make
    # merged over kwargs for the held-out episodes only (e.g. TextWorld's games_dir, ScienceWorld's split)
    eval_kwargs: Dict[str, Any] = field(default_factory=dict)
    train_seed_start: int = 0  # training episodes reset with seeds [start, start + train_seeds)
    train_seeds: int = 10000
    eval_seed_start: int = 1_000_000  # held-out episodes use seeds [start, start + eval.episodes)


@dataclass
class RolloutConfig(EngineConfig):
    # and the engine's keys (EngineConfig): engine hf | vllm, sync_every, vllm.* (is_correction: none only)
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


def check(cfg) -> None:
    """Value errors of an agent run, as ConfigErrors naming the field; loads nothing."""
    r, e, env = cfg.rollout, cfg.eval, cfg.env
    check_lora(cfg.student)
    check_teacher(cfg.teacher, AgentTeacherSource)
    check_sampling(r, ("batch_size", "max_action_tokens"))
    for key in ("max_turns", "max_episode_tokens"):
        if r[key] < 0:
            raise ConfigError(f"rollout.{key}: expected 0 (no limit of its own) or a positive integer, got {r[key]}")
    check_chat_template(r.chat_template, "rollout.chat_template")
    check_engine(r, uses_sampled_estimator(cfg))
    if r.is_correction != "none":
        raise ConfigError("rollout.is_correction: the agent domain does not carry the engine's log-probs into transcripts yet; use none")
    require_one_of("rollout.outcome", r.outcome, OUTCOMES)
    check_positive(env, "env", ("train_seeds",))
    check_positive(e, "eval", ("episodes", "batch_size"))
    if env.eval_seed_start < env.train_seed_start + env.train_seeds and env.train_seed_start < env.eval_seed_start + e.episodes:
        raise ConfigError(
            f"env.eval_seed_start: held-out seeds [{env.eval_seed_start}, {env.eval_seed_start + e.episodes}) overlap "
            f"the training seeds [{env.train_seed_start}, {env.train_seed_start + env.train_seeds})"
        )
