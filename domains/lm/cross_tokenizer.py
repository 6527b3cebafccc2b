"""Teachers with another tokenizer than the student's (`teacher.tokenizer: align | uld`).

The student's prompt and completion are decoded to text and re-tokenised with the teacher's
tokenizer (prompt and completion separately, so their boundary stays a token boundary; the
student's EOS maps to the teacher's). A special token inside the completion is kept as its text
("<unk>"), so the teacher reads it as its own special token of that name or as plain text, and
scores it: skipped, it would take no characters, the teacher's span probability would not
cover it, and align would reward the student for its surprisal. Both token sequences are placed
on the completion's characters (`char_ends`): the student's by decoding its own tokens one more
at a time (its sampled tokens, which need not be how its tokenizer would cut the text), the
teacher's by its offsets. Where both have a token boundary at the same character, a span ends
(`aligned_spans`).

align (GOLD-style, Patiño et al. 2025, TRL's GOLD trainer): the teacher's log-probability of a
    span is the sum over its own tokens in the span; it is shared out over the student's tokens
    of the span in proportion to their share of the student's own surprisal (`span_targets`), so
    each target is a probability, the targets of a span multiply to the teacher's span
    probability, and per-token advantages log q − log π_θ sum over a span to the span's
    log-ratio. With one token per span on both sides it is the same-tokenizer teacher exactly.
    The result is a one-token sparse Categorical (the action, and the rest as the tail): meant
    for the sampled-token estimator (`divergence.name: reverse_kl`); an analytic divergence
    sees only the action/rest split.
uld (Universal Logit Distillation, Boizard et al. 2024): at each student position, the teacher's
    distribution where the teacher token covering the student token's first character is
    predicted; its probabilities sorted and laid on the student's tokens in the student's own
    order (`uld_target`), so `divergence.name: tv` is ULD's sorted-probability L1 distance (/2,
    up to the last rank, see `uld_target`).
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from unified_opd.distributions import Categorical
from unified_opd.errors import ConfigError, require_one_of
from unified_opd.interfaces import Teacher
from unified_opd.rollout import Rollout

from .scoring import HiddenStates, view_distribution

MODES = ("same", "align", "uld")


def check_cross_tokenizer(t) -> None:
    """`teacher.tokenizer`: one of MODES; align and uld score one teacher model (kind model) on
    the student's own view."""
    require_one_of("teacher.tokenizer", t.tokenizer, MODES)
    if t.tokenizer != "same" and (t.kind != "model" or t.view != "same"):
        raise ConfigError(f"teacher.tokenizer: {t.tokenizer} needs teacher.kind: model and teacher.view: same, got {t.kind} and {t.view}")


def char_ends(tok, ids: Sequence[int]) -> List[int]:
    """The character where each token of `ids` ends in `tok.decode(ids)` (special tokens kept
    as their text), by decoding one more token at a time."""
    ends, ids = [], list(ids)
    for i in range(len(ids)):
        ends.append(len(tok.decode(ids[: i + 1], skip_special_tokens=False)))
    return ends


def aligned_spans(student_ends: Sequence[int], teacher_ends: Sequence[int]) -> List[Tuple[range, range]]:
    """Spans of tokens covering the same characters: (student token range, teacher token range)
    between consecutive characters where both sequences end a token (and the text's end)."""
    total = max([*student_ends, *teacher_ends, 0])
    common = sorted((set(student_ends) & set(teacher_ends)) | {total})
    spans, s, t = [], 0, 0
    for b in common:
        s_hi, t_hi = s, t
        while s_hi < len(student_ends) and student_ends[s_hi] <= b:
            s_hi += 1
        while t_hi < len(teacher_ends) and teacher_ends[t_hi] <= b:
            t_hi += 1
        if s_hi > s:
            spans.append((range(s, s_hi), range(t, t_hi)))
        s, t = s_hi, t_hi
    return spans


def span_targets(student_logp: Tensor, teacher_logp: Tensor, spans: Sequence[Tuple[range, range]]) -> Tensor:
    """GOLD-style per-student-token targets: for a span with student log-probs ℓ_i and teacher
    span log-prob L_T = Σ_{teacher tokens j in span} teacher_logp_j,

        log q_i = w_i · L_T,   w_i = ℓ_i / Σ_span ℓ   (w_i = 1/n when the student is certain, Σℓ = 0)

    so q_i ≤ 1, Π_span q_i = exp(L_T), and Σ_span (log q_i − ℓ_i) = L_T − Σ_span ℓ."""
    out = torch.zeros_like(student_logp)
    for s, t in spans:
        ls = student_logp[s.start : s.stop]
        total_t = teacher_logp[t.start : t.stop].sum()
        total_s = ls.sum()
        w = ls / total_s if total_s < 0 else torch.full_like(ls, 1.0 / len(ls))
        out[s.start : s.stop] = w * total_t
    return out


