"""Task records and verifiers.

Records are dicts (a JSONL line each: `prompt` or chat `messages`, optional `answer`, optional
`task`; other formats are read by `data_sources`). A
`DataStream` deals them out in batches, reshuffled every epoch from the run's seed, and its
position (epoch, index) is part of every checkpoint so a resumed run sees the same batches.
Verifiers turn a completion and the record's answer into an outcome in [0, 1].
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import UserError
from .registry import Registry

VERIFIERS = Registry("verifier", "data.verifier")


def read_jsonl(path: str, required: tuple = ("prompt",), field_prefix: str = "data.path") -> List[Dict[str, Any]]:
    """Read a JSONL file of records; errors name the file, the line and the missing field."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{field_prefix}: data file not found: {path}")
    records = []
    with open(p) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{field_prefix}: {path} line {lineno} is not valid JSON ({e.msg})") from e
            if not isinstance(rec, dict):
                raise UserError(f"{field_prefix}: {path} line {lineno} must be a JSON object")
            check_fields(rec, required, field_prefix, f"{path} line {lineno}")
            records.append(rec)
    if not records:
        raise UserError(f"{field_prefix}: {path} holds no records")
    return records


def check_fields(rec: Dict[str, Any], required: tuple, field_prefix: str, where: str) -> None:
    """Each entry of `required` is a key the record must have, or a tuple of keys of which it has exactly one."""
    for key in required:
        if isinstance(key, str):
            if key not in rec:
                raise UserError(f"{field_prefix}: {where} has no {key!r} field")
            continue
        present = [k for k in key if k in rec]
        if not present:
            others = " or ".join(repr(k) for k in key[1:])
            raise UserError(f"{field_prefix}: {where} has no {key[0]!r} field (nor {others})")
        if len(present) > 1:
            raise UserError(f"{field_prefix}: {where} has both {' and '.join(map(repr, present))}; give exactly one")


def write_jsonl(path: Path, records: List[Dict[str, Any]]) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


class DataStream:
    """Endless batches of records, reshuffled each epoch with `seed + epoch`.

    Under several processes each takes a disjoint, rank-strided share of every global batch.
    """

    def __init__(self, records: List[Any], batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise UserError(f"rollout.batch_size: expected a positive integer, got {batch_size}")
        if batch_size % world_size:
            raise UserError(
                f"rollout.batch_size: {batch_size} prompts per step cannot be split over {world_size} processes"
            )
        self.records = records
        self.batch_size = batch_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.index = 0, 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> List[int]:
        order = list(range(len(self.records)))
        random.Random(self.seed * 100003 + epoch).shuffle(order)
        return order

    def next(self) -> List[Any]:
        batch = []
        while len(batch) < self.batch_size:
            if self.index >= len(self._order):
                self.epoch += 1
                self.index = 0
                self._order = self._shuffled(self.epoch)
            batch.append(self.records[self._order[self.index]])
            self.index += 1
        return batch[self.rank :: self.world_size]

    def state(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: Dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._shuffled(self.epoch)


def _normalise(text: str) -> str:
    return " ".join(str(text).strip().split()).lower()


@VERIFIERS.register("exact_match")
def exact_match(completion: str, answer: Any) -> float:
    """1 if the completion equals the answer after trimming, whitespace folding and lower-casing."""
    return float(_normalise(completion) == _normalise(answer))


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@VERIFIERS.register("numeric")
def numeric(completion: str, answer: Any) -> float:
    """1 if the last number in the completion equals the answer numerically (|diff| < 1e-6)."""
    found = _NUMBER.findall(str(completion).replace(",", ""))
    if not found:
        return 0.0
    try:
        return float(abs(float(found[-1]) - float(str(answer).replace(",", ""))) < 1e-6)
    except ValueError:
        return 0.0


@VERIFIERS.register("math")
def math_value(completion: str, answer: Any) -> float:
    """1 if the completion's final answer equals the answer as a value (`math_answers`: boxed, fractions, units)."""
    from .math_answers import math_equal

    return float(math_equal(completion, answer))


def verify(name: str, completions: List[str], answers: List[Optional[Any]]) -> List[Optional[float]]:
    fn = VERIFIERS.get(name)
    return [None if a is None else fn(c, a) for c, a in zip(completions, answers)]
