"""Zoo entries fine-tuned from the arith student, for the recipes whose papers start from it.

`arith_skill_experts` (G-OPD's merging setting): two copies of `zoo:arith/student`, each trained
further on one skill only, `addsub` on + and − and `mul` on ×. Distilling the student from both
(routed by task tag) with the student itself as reference is ExOPD's "merge domain experts back
into their base" experiment, with λ = 1 (plain OPD) against λ > 1 (reward extrapolation).

`arith_hint` (OPSD): `zoo:arith/student` trained further on a mix of plain problems and problems
whose prompt starts with the answer (the `answer_hint` teacher view, `"231 47+85="`), so the same
network reading the hint is a teacher that knows more than the student without it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from ..config import DataConfig
from ..views import answer_hint
from . import arith
from unified_opd.zoo import build, console, register_zoo

# A few hundred steps improve a skill without finishing it (the G-OPD experts are RL-tuned from
# the base, not trained to convergence), so the merged student has room to pass them.
SKILL_EXPERT = dataclasses.replace(arith.STUDENT, steps=300, lr=1e-3, schedule="cosine", stop_accuracy=0.0)
# Stopped once it copies the hinted answer on 90% of probe problems: the hint view is then a
# teacher that is right where the student alone is not. Plain problems are half of its data, so
# it keeps answering without a hint.
HINT_STUDENT = dataclasses.replace(arith.STUDENT, steps=2000, lr=1e-3, stop_accuracy=0.9)


def hinted(record: Dict[str, str]) -> Dict[str, str]:
    """The record as the `answer_hint` view shows it: the answer, a space, then the prompt."""
    return {**record, "prompt": answer_hint(record, record["prompt"], DataConfig())}


def _base():
    base = build("arith")
    tok = PreTrainedTokenizerFast.from_pretrained(base / "student")
    train = [json.loads(line) for line in open(base / "train.jsonl")]
    held = [json.loads(line) for line in open(base / "eval.jsonl")]
    return base, tok, train, held


def _per_task_accuracy(model, tok, records: List[Dict[str, str]]) -> Dict[str, float]:
    tasks = sorted({r["task"] for r in records})
    return {t: arith.greedy_accuracy(model, tok, [r for r in records if r["task"] == t]) for t in tasks}


@register_zoo("arith_skill_experts", version=1)
def build_arith_skill_experts(dest: Path) -> None:
    """`addsub` and `mul`: the arith student fine-tuned on its own skill's problems only."""
    base, tok, train, held = _base()
    probe = held[:300]
    card: Dict[str, dict] = {"base": _per_task_accuracy(LlamaForCausalLM.from_pretrained(base / "student"), tok, probe)}
    for name, seed, keep in (("addsub", 5, lambda r: r["task"] != "mul"), ("mul", 6, lambda r: r["task"] == "mul")):
        torch.manual_seed(seed)
        model = LlamaForCausalLM.from_pretrained(base / "student")
        steps = arith.train_supervised(model, tok, [r for r in train if keep(r)], SKILL_EXPERT, seed, f"skill expert {name}")
        model.save_pretrained(dest / name)
        tok.save_pretrained(dest / name)
        card[name] = {"steps": steps, "probe_accuracy": _per_task_accuracy(model, tok, probe)}
        console.print(f"zoo arith_skill_experts {name}: {steps} steps, greedy accuracy per operator {card[name]['probe_accuracy']}")
    (dest / "card.json").write_text(json.dumps(card, indent=1))


@register_zoo("arith_hint", version=1)
def build_arith_hint(dest: Path) -> None:
    """`student`: the arith student trained further on plain and hinted problems, half each."""
    base, tok, train, held = _base()
    # the stop probe tests copying, not arithmetic, so training problems left out of the data
    # serve (the held-out problems stay unseen by every choice made here)
    train, dev = train[:-300], [hinted(r) for r in train[-300:]]
    half = len(train) // 2
    records = train[:half] + [hinted(r) for r in train[half:]]
    torch.manual_seed(7)
    model = LlamaForCausalLM.from_pretrained(base / "student")
    steps = arith.train_supervised(model, tok, records, HINT_STUDENT, 7, "hint student", probe=dev)
    model.save_pretrained(dest / "student")
    tok.save_pretrained(dest / "student")
    probe = held[:300]
    card = {
        "steps": steps,
        "accuracy_without_hint": arith.greedy_accuracy(model, tok, probe),
        "accuracy_with_hint": arith.greedy_accuracy(model, tok, [hinted(r) for r in probe]),
    }
    console.print(f"zoo arith_hint student: {steps} steps, {card}")
    (dest / "card.json").write_text(json.dumps(card, indent=1))