def uld_target(student_logp: Tensor, teacher_logp: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """ULD's rank matching: `[n, V_S]`, `[n, V_T]` log-probs -> (log-probs, student token ids)
    `[n, k]`: the teacher's k largest probabilities, the i-th largest on the student's i-th most
    likely token. With the tail bucket (the teacher's mass beyond rank k), for k = V_S <= V_T,

        TV(student, target) = ½ Σ_i |sort(p_S)_i − sort(p_T)_i|   (vocabularies zero-padded),

    the ULD loss halved. The teacher uses k = min(V_S − 1, V_T): an empty student tail bucket
    would have no gradient (log(1 − 1)), so the student's least likely token shares the tail
    bucket with the teacher's mass beyond rank k."""
    order = student_logp.argsort(-1, descending=True)[..., :k]
    values = teacher_logp.float().sort(-1, descending=True).values[..., :k]
    return values, order


class CrossTokenizerTeacher(Teacher):
    """A frozen teacher LM with its own tokenizer, scoring the student's completions (see the
    module docstring); `student` is the student's live module (align needs its log-probs);
    `stop`: the ids that end the student's completions (`stopping.stop_ids`: a chat model ends a
    turn on its own token as well as on EOS), each scored as the teacher's EOS."""

    def __init__(self, lm, tok, student_tok, student: HiddenStates, mode: str, stop: Sequence[int]):
        self.module = HiddenStates(lm, lazy=False).eval().requires_grad_(False)
        self.tok, self.student_tok, self.student, self.mode = tok, student_tok, student, mode
        self.stop = set(stop)
        self.vocab_size = int(student.head()[0].shape[0])

    def _teacher_row(self, prompt_ids: List[int], completion: List[int]):
        """The teacher's token ids of one row, where its completion starts, and the span table."""
        st = self.student_tok
        eos = bool(completion) and completion[-1] in self.stop
        body = completion[:-1] if eos else completion
        text = st.decode(body, skip_special_tokens=False)
        t_prompt = self.tok(st.decode(prompt_ids, skip_special_tokens=True))["input_ids"]
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        t_comp, t_ends = list(enc["input_ids"]), [e for _, e in enc["offset_mapping"]]
        s_ends = char_ends(st, body)
        if eos:  # the EOS tokens are a span of their own, after the text
            t_comp.append(self.tok.eos_token_id)
            s_ends, t_ends = s_ends + [len(text) + 1], t_ends + [len(text) + 1]
        return t_prompt + t_comp, len(t_prompt), aligned_spans(s_ends, t_ends), t_ends, s_ends

    @torch.no_grad()
    def distribution(self, rollout: Rollout) -> Categorical:
        view = rollout.student_view
        ids, attn, P = view["input_ids"].cpu(), view["attention_mask"].cpu().bool(), view["prompt_len"]
        student = view_distribution(self.student, self.student, view, P)
        rows = [self._teacher_row(r[:P][a[:P]].tolist(), r[P:][a[P:]].tolist()) for r, a in zip(ids, attn)]
        t_logp = self._teacher_log_probs([r[0] for r in rows])
        B, n = ids.shape
        k = 1 if self.mode == "align" else min(self.vocab_size - 1, t_logp.shape[-1])
        lp = torch.full((B, n - 1, k), -math.log(self.vocab_size))
        idx = torch.arange(k).repeat(B, n - 1, 1)
        s_logp = student.log_prob(rollout.actions).cpu() if self.mode == "align" else student.log_probs().cpu()
        for b, (seq, start, spans, t_ends, s_ends) in enumerate(rows):
            pos = torch.arange(P - 1, P - 1 + len(s_ends))  # student positions predicting completion tokens
            t_pos = torch.arange(start - 1, len(seq) - 1)  # teacher positions predicting its completion tokens
            if self.mode == "align":
                own = t_logp[b, t_pos].gather(-1, torch.tensor(seq[start:]).unsqueeze(-1)).squeeze(-1)
                lp[b, pos, 0] = span_targets(s_logp[b, pos], own, spans)
                idx[b, pos, 0] = rollout.actions[b, pos].cpu()
            else:
                starts = [0, *s_ends[:-1]]
                cover = torch.tensor([next((j for j, e in enumerate(t_ends) if e > c), len(t_ends) - 1) for c in starts])
                lp[b, pos], idx[b, pos] = uld_target(s_logp[b, pos], t_logp[b, t_pos[cover]], k)
        device = rollout.loss_mask.device
        return Categorical.from_topk(lp.to(device), idx.to(device), self.vocab_size)

    def _teacher_log_probs(self, seqs: List[List[int]]) -> Tensor:
        """Log-probs `[B, n_T, V_T]` of the teacher on its own sequences, right-padded so that
        position i is every row's i-th token (the padding comes after each row's last)."""
        n, pad = max(len(s) for s in seqs), self.tok.pad_token_id or 0
        device = next(self.module.parameters()).device
        ids = torch.tensor([s + [pad] * (n - len(s)) for s in seqs], device=device)
        attn = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs], device=device)
        return torch.log_softmax(self.module(ids, attn).float(), -1).cpu()
