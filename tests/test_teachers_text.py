"""Text teachers: self/EMA, privileged view, confidence pool, best-of selection, Lightning cache."""

from __future__ import annotations

import math

import pytest
import torch

import unified_opd as uo
from conftest import text_overrides
from unified_opd.config import load_config
from unified_opd.domain import schema_for
from unified_opd.domains.text.cache import write_teacher_cache
from unified_opd.errors import UserError
from unified_opd.rollout import Rollout
from unified_opd.self_teachers import ema_update
from unified_opd.teachers import confidence_weights, select_teacher
from unified_opd.trainer import Trainer


def test_ema_update_by_hand():
    t, s = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 0.0])]
    ema_update(t, s, 0.75)
    assert torch.allclose(t[0], torch.tensor([1.5, 1.5]))


def test_confidence_weights_by_hand():
    h = torch.tensor([[0.0], [math.log(3.0)]])  # teacher 0 certain, teacher 1 uniform over 3
    w = confidence_weights(h, 1.0)
    assert torch.allclose(w[:, 0], torch.tensor([0.75, 0.25]))  # softmax(0, -log 3) = (3/4, 1/4)


def test_select_teacher_is_lexicographic():
    scores = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    lik = torch.tensor([[-2.0, -1.0, -0.1], [-3.0, -0.5, -1.0], [-0.1, -5.0, -0.2]])
    assert select_teacher(scores, lik).tolist() == [1, 1, 1]


def _cfg(root, out, **extra):
    return load_config(None, text_overrides(root, out, **extra), schema_for)


def test_ema_self_teacher_on_privileged_view_trains_and_checkpoints(tiny_text, tmp_path):
    tr = Trainer(_cfg(tiny_text, tmp_path / "run", **{"teacher.kind": "self", "teacher.ema": 0.9, "teacher.view": "answer_hint",
                                                       "trainer.max_steps": 2, "trainer.save_every": 2}))
    r = tr.policy.rollout(tr.data.next())
    view = r.teacher_view
    # the completion is the same tokens in both views; only the prompt (with the answer) differs
    n_gen = r.student_view["input_ids"].shape[1] - r.student_view["prompt_len"]
    assert torch.equal(view["input_ids"][:, view["prompt_len"]:], r.student_view["input_ids"][:, -n_gen:])
    assert view["prompt_len"] > r.student_view["prompt_len"]
    before = [p.clone() for p in tr.teacher.copy.parameters()]
    tr.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.teacher.copy.parameters()))
    from unified_opd.checkpoint import latest_checkpoint

    assert (latest_checkpoint(tmp_path / "run" / "checkpoints") / "teacher.safetensors").is_file()


def test_lightning_cache_roundtrip_and_hash_check(tiny_text, tmp_path):
    cache = tmp_path / "cache"
    over = {"teacher.cache.dir": cache, "teacher.cache.prompts": 8, "teacher.cache.top_k": 4, "teacher.cache.batch_size": 4}
    write_teacher_cache(_cfg(tiny_text, tmp_path / "w", **over))
    tr = Trainer(_cfg(tiny_text, tmp_path / "run", **{**over, "teacher.kind": "cache", "trainer.max_steps": 3, "objective.estimator": "analytic"}))
    assert not hasattr(tr.teacher, "module")  # no teacher model in memory
    assert len(tr.components.train_records) == 8  # one record per prompt: rollout.batch_size counts prompts
    r = tr.policy.rollout(tr.data.next())
    assert r.batch_size == 8 * 2 and r.group_ids.bincount().tolist() == [2] * 8
    batches = [tr.data.next()] + [[x] for x in tr.components.train_records]
    assert any([_cut_grid_scores_like_the_full_grid(tr, tr.policy.rollout(b)) for b in batches])  # a lone short prompt cuts
    d = tr.teacher.distribution(r)
    assert d.is_sparse and d.topk[0].shape[-1] == 4
    # the cached log-probs are the teacher's: compare with a live teacher on the same rollout
    live = Trainer(_cfg(tiny_text, tmp_path / "live", **{"trainer.max_steps": 1})).teacher.distribution(r)
    top = live.log_probs().topk(4, -1)
    m = r.mask
    assert torch.allclose(d.topk[0][m], top.values[m], atol=1e-4)
    assert tr.train()["steps"] == 3
    with pytest.raises(UserError, match="teacher.cache.dir: the cache was written for a different teacher"):
        Trainer(_cfg(tiny_text, tmp_path / "bad", **{**over, "teacher.kind": "cache", "teacher.path": tiny_text / "student"}))


