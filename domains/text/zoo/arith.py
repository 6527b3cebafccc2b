"""Built-in task `arith`: generated multi-digit arithmetic, and its zoo entry.

Problems look like `prompt: "47+08="`, `answer: "55"` with a `task` tag (`add`, `sub`, `mul`)
for per-operator teacher routing. Answers are written least-significant digit first (132 -> "231"):
each output digit then depends only on the digits already seen plus a carry, which is the format
under which small transformers learn arithmetic in minutes rather than hours ("Teaching Arithmetic
to Small Transformers", Lee et al. 2023); a model producing the usual order would need to resolve
every carry before its first digit. Operands are zero-padded to a fixed width (8 -> "08") for the
same reason: each digit then sits at a fixed distance from `=`. With unpadded operands the
student has to find the `+` by content to know where the first operand's units digit is; the zoo
student never learnt that from sampled-token OPD (its units digit stayed at chance, entropy ~2
nats, whenever the second operand had two digits). The train and held-out splits are disjoint by
construction (the held-out problems are removed from the training pool).

`uopd zoo build arith` trains, from scratch on CPU, a Llama-style teacher and a smaller, briefly
trained student with a shared character-level tokenizer (saved as a Hugging Face tokenizer), plus
per-operator experts for multi-teacher routing, and writes `train.jsonl` / `eval.jsonl`.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from tokenizers import Regex, decoders, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from unified_opd.data import write_jsonl
from unified_opd.domains.lm.tiny import SPECIALS, fast_tokenizer, tiny_llama, word_level_tokenizer
from unified_opd.supervised import SupervisedPlan, fit, model_loss
from unified_opd.zoo import console, register_zoo

CHARS = list("0123456789+-*= ")
OPS = {"add": "+", "sub": "-", "mul": "*"}


# ------------------------------------------------------------------ problems
def make_problem(rng: random.Random, op: str, max_digits: int = 2) -> Dict[str, str]:
    """One problem of operator `op`: + and − on 1..max_digits-digit operands (a ≥ b for −),
    × of a 1..max_digits-digit number by a 1-digit number; operands are zero-padded to
    `max_digits` (the 1-digit multiplier stays as it is) and the answer is written reversed."""
    def num(d_max: int) -> int:
        d = rng.randint(1, d_max)
        return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)

    if op == "add":
        a, b = num(max_digits), num(max_digits)
        c = a + b
    elif op == "sub":
        a, b = num(max_digits), num(max_digits)
        a, b = max(a, b), min(a, b)
        c = a - b
    else:
        a, b = num(max_digits), rng.randint(2, 9)
        c = a * b
    b_width = 1 if op == "mul" else max_digits
    return {"prompt": f"{a:0{max_digits}d}{OPS[op]}{b:0{b_width}d}=", "answer": str(c)[::-1], "task": op}


def make_splits(n_train: int, n_eval: int, seed: int = 0, max_digits: int = 2) -> tuple:
    """Held-out problems (unique, operators balanced) and training problems drawn from
    everything else (repeats allowed: the 1-digit-multiplier space is small)."""
    rng = random.Random(seed)
    ops = list(OPS)
    held: Dict[str, Dict[str, str]] = {}
    tries = 0
    while len(held) < n_eval:
        tries += 1
        if tries > 100 * n_eval:
            raise ValueError(f"arith: cannot draw {n_eval} distinct held-out problems with max_digits={max_digits}")
        p = make_problem(rng, ops[len(held) % 3], max_digits)
        held.setdefault(p["prompt"], p)
    train: List[Dict[str, str]] = []
    while len(train) < n_train:
        p = make_problem(rng, ops[len(train) % 3], max_digits)
        if p["prompt"] not in held:
            train.append(p)
    return train, list(held.values())


# ------------------------------------------------------------------ tokenizer
def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: one token per character, `<s>` prepended, `</s>` ends answers."""
    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    return word_level_tokenizer(vocab, pre_tokenizers.Split(Regex("."), behavior="isolated"), decoders.Fuse())


# Where build_pair_tokenizer cuts digits into pairs (pre-tokenizer patterns; BPE then merges each
# piece into pairs from its left). Answers are encoded on their own, as completions are, so "$"
# is the answer's end there and a prompt's digits stay one character a token.
PAIR_SPLITS = {
    "all": "[0-9]+|.",  # every digit run: "47" "+" "08" "=", answers "23" "1"
    "answer": "[0-9]+$|.",  # the run that ends the text: answers "23" "1"
    "answer-tail": "(?<=[0-9])[0-9]+$|.",  # that run after its first digit: answers "2" "31", "5" "5"
}


