"""Teachers with another tokenizer (`teacher.tokenizer: align | uld`): the span alignment, the
GOLD-style span targets and ULD's rank matching by hand, and the teacher on a character-level
student with a BPE (digit-pair) teacher, checked against plain forwards of the teacher."""

from __future__ import annotations

import pytest
import torch

from conftest import save_tiny_lm, text_overrides
from unified_opd import divergence
from unified_opd.config import load_config
from unified_opd.distributions import Categorical
from unified_opd.domain import schema_for
from unified_opd.domains.lm.cross_tokenizer import CrossTokenizerTeacher, aligned_spans, char_ends, span_targets, uld_target
from unified_opd.domains.text.zoo import arith
from unified_opd.errors import ConfigError, UserError
from unified_opd.trainer import Trainer


@pytest.fixture(scope="module")
def pair_teacher(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("pair_teacher"), hidden=32, layers=1, seed=4, tok=arith.build_pair_tokenizer())


@pytest.fixture(scope="module")
def answer_pair_teacher(tmp_path_factory):
    tok = arith.build_pair_tokenizer("answer-tail")
    return save_tiny_lm(tmp_path_factory.mktemp("answer_pair_teacher"), hidden=32, layers=1, seed=5, tok=tok)


def _trainer(root, out, teacher, mode, **extra):
    over = {"teacher.path": teacher, "teacher.tokenizer": mode, "eval.kl": False, **extra}
    return Trainer(load_config(None, text_overrides(root, out, **over), schema_for))


