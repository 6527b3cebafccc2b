"""Config schema of the text domain (every key documented in the README's table), and `check`,
its value checks (run before any model loads or zoo entry builds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING

from unified_opd.config import RunConfig
from unified_opd.errors import ConfigError
from unified_opd.lora import LoraConfig, check_lora
from unified_opd.data import VERIFIERS
from unified_opd.math_answers import check_available as check_math_available
from unified_opd.domains.lm import (
    EngineConfig, check_chat_template, check_engine, check_sampling, check_stop_strings, uses_sampled_estimator,
)
from unified_opd.domains.lm.cross_tokenizer import check_cross_tokenizer
from unified_opd.teacher_config import TeacherConfig as CoreTeacherConfig
from unified_opd.teacher_kinds import check_teacher
from unified_opd.zoo import check_eval_data

from .teachers import TextTeacherSource
from .views import TEACHER_VIEWS


@dataclass
class StudentConfig:
    path: str = MISSING  # a model directory (AutoModelForCausalLM + AutoTokenizer), zoo:NAME/sub, or a Hub id owner/name
    revision: Optional[str] = None  # a Hub id's branch, tag or commit (default: main)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False  # only for model repos you trust; off by default
    lazy_logits: bool = True  # project hidden states to the vocabulary in chunks (no N x V logits)
    lora: LoraConfig = field(default_factory=LoraConfig)  # train PEFT LoRA adapters instead of every weight (r > 0)


@dataclass
class CacheConfig:
    """Lightning OPD: a teacher's top-k log-probs on a fixed set of rollouts (`uopd cache-teacher`)."""

    dir: Optional[str] = None  # where `uopd cache-teacher` writes and `teacher.kind: cache` reads
    top_k: int = 8  # log-probs kept per position (plus the tail bucket)
    rollouts: str = "teacher"  # whose samples are cached: teacher (Lightning's teacher consistency) | student
    prompts: int = 512  # training prompts cached (the first ones of data.path); x rollout.num_samples rollouts
    batch_size: int = 64  # prompts per generation batch while writing


@dataclass
class TeacherConfig(CoreTeacherConfig):
    """The core teacher shape (kind, path, reference, ema, experts, members, weights, ...) plus the LM's own."""

    revision: Optional[str] = None  # teacher.path as a Hub id: its branch, tag or commit (default: main)
    dtype: str = "float32"
    trust_remote_code: bool = False
    view: str = "same"  # what the teacher reads (registry domains/text/views.py): same | answer_hint
    # a teacher with another tokenizer (kind model): same (default: a different one is an error) |
    # align (GOLD-style spans by character offsets, for the sampled-token loss) | uld (sorted
    # probabilities on the student's ranks; divergence.name: tv is the ULD loss); docs/cross_tokenizer.md
    tokenizer: str = "same"
    cache: CacheConfig = field(default_factory=CacheConfig)  # kind cache (Lightning OPD)


@dataclass
class DataConfig:
    # records with a `prompt` string or chat `messages` (and optional `answer`, `task`): a JSONL,
    # JSON, parquet or CSV file, a Dataset.save_to_disk directory, or a Hub dataset name (owner/name)
    path: str = MISSING
    eval_path: Optional[str] = None  # held-out records for evaluation, same forms (defaults to data.path)
    split: str = "train"  # the split of data.path read from a save_to_disk DatasetDict or a Hub dataset
    eval_split: str = "test"  # the same for data.eval_path
    name: Optional[str] = None  # a Hub dataset's config name (e.g. main for openai/gsm8k)
    prompt_field: str = "prompt"
    messages_field: str = "messages"  # a list of {role, content} turns, rendered with the chat template
    answer_field: str = "answer"
    verifier: str = "exact_match"  # exact_match | numeric | math (needs the extra `math`: math-verify)
    chat_template: str = "auto"  # auto (use the tokenizer's if it has one) | always | never
    system_prompt: Optional[str] = None  # prepended as a system message when a chat template is used


@dataclass
class RolloutConfig(EngineConfig):
    # and the engine's keys (EngineConfig): engine hf | vllm, sync_every, is_correction, is_cap, vllm.*
    batch_size: int = 16  # prompts per step
    num_samples: int = 4  # completions per prompt
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    stop: List[str] = field(default_factory=list)  # strings that end a completion (cut after, rest masked)


@dataclass
class EvalConfig:
    size: int = 500  # held-out prompts evaluated (greedy decoding)
    batch_size: int = 250
    teacher: bool = True  # also report the teacher's accuracy (once per run)
    kl: bool = True  # also report the mean reverse KL to the teacher on the student's outputs


@dataclass
class TextRunConfig(RunConfig):
    domain: str = "text"
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def check(cfg) -> None:
    """Value errors of a text run, as ConfigErrors naming the field; loads nothing."""
    VERIFIERS.get(cfg.data.verifier, "data.verifier")
    if cfg.data.verifier == "math":
        check_math_available("data.verifier")
    check_lora(cfg.student)
    check_sampling(cfg.rollout)
    TEACHER_VIEWS.get(cfg.teacher.view, "teacher.view")
    check_chat_template(cfg.data.chat_template, "data.chat_template")
    check_stop_strings(cfg.rollout.stop)
    check_engine(cfg.rollout, uses_sampled_estimator(cfg))
    check_teacher(cfg.teacher, TextTeacherSource)
    check_eval_data(cfg.data)
    check_cross_tokenizer(cfg.teacher)
    check_supervised_rollouts(cfg)


def check_supervised_rollouts(cfg) -> None:
    """SeqKD (`objective.estimator: supervised`) maximises the likelihood of the rollout's tokens:
    on the student's own samples that only sharpens the student, so the rollouts must be the
    teacher's cached samples."""
    if cfg.objective.estimator != "supervised":
        return
    t = cfg.teacher
    if t.kind != "cache" or t.cache.rollouts != "teacher":
        raise ConfigError(
            f"objective.estimator: 'supervised' (SeqKD) trains on the teacher's own samples; expected teacher.kind: cache "
            f"with teacher.cache.rollouts: teacher, got teacher.kind {t.kind!r}"
            + (f", teacher.cache.rollouts {t.cache.rollouts!r}" if t.kind == "cache" else "")
        )