def build_pair_tokenizer(pairs: str = "all") -> PreTrainedTokenizerFast:
    """A BPE tokenizer over the same characters plus every two-digit pair, pairs cut where
    `PAIR_SPLITS[pairs]` says: a teacher vocabulary (119 tokens) that really differs from
    `build_tokenizer`'s (cross-tokenizer distillation, `teacher.tokenizer: align | uld`).

    Measured with the zoo teacher's recipe (`TEACHER`, 1000 steps): "all" makes a model learn
    addition over 100 operand tokens from a lookup table, and "answer" makes it write two digits
    in one step, the second after a carry it has not written yet (21% held-out against the
    character-level teacher's 71%); "answer-tail" writes the units digit first, as the
    character-level model does, so the pair after it follows from a digit already in context."""
    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS + [a + b for a in "0123456789" for b in "0123456789"])}
    bpe = models.BPE(vocab=vocab, merges=[(t[0], t[1]) for t in vocab if len(t) == 2 and t.isdigit()], unk_token="<unk>")
    split = pre_tokenizers.Split(Regex(PAIR_SPLITS[pairs]), behavior="isolated")
    return fast_tokenizer(bpe, split, decoders.Fuse(), prepend_bos=True)


# ------------------------------------------------------------------ models and supervised training
@dataclass
class ModelSpec:
    hidden: int
    layers: int
    heads: int
    steps: int
    lr: float = 1e-3
    batch: int = 256
    schedule: str = "cosine"  # "cosine" anneals to 0; "constant" stops mid-training, as a checkpoint would
    stop_accuracy: float = 0.0  # stop once greedy accuracy on the probe problems reaches this (0 = all steps)
    check_every: int = 50  # steps between those probes

    def build(self, tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
        return tiny_llama(tok, self.hidden, self.layers, self.heads, context=64)


# Measured learning curves (2-digit padded problems, batch 64): the 5M teacher learns fastest at
# lr 1e-3 (at 3e-3 it plateaus for hundreds of steps): 80% held-out after a 1300-step schedule
# (+ and − ~98%, × ~40%), 65% after the 1000 steps used here, which keep the zoo under 8 minutes
# on 2 cores (441 s). The small models tolerate 3e-3.
# The student is a mid-training checkpoint at constant LR. Its learning curve has a sharp step
# whose position moves with the data and warm-up (one run: 13% after 1000 steps, 26% after 2000,
# 67% after 2500; the README's first run passed 25% at step 500), so it is stopped by
# accuracy, not by step count: at the first check with >= 25% on 300 held-out dev problems (not
# in eval.jsonl), while it is learning the task's digit alignment. A student annealed to LR 0
# sits in a sharp minimum: the first steps of a fresh optimiser knock it down and even supervised
# training from there crawls, so it cannot show what distillation does in a few minutes.
# Experts (3000 steps each, about 5 minutes on one thread): the add/sub expert is exact on + and -,
# the x expert gets ~47% of x right (0.668 and 0.155 on the 600 mixed held-out problems).
TEACHER = ModelSpec(hidden=256, layers=6, heads=8, steps=1000, lr=1e-3, batch=64)
STUDENT = ModelSpec(hidden=128, layers=3, heads=4, steps=3000, lr=3e-3, batch=64, schedule="constant", stop_accuracy=0.25)
EXPERT = ModelSpec(hidden=128, layers=3, heads=4, steps=3000, lr=3e-3, batch=64)


def encode_supervised(tok: PreTrainedTokenizerFast, records: Sequence[Dict[str, str]]) -> tuple:
    """prompt+answer+</s>, right-padded; labels are -100 on prompt and padding."""
    prompts = tok([r["prompt"] for r in records])["input_ids"]
    answers = tok([r["answer"] for r in records], add_special_tokens=False)["input_ids"]
    ids, labels = [], []
    for p, a in zip(prompts, answers):
        a = a + [tok.eos_token_id]
        ids.append(p + a)
        labels.append([-100] * len(p) + a)
    n = max(len(x) for x in ids)
    pad = tok.pad_token_id
    input_ids = torch.tensor([x + [pad] * (n - len(x)) for x in ids])
    lab = torch.tensor([y + [-100] * (n - len(y)) for y in labels])
    return input_ids, (input_ids != pad).long(), lab


def train_supervised(
    model: LlamaForCausalLM,
    tok,
    records: List[Dict[str, str]],
    spec: ModelSpec,
    seed: int,
    label: str,
    probe: Sequence[Dict[str, str]] = (),
) -> int:
    """Plain next-token training on the answers (`unified_opd.supervised.fit`: AdamW, warm-up then
    `spec.schedule`), with a progress bar; returns the steps taken. With `spec.stop_accuracy` it
    stops at the first check (every `spec.check_every` steps) where greedy accuracy on `probe`
    reaches it."""
    if spec.stop_accuracy > 0 and not probe:
        raise ValueError(f"zoo arith {label}: stop_accuracy needs probe problems")
    all_ids, all_attn, all_labels = encode_supervised(tok, records)  # once: per-step tokenising is slow
    lengths = all_attn.sum(-1)

    def draw(generator: torch.Generator) -> Dict[str, torch.Tensor]:
        idx = torch.randint(len(records), (spec.batch,), generator=generator)
        n = int(lengths[idx].max())
        return {"input_ids": all_ids[idx, :n], "attention_mask": all_attn[idx, :n], "labels": all_labels[idx, :n]}

    def reached(model, step: int):
        acc = greedy_accuracy(model, tok, probe)
        return f"probe accuracy {acc:.3f} >= {spec.stop_accuracy}: stop" if acc >= spec.stop_accuracy else None

    check_every = spec.check_every if spec.stop_accuracy > 0 else 0
    plan = SupervisedPlan(spec.steps, spec.lr, seed, schedule=spec.schedule, check_every=check_every, title=f"zoo arith {label}")
    return fit(model, model_loss, draw, plan, check=reached).steps


@torch.no_grad()
def greedy_accuracy(model, tok, records: Sequence[Dict[str, str]], max_new_tokens: int = 8, batch: int = 256) -> float:
    correct = 0
    for i in range(0, len(records), batch):
        chunk = records[i : i + batch]
        enc = tok([r["prompt"] for r in chunk], return_tensors="pt", padding=True)
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
        )
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(t.strip() == r["answer"] for t, r in zip(texts, chunk))
    return correct / len(records)


