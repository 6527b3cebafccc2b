"""The shared language-model layer: what the text, vision and agent domains build on.

Not a registered domain: importing it registers nothing. Loading (`load_causal_lm`,
`check_same_vocabulary`), scoring (`HiddenStates`, `view_distribution`), sampling (`Sampling`,
`sample`, stop ids and strings, the vLLM rollout engine), the student (`LMPolicy`), teachers (`LMTeacher`, `lm_teacher_view`) and the shared
`rollout.*` checks. It imports only the core (`unified_opd.*`), never a domain.
"""

from .checks import CHAT_TEMPLATE_MODES, check_chat_template, check_positive, check_sampling, uses_chat_template
from .loading import (
    DTYPES, check_same_vocabulary, load_causal_lm, load_pretrained, load_student, max_context, model_dir, prepare_tokenizer, weights_options,
)
from .policy import LMPolicy
from .sampler import Sampling, completion_mask, draw, filter_logits, sample
from .stopping import check_stop_strings, cut_text, stop_ids, stop_string_check, stop_string_mask
from .scoring import HiddenStates, view_distribution
from .vllm_engine import EngineConfig, VLLMEngine, check_engine, make_engine, uses_sampled_estimator
from .teacher import LMTeacher, LMTeacherSource, ViewScorer, lm_teacher_view, load_lm_teacher

__all__ = [
    "CHAT_TEMPLATE_MODES", "DTYPES", "EngineConfig", "VLLMEngine", "check_engine", "make_engine", "uses_sampled_estimator", "HiddenStates", "LMPolicy", "LMTeacher", "LMTeacherSource", "Sampling",
    "ViewScorer", "check_chat_template", "check_positive", "check_same_vocabulary",
    "check_sampling", "check_stop_strings", "cut_text", "stop_ids", "stop_string_check", "stop_string_mask", "completion_mask", "draw", "filter_logits", "lm_teacher_view",
    "load_causal_lm", "load_lm_teacher", "load_student", "load_pretrained", "max_context", "model_dir",
    "prepare_tokenizer", "sample", "uses_chat_template", "view_distribution",
    "weights_options",
]