def _cut_grid_scores_like_the_full_grid(tr, r) -> bool:
    """The replayed batch drops the grid columns none of its rows attends to; the student's
    log-probs of the actions at the loss positions are those of the full cache grid. Returns
    whether any column was dropped."""
    t, rows = tr.policy.replay.t, r.meta["cache_rows"]
    seq, cols = t["input_ids"][rows].long(), r.meta["cache_positions"]
    full = Rollout(seq[:, 1:], t["loss_mask"][rows].long(), torch.zeros_like(t["loss_mask"][rows].long()),
                   {"input_ids": seq, "attention_mask": t["attention_mask"][rows].long(), "prompt_len": tr.policy.replay.prompt_len})
    assert torch.equal(full.loss_mask[:, cols], r.loss_mask) and full.mask.sum() == r.mask.sum()
    with torch.no_grad():
        cut = tr.policy.distribution(r).select(r.mask).log_prob(r.actions[r.mask])
        ref = tr.policy.distribution(full).select(full.mask).log_prob(full.actions[full.mask])
    assert torch.allclose(cut, ref, atol=1e-5)
    return seq.shape[1] > r.actions.shape[1] + 1


@pytest.mark.parametrize("kind", ["router", "pool", "best_of"])
def test_multi_teacher_kinds_train(tiny_text, tmp_path, kind):
    t, s = str(tiny_text / "teacher"), str(tiny_text / "student")
    extra = {
        "router": {"teacher.experts": "{add: %s, sub: %s, mul: %s}" % (t, t, s)},
        "pool": {"teacher.members": f"[{t},{s}]", "teacher.pool_rule": "confidence"},
        "best_of": {"teacher.members": f"[{t},{s}]"},
    }[kind]
    out = Trainer(_cfg(tiny_text, tmp_path / kind, **{"teacher.kind": kind, "trainer.max_steps": 2, **extra})).train()
    assert out["steps"] == 2 and "reverse_kl" in out["after"]


def test_relayout_puts_every_batch_on_one_grid():
    from unified_opd.domains.text.cache import relayout

    seq = torch.tensor([[7, 1, 2, 3]])  # prompt of 2, completion of 2
    s, a, m = relayout(seq, torch.ones_like(seq), torch.tensor([[0, 1, 1]]), prompt_len=2, P=3, M=3, pad_id=0)
    assert s.tolist() == [[0, 7, 1, 2, 3, 0]]
    assert a.tolist() == [[0, 1, 1, 1, 1, 0]] and m.tolist() == [[0, 0, 1, 1, 0]]


def test_lightning_cache_reads_a_save_to_disk_directory_and_hashes_its_files(tiny_text, tmp_path):
    from datasets import Dataset

    from unified_opd.data import read_jsonl
    from unified_opd.domains.text.cache import data_digest

    data = tmp_path / "train_ds"
    Dataset.from_list(read_jsonl(str(tiny_text / "train.jsonl"))[:16]).save_to_disk(data)
    cache = tmp_path / "cache"
    over = {"data.path": data, "teacher.cache.dir": cache, "teacher.cache.prompts": 8, "teacher.cache.batch_size": 4}
    write_teacher_cache(_cfg(tiny_text, tmp_path / "w", **over))
    tr = Trainer(_cfg(tiny_text, tmp_path / "run", **{**over, "teacher.kind": "cache", "trainer.max_steps": 2, "objective.estimator": "analytic"}))
    assert len(tr.components.train_records) == 8 and tr.train()["steps"] == 2
    digest = data_digest(tr.cfg.data)
    (data / "extra.txt").write_text("changed")
    assert data_digest(tr.cfg.data) != digest  # any file of the directory changes the fingerprint