@register_zoo("arith", version=2)  # 2: zero-padded operands, student stopped by accuracy
def build_arith(dest: Path) -> None:
    """Teacher, student init, per-operator experts, tokenizer and data for the `arith` task."""
    torch.manual_seed(0)
    t0 = time.time()
    tok = build_tokenizer()
    # 300 more held-out problems than eval.jsonl keeps: the student's accuracy stop reads them, so
    # neither the training problems (partly memorised) nor the evaluation set pick the student
    train, held = make_splits(n_train=60000, n_eval=900, seed=0)
    held, dev = held[:600], held[600:]
    write_jsonl(dest / "train.jsonl", train)
    write_jsonl(dest / "eval.jsonl", held)
    card = {"task": "arith", "train_problems": len(train), "eval_problems": len(held)}
    jobs = [("teacher", TEACHER, train, 1), ("student", STUDENT, train, 2)]
    card.update(_train_jobs(dest, tok, jobs, held[:300], stop_probe=dev))
    card["build_seconds"] = round(time.time() - t0, 1)
    (dest / "card.json").write_text(json.dumps(card, indent=1))


def _train_jobs(
    dest: Path, tok, jobs: list, probe: Sequence[Dict[str, str]], stop_probe: Sequence[Dict[str, str]] = ()
) -> Dict[str, dict]:
    card = {}
    for name, spec, records, seed in jobs:
        torch.manual_seed(seed)
        model = spec.build(tok)
        steps = train_supervised(model, tok, records, spec, seed, name, probe=stop_probe)
        model.save_pretrained(dest / name)
        tok.save_pretrained(dest / name)
        acc = greedy_accuracy(model, tok, probe)
        card[name] = {"parameters": sum(p.numel() for p in model.parameters()), "steps": steps, "probe_accuracy": acc}
        console.print(
            f"zoo arith {name}: {card[name]['parameters']:,} parameters, {steps} steps, "
            f"greedy accuracy {acc:.3f} on {len(probe)} held-out problems"
        )
    return card


@register_zoo("arith_experts", version=2)  # 2: zero-padded operands
def build_arith_experts(dest: Path) -> None:
    """Per-operator experts for multi-teacher routing: one for + and −, one for ×."""
    from unified_opd.zoo import build

    base = build("arith")
    tok = PreTrainedTokenizerFast.from_pretrained(base / "teacher")
    train = [json.loads(line) for line in open(base / "train.jsonl")]
    held = [json.loads(line) for line in open(base / "eval.jsonl")]
    jobs = [
        ("addsub", EXPERT, [r for r in train if r["task"] != "mul"], 3),
        ("mul", EXPERT, [r for r in train if r["task"] == "mul"], 4),
    ]
    card = _train_jobs(dest, tok, jobs, held[:300])
    (dest / "card.json").write_text(json.dumps(card, indent=1))