def test_spans_of_a_character_and_a_pair_tokenization():
    char, pair = arith.build_tokenizer(), arith.build_pair_tokenizer()
    s = char_ends(char, char("2317", add_special_tokens=False)["input_ids"])
    t = [e for _, e in pair("2317", add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    assert s == [1, 2, 3, 4] and t == [2, 4]  # "23" "17"
    assert aligned_spans(s, t) == [(range(0, 2), range(0, 1)), (range(2, 4), range(1, 2))]
    # boundaries that never meet make one span of everything
    assert aligned_spans([1, 3], [2, 3]) == [(range(0, 2), range(0, 2))]


def test_pair_tokenizers_cut_where_their_split_says():
    char = arith.build_tokenizer()

    def pieces(tok, text):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return tok.convert_ids_to_tokens(enc["input_ids"]), [e for _, e in enc["offset_mapping"]]

    every, answer, tail = (arith.build_pair_tokenizer(p) for p in ("all", "answer", "answer-tail"))
    assert every.get_vocab() == answer.get_vocab() == tail.get_vocab()
    assert pieces(every, "47+08=")[0] == ["47", "+", "08", "="]
    assert pieces(answer, "47+08=")[0] == pieces(tail, "47+08=")[0] == list("47+08=")
    assert pieces(answer, "231")[0] == ["23", "1"] and pieces(tail, "231")[0] == ["2", "31"]
    assert pieces(tail, "55")[0] == ["5", "5"] and pieces(tail, "4567")[0] == ["4", "56", "7"]
    # the student's "2" "3" "1" against "2" "31": a span of one token each, then two against one
    s = char_ends(char, char("231", add_special_tokens=False)["input_ids"])
    assert aligned_spans(s, pieces(tail, "231")[1]) == [(range(0, 1), range(0, 1)), (range(1, 3), range(1, 2))]


def test_span_targets_by_hand():
    student = torch.tensor([-1.0, -3.0, -0.5, 0.0, 0.0])
    teacher = torch.tensor([-2.0, -0.4, -0.6])
    spans = [(range(0, 2), range(0, 1)), (range(2, 3), range(1, 2)), (range(3, 5), range(2, 3))]
    got = span_targets(student, teacher, spans)
    # span 1: shares 1/4 and 3/4 of -2; span 2: one token; span 3: the student is certain, equal shares of -0.6
    assert torch.allclose(got, torch.tensor([-0.5, -1.5, -0.4, -0.3, -0.3]))
    for s, t in spans:  # each span's targets multiply to the teacher's span probability
        assert torch.isclose(got[s.start : s.stop].sum(), teacher[t.start : t.stop].sum())


def test_uld_target_makes_tv_the_sorted_l1_distance():
    ps = torch.tensor([[0.2, 0.5, 0.3]])
    pt = torch.tensor([[0.1, 0.6, 0.05, 0.25]])
    values, ids = uld_target(ps.log(), pt.log(), 3)
    assert ids.tolist() == [[1, 2, 0]] and torch.allclose(values.exp(), torch.tensor([[0.6, 0.25, 0.1]]))
    # ULD: sorted student (.5 .3 .2 0) vs sorted teacher (.6 .25 .1 .05): |.1|+|.05|+|.1|+|.05| = 0.3
    tv = divergence("tv")(Categorical.from_logits(ps.log()), Categorical.from_topk(values, ids, 3))
    assert torch.allclose(tv, torch.tensor([0.15]), atol=1e-6)


def _completion_log_prob(trainer, r, b) -> float:
    """The teacher's log-prob of its own tokenization of row b's completion (+ EOS), by a plain forward."""
    t, st = trainer.teacher, trainer.policy.tokenizer
    v, P = r.student_view, r.student_view["prompt_len"]
    ids, attn = v["input_ids"][b], v["attention_mask"][b].bool()
    completion = ids[P:][attn[P:]].tolist()
    eos = completion and completion[-1] == st.eos_token_id
    text = st.decode(completion[:-1] if eos else completion, skip_special_tokens=False)
    prompt = t.tok(st.decode(ids[:P][attn[:P]].tolist(), skip_special_tokens=True))["input_ids"]
    body = t.tok(text, add_special_tokens=False)["input_ids"] + ([t.tok.eos_token_id] if eos else [])
    seq = torch.tensor([prompt + body])
    logp = torch.log_softmax(t.module.lm(input_ids=seq).logits[0, :-1].float(), -1)
    return float(logp[len(prompt) - 1 :].gather(-1, seq[0, len(prompt) :].unsqueeze(-1)).sum())


@pytest.mark.parametrize("teacher", ["pair_teacher", "answer_pair_teacher"])
def test_align_targets_sum_to_the_teachers_completion_log_prob(tiny_text, teacher, request, tmp_path):
    tr = _trainer(tiny_text, tmp_path / "a", request.getfixturevalue(teacher), "align")
    r = tr.policy.rollout(tr.data.next())
    d = tr.teacher.distribution(r)
    lp, idx = d.topk
    m = r.mask
    assert torch.equal(idx[..., 0][m], r.actions[m]) and bool((lp[m] <= 0).all())
    for b in range(r.batch_size):
        assert float(lp[b, :, 0][m[b]].sum()) == pytest.approx(_completion_log_prob(tr, r, b), abs=1e-4)


def test_with_the_students_own_tokenizer_both_modes_are_the_plain_teacher(tiny_text, tmp_path):
    """One token per span: align's targets are the teacher's log-probs of the actions, and uld's
    values its sorted log-probs (on the student's ranks)."""
    plain = Trainer(load_config(None, text_overrides(tiny_text, tmp_path / "p"), schema_for))
    r = plain.policy.rollout(plain.data.next())
    want = plain.teacher.distribution(r).log_probs()
    m = r.mask
    # special tokens inside completions (an untrained student samples them) are scored too
    special = torch.tensor(plain.policy.tokenizer.all_special_ids)
    assert (torch.isin(r.actions, special) & m & (r.actions != plain.policy.tokenizer.eos_token_id)).any()
    assert m.any()
    align = _trainer(tiny_text, tmp_path / "a", tiny_text / "teacher", "align").teacher.distribution(r)
    assert torch.allclose(align.log_prob(r.actions)[m], want.gather(-1, r.actions.unsqueeze(-1)).squeeze(-1)[m], atol=1e-4)
    uld = _trainer(tiny_text, tmp_path / "u", tiny_text / "teacher", "uld").teacher.distribution(r)
    k = uld.topk[0].shape[-1]
    assert k == want.shape[-1] - 1 and torch.allclose(uld.topk[0][m], want.sort(-1, descending=True).values[..., :k][m], atol=1e-4)


@pytest.mark.parametrize("mode, extra", [("align", {}), ("uld", {"divergence.name": "tv", "objective.estimator": "analytic"})])
def test_a_cross_tokenizer_teacher_trains(tiny_text, pair_teacher, tmp_path, mode, extra):
    out = _trainer(tiny_text, tmp_path / mode, pair_teacher, mode, **{"trainer.max_steps": 2, **extra}).train()
    assert out["steps"] == 2


def test_the_default_still_refuses_another_tokenizer_and_bad_modes_are_named(tiny_text, pair_teacher, tmp_path):
    with pytest.raises(UserError, match="teacher.path: vocabulary size 119 differs"):
        _trainer(tiny_text, tmp_path / "d", pair_teacher, "same")
    with pytest.raises(ConfigError, match="teacher.tokenizer: expected one of same, align, uld, got 'gold'"):
        _trainer(tiny_text, tmp_path / "g", pair_teacher, "gold")
    with pytest.raises(ConfigError, match="teacher.tokenizer: align needs teacher.kind: model and teacher.view: same"):
        _trainer(tiny_text, tmp_path / "v", pair_teacher, "align", **{"teacher.view": "answer_hint"})


def test_any_of_the_students_stop_ids_ends_the_teachers_row_with_its_eos(tiny_text, pair_teacher, tmp_path):
    """A chat student ends a turn on its own token as well as on EOS: either is the teacher's EOS,
    not text for the teacher to read."""
    tr = _trainer(tiny_text, tmp_path / "s", pair_teacher, "align")
    st, t = tr.policy.tokenizer, tr.teacher
    turn_end = st.bos_token_id  # stands in for a second stop id such as <|im_end|>
    teacher = CrossTokenizerTeacher(t.module.lm, t.tok, st, tr.policy.module, "align", stop=[st.eos_token_id, turn_end])
    prompt, body = st("12+3=")["input_ids"], st("15", add_special_tokens=False)["input_ids"]
    by_eos, by_turn_end = (teacher._teacher_row(prompt, body + [end]) for end in (st.eos_token_id, turn_end))
    assert by_eos == by_turn_end and by_eos[0][-1] == t.tok.eos_token_id
    assert t._teacher_row(prompt, body + [turn_end]) != by_eos  # the trainer's teacher reads it as text
