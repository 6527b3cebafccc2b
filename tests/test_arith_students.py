"""Zoo entries fine-tuned from the arith student: the hint format, and what each builder writes."""

from __future__ import annotations

import dataclasses
import json

import torch

from unified_opd.data import write_jsonl
from unified_opd.domains.lm.tiny import tiny_llama
from unified_opd.domains.text.config import DataConfig
from unified_opd.domains.text.views import TEACHER_VIEWS
from unified_opd.domains.text.zoo import arith, arith_students


def test_hinted_prompt_is_the_answer_hint_view_the_opsd_teacher_reads():
    record = {"prompt": "47+85=", "answer": "231", "task": "add"}
    view = TEACHER_VIEWS.get("answer_hint", "teacher.view")
    assert arith_students.hinted(record) == {**record, "prompt": view(record, record["prompt"], DataConfig())}
    assert arith_students.hinted(record)["prompt"] == "231 47+85="


def _tiny_base(tmp_path):
    base = tmp_path / "arith"
    tok = arith.build_tokenizer()
    torch.manual_seed(0)
    tiny_llama(tok, 16, 1, 2, context=64).save_pretrained(base / "student")
    tok.save_pretrained(base / "student")
    train, held = arith.make_splits(n_train=400, n_eval=310, seed=1)
    write_jsonl(base / "train.jsonl", train)
    write_jsonl(base / "eval.jsonl", held)
    return base


def test_builders_fine_tune_the_student_and_write_their_cards(tmp_path, monkeypatch):
    base = _tiny_base(tmp_path)
    monkeypatch.setattr(arith_students, "build", lambda name: base)
    monkeypatch.setattr(arith_students, "SKILL_EXPERT", dataclasses.replace(arith_students.SKILL_EXPERT, steps=2, batch=4))
    monkeypatch.setattr(arith_students, "HINT_STUDENT", dataclasses.replace(arith_students.HINT_STUDENT, steps=2, batch=4, check_every=1))
    seen = []
    train_supervised = arith.train_supervised

    def spy(model, tok, records, spec, seed, label, probe=()):
        seen.append((label, {r["task"] for r in records}, sum(r["prompt"].startswith(r["answer"] + " ") for r in records), len(records), list(probe)))
        return train_supervised(model, tok, records, spec, seed, label, probe)

    monkeypatch.setattr(arith, "train_supervised", spy)
    arith_students.build_arith_skill_experts(tmp_path / "experts")
    arith_students.build_arith_hint(tmp_path / "hint")
    (_, addsub_tasks, _, _, _), (_, mul_tasks, _, _, _), (_, _, n_hinted, n_records, probe) = seen
    assert addsub_tasks == {"add", "sub"} and mul_tasks == {"mul"}  # each expert sees only its skill
    assert n_hinted == n_records - n_records // 2  # half of the hint student's data carries the hint
    assert all(p["prompt"].startswith(p["answer"] + " ") for p in probe)
    card = json.loads((tmp_path / "experts" / "card.json").read_text())
    assert set(card) == {"base", "addsub", "mul"} and set(card["mul"]["probe_accuracy"]) == {"add", "sub", "mul"}
    hint_card = json.loads((tmp_path / "hint" / "card.json").read_text())
    assert hint_card["steps"] <= 2 and 0.0 <= hint_card["accuracy_with_hint"] <= 1.0
    assert (tmp_path / "hint" / "student" / "config.json").is_file()
