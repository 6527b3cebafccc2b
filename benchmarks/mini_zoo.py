"""A reduced `arith` zoo for CPU-scarce benchmarks: same task, data and tokenizer as `uopd zoo
build arith` / `arith_experts`, smaller models and fewer supervised steps.

It writes the two entries into `$UOPD_HOME/zoo/` (marked complete), so every recipe config's
`zoo:arith/...` and `zoo:arith_experts/...` paths resolve to these models unchanged.

    UOPD_HOME=runs/bench_home python benchmarks/mini_zoo.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from unified_opd.data import write_jsonl
from unified_opd.domains.text.zoo import arith
from unified_opd.zoo import builder_of, cached_version, mark_built, zoo_home

# teacher ~8x the student's parameters (the Lightning figure needs a teacher >= 4x the student)
TEACHER = arith.ModelSpec(hidden=128, layers=4, heads=4, steps=900, batch=128, lr=2e-3)
STUDENT = arith.ModelSpec(hidden=64, layers=2, heads=2, steps=250, batch=128, lr=2e-3)
EXPERT = arith.ModelSpec(hidden=96, layers=3, heads=4, steps=500, batch=128, lr=2e-3)


def build(home: Path) -> None:
    zoo = home / "zoo"
    base, experts = zoo / "arith", zoo / "arith_experts"
    if all(cached_version(d) == builder_of(d.name).zoo_version for d in (base, experts)):
        return
    torch.manual_seed(0)
    t0 = time.time()
    tok = arith.build_tokenizer()
    train, held = arith.make_splits(n_train=60000, n_eval=1000, seed=0)
    base.mkdir(parents=True, exist_ok=True)
    experts.mkdir(parents=True, exist_ok=True)
    write_jsonl(base / "train.jsonl", train)
    write_jsonl(base / "eval.jsonl", held)
    probe = held[:300]
    card = arith._train_jobs(base, tok, [("teacher", TEACHER, train, 1), ("student", STUDENT, train, 2)], probe)
    card["build_seconds"] = round(time.time() - t0, 1)
    (base / "card.json").write_text(json.dumps(card, indent=1))
    mark_built(base, "arith")
    jobs = [
        ("addsub", EXPERT, [r for r in train if r["task"] != "mul"], 3),
        ("mul", EXPERT, [r for r in train if r["task"] == "mul"], 4),
    ]
    (experts / "card.json").write_text(json.dumps(arith._train_jobs(experts, tok, jobs, probe), indent=1))
    mark_built(experts, "arith_experts")


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("UOPD_THREADS", "1")))
    build(zoo_home().parent)
    print(zoo_home(), file=sys.stderr)
