"""Language-model teachers: a module that scores the student's sequences on the rollout's
teacher view (`rollout.view_for_teacher`), aligned to the student's positions.

`lm_teacher_view(module)` is the one scorer: the core composes the self-teacher kinds from it
(the live student: the policy's own module; an EMA or frozen copy: a deep copy of it).
`LMTeacher` is a separate frozen model (`load_lm_teacher` loads one from a path and checks it
shares the student's vocabulary). `LMTeacherSource` is how the core's teacher kinds
(`unified_opd.teacher_kinds`) load and view LM teachers for the text and agent domains.
"""

from __future__ import annotations

from typing import Optional

import torch

from unified_opd.distributions import Categorical
from unified_opd.interfaces import Teacher
from unified_opd.rollout import Rollout

from .loading import check_same_vocabulary, load_causal_lm
from .policy import LMPolicy
from .scoring import HiddenStates, view_distribution
from .cross_tokenizer import CrossTokenizerTeacher
from .served import is_url, served_teacher
from .stopping import stop_ids


class ViewScorer(Teacher):
    """Scores `rollout.view_for_teacher` with `module` as it is: no copy, no freezing (so it may
    be the student's live module; no gradients flow through it)."""

    def __init__(self, module: HiddenStates):
        self.module = module

    @torch.no_grad()
    def distribution(self, rollout: Rollout) -> Categorical:
        return view_distribution(self.module, self.module, rollout.view_for_teacher, rollout.student_view["prompt_len"])


def lm_teacher_view(module: HiddenStates) -> Teacher:
    """A Teacher that scores rollouts with THIS module (a `HiddenStates`) on the teacher view."""
    return ViewScorer(module)


class LMTeacher(ViewScorer):
    """A frozen language model (causal or image-text) as the teacher."""

    def __init__(self, lm, lazy: bool = True):
        super().__init__(HiddenStates(lm, lazy).eval().requires_grad_(False))



def load_lm_teacher(
    path: str, dtype: str, trust_remote_code: bool, field: str, tokenizer, student_lm, device, lazy: bool = True,
    revision: Optional[str] = None,
) -> LMTeacher:
    """The causal LM at `path` as a frozen teacher on `device`, after checking it scores the
    student's token ids (`tokenizer`, `student_lm`); errors name `field`."""
    lm, tok = load_causal_lm(path, dtype, trust_remote_code, field, revision)
    check_same_vocabulary(tokenizer, tok, student_lm, lm, field)
    return LMTeacher(lm.to(device), lazy)


class LMTeacherSource:
    """`unified_opd.teacher_kinds.TeacherSource` for causal LMs: teachers load in `teacher.dtype`
    onto the device and must share the student's vocabulary; `view_of` is `lm_teacher_view`.
    A domain subclasses it to name itself (`domain`) and to add optional capabilities."""

    domain = "lm"

    def __init__(self, cfg, policy: LMPolicy, device):
        self.cfg, self.policy, self.device = cfg, policy, device

    def load(self, path: str, field: str) -> Teacher:
        """A model path, or an endpoint URL (a served teacher; inside a router or pool, dense)."""
        if is_url(path):
            return self.served([path], field, dense=field != "teacher")
        t, p = self.cfg.teacher, self.policy
        # `teacher.revision` pins `teacher.path` only; other teacher models load at their default revision
        revision = getattr(t, "revision", None) if field == "teacher" else None
        mode = getattr(t, "tokenizer", "same")
        if mode != "same" and field == "teacher":
            lm, tok = load_causal_lm(path, t.dtype, t.trust_remote_code, field, revision)
            return CrossTokenizerTeacher(lm.to(self.device), tok, p.preprocessor, p.module, mode, stop_ids(p.preprocessor, p.lm))
        return load_lm_teacher(
            path, t.dtype, t.trust_remote_code, field, p.preprocessor, p.lm, self.device, self.cfg.student.lazy_logits, revision
        )

    def view_of(self, module: HiddenStates, field: str) -> Teacher:
        return lm_teacher_view(module)

    def served(self, urls, field: str, dense: bool) -> Teacher:
        """A teacher behind `urls` (`teacher.server.*`), checked against the student's tokenizer."""
        vocab = self.policy.lm.get_output_embeddings().weight.shape[0]
        return served_teacher(urls, self.cfg.teacher.server, field, self.policy.preprocessor, vocab, dense)
