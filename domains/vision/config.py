"""Config schema of the vision domain (every key documented in docs/vision.md), and `check`, its
value checks (run before any model loads or zoo entry builds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from unified_opd.config import RunConfig
from unified_opd.data import VERIFIERS
from unified_opd.domains.lm import check_sampling
from unified_opd.errors import ConfigError, require_one_of
from unified_opd.lora import LoraConfig, check_lora
from unified_opd.teacher_config import TeacherConfig as CoreTeacherConfig
from unified_opd.teacher_config import check_replaced_keys
from unified_opd.teacher_kinds import check_teacher
from unified_opd.zoo import check_eval_data

from .crops import Cropper
from .data import ON_ERROR
from .teachers import VisionTeacherSource

VIEWS = ("crop", "full")
REPLACED_TEACHER_KEYS = {
    "source": "teacher.kind: self with teacher.ema: 0 (live), 1 (frozen) or a decay in (0, 1) (EMA)",
    "ema_decay": "teacher.ema (with teacher.kind: self)",
}


@dataclass
class StudentConfig:
    path: str = MISSING  # AutoModelForImageTextToText + AutoProcessor directory, or zoo:finedetail/student
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False  # only for model repos you trust; off by default
    lazy_logits: bool = True  # project hidden states to the vocabulary in chunks (no N x V logits)
    lora: LoraConfig = field(default_factory=LoraConfig)  # train PEFT LoRA adapters instead of every weight (r > 0)


@dataclass
class TeacherConfig(CoreTeacherConfig):
    """The core teacher shape; Vision-OPD's default is the student itself (`kind: self`) frozen at
    its initial weights (`ema: 1`) reading the crop; `ema: 0` is the live student, a value in (0, 1)
    an EMA of its weights; `kind: model` with `path` is a separate teacher."""

    kind: str = "self"
    ema: float = 1.0
    view: str = "crop"  # crop (the image cropped to the task's region) | full (the same image)
    source: Any = None  # replaced by teacher.kind: self with teacher.ema (kept to say so)
    ema_decay: Any = None  # replaced by teacher.ema (kept to say so)
    dtype: str = "float32"
    trust_remote_code: bool = False
    crop_fn: str = "metadata"  # how the crop box is found: metadata (record's data.box_field) or a registered name
    crop_margin: float = 0.25  # the box grows by this fraction of its size on every side
    crop_square: bool = True  # grow the box to a square (image processors centre-crop non-square inputs)
    crop_upscale: float = 1.0  # resize the crop by this factor before the processor (bicubic)


@dataclass
class DataConfig:
    path: str = MISSING  # JSONL: image (path relative to the file), prompt, answer, box, task
    eval_path: Optional[str] = None  # held-out JSONL (defaults to data.path)
    image_field: str = "image"  # a path, or a list of paths (several images per prompt; the box is on the first)
    prompt_field: str = "prompt"
    messages_field: str = "messages"  # chat messages with image parts, used instead of the prompt when a record has them
    answer_field: str = "answer"
    box_field: str = "box"  # [x0, y0, x1, y1] of the evidence region
    box_format: str = "pixels"  # pixels | normalized (fractions of width and height)
    verifier: str = "exact_match"  # exact_match | numeric
    system_prompt: Optional[str] = None  # prepended as a system message when the processor has a chat template
    on_error: str = "raise"  # raise (UserError naming the record and field) | skip (drop and count bad records)


@dataclass
class RolloutConfig:
    batch_size: int = 16  # prompts (images) per step
    num_samples: int = 2  # completions per prompt
    max_new_tokens: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off


@dataclass
class EvalConfig:
    size: int = 300  # held-out records evaluated (greedy decoding)
    batch_size: int = 100
    kl: bool = True  # mean reverse KL between the student (full image) and the teacher (its view)
    examples: int = 8  # images in the examples PNG written to trainer.output_dir (0 = none)


@dataclass
class VisionRunConfig(RunConfig):
    domain: str = "vision"
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _check_teacher(t) -> None:
    check_replaced_keys(t, "teacher", REPLACED_TEACHER_KEYS)
    require_one_of("teacher.view", t.view, VIEWS)
    if t.kind == "self" and t.view == "full":
        raise ConfigError("teacher.path: view=full needs a separate teacher model (the student on its own view is itself)")
    if t.kind == "self" and t.path is not None:
        raise ConfigError("teacher.kind: teacher.path is set but teacher.kind is self; set teacher.kind=model for a separate teacher")
    check_teacher(t, VisionTeacherSource)


def check(cfg) -> None:
    """Value errors of a vision run, as ConfigErrors naming the field; loads nothing."""
    VERIFIERS.get(cfg.data.verifier, "data.verifier")
    check_lora(cfg.student)
    check_sampling(cfg.rollout)
    _check_teacher(cfg.teacher)
    require_one_of("data.on_error", cfg.data.on_error, ON_ERROR)
    Cropper(cfg.teacher, cfg.data)  # crop_fn, crop_margin, crop_upscale
    check_eval_data(cfg.data)
