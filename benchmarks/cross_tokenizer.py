"""Cross-tokenizer distillation on `arith`: a teacher with a digit-pair BPE tokenizer teaching
the character-level zoo student, against the same-tokenizer run.

The pair teacher is trained here from scratch with the zoo teacher's recipe (`arith.TEACHER`:
size, lr, batch, cosine schedule; `--teacher-steps`, cached under `--out-runs`), with the tokenizer
`arith.build_pair_tokenizer(--teacher-tokenizer)`: `answer-tail` (default: an answer's first
digit alone, the rest in pairs, "231" is "2" "31"; prompts one character a token), `answer`
("231" is "23" "1") or `all` (pairs in prompts too, "47" is one token). Its greedy accuracy and
the share of held-out answers it cuts otherwise than the student are reported beside the zoo
teacher's accuracy, since a gain depends on the teacher's strength. Cases (`--cases`), each
`configs/text/opd_arith.yaml` for `--steps` steps of `--batch` prompts x 1 sample, trainers of
one seed interleaved in one process:

* same -- the character-level teacher `--same-teacher` (default zoo:arith/teacher);
* same-reseeded -- a character-level teacher of the zoo recipe from another seed
  (`--reseeded-teacher-seed`): another teacher, the same tokenizer;
* align-pair -- the pair teacher, `teacher.tokenizer: align` (GOLD-style spans, sampled-token
  reverse KL);
* uld-pair -- the pair teacher, `teacher.tokenizer: uld` with `divergence.name: tv` (the ULD loss);
* align-remapped / uld-remapped -- the same-tokenizer teacher's weights over another vocabulary
  (`remapped_teacher`: the characters in reverse id order plus the 100 digit pairs, 119 tokens;
  one character a token, so spans are one token each): as strong as the same-tokenizer teacher,
  every token id different.

Accuracy: greedy on the first `--eval-size` held-out prompts before training and after the
last step, per seed (`--seeds`), with the binomial standard error of one run's gain and, over
several seeds, the standard error of the mean gain across seeds.

    OMP_NUM_THREADS=1 python benchmarks/cross_tokenizer.py
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from pathlib import Path

import torch
from _common import add_arith_run_args, arith_overrides, collect

CONFIG = "configs/text/opd_arith.yaml"
ULD = ["teacher.tokenizer=uld", "divergence.name=tv", "objective.estimator=analytic"]
CASES = {  # name -> (label, teacher it needs, overrides given that teacher's path)
    "same": ("same tokenizer", "same", lambda path: [f"teacher.path={path}"]),
    "align-pair": ("align (pair teacher)", "pair", lambda path: [f"teacher.path={path}", "teacher.tokenizer=align"]),
    "uld-pair": ("uld (pair teacher)", "pair", lambda path: [f"teacher.path={path}", *ULD]),
    "same-reseeded": ("same tokenizer (reseeded teacher)", "reseeded", lambda path: [f"teacher.path={path}"]),
    "align-remapped": ("align (remapped teacher)", "remapped", lambda path: [f"teacher.path={path}", "teacher.tokenizer=align"]),
    "uld-remapped": ("uld (remapped teacher)", "remapped", lambda path: [f"teacher.path={path}", *ULD]),
}


def recipe_teacher(args, tok, name: str, seed: int) -> Path:
    """A teacher trained once with the zoo teacher's recipe (`arith.TEACHER`, sized by
    `--teacher-*`) over `tok` from `seed`, cached under `--out-runs` as `name`_teacher_...; with the
    character-level tokenizer and seed 1 it is the zoo teacher's training."""
    from dataclasses import replace

    from unified_opd.domains.text.zoo import arith
    from unified_opd.zoo import resolve

    spec = replace(arith.TEACHER, hidden=args.teacher_hidden, layers=args.teacher_layers, heads=args.teacher_heads, steps=args.teacher_steps)
    out = Path(args.out_runs) / f"{name}_teacher_{spec.hidden}x{spec.layers}_{spec.steps}"
    if (out / "config.json").is_file():
        return out
    train = load_jsonl(resolve("zoo:arith/train.jsonl", "data.path"))
    torch.manual_seed(seed)
    model = spec.build(tok)
    arith.train_supervised(model, tok, train, spec, seed=seed, label=f"{name} teacher")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def pair_teacher(args) -> Path:
    """The pair-tokenizer teacher: the zoo teacher's recipe and seed (1), `--teacher-tokenizer`'s pairs."""
    from unified_opd.domains.text.zoo import arith

    return recipe_teacher(args, arith.build_pair_tokenizer(args.teacher_tokenizer), args.teacher_tokenizer, seed=1)


def reseeded_teacher(args) -> Path:
    """A character-level teacher of the zoo recipe from `--reseeded-teacher-seed`: another
    teacher than the zoo one (trained from seed 1) with the same tokenizer, the control that
    tells a weaker transfer from another tokenizer from one from another teacher."""
    from unified_opd.domains.text.zoo import arith

    return recipe_teacher(args, arith.build_tokenizer(), f"char_seed{args.reseeded_teacher_seed}", seed=args.reseeded_teacher_seed)


def remapped_teacher(args) -> Path:
    """`--same-teacher`'s weights over another vocabulary: the specials, the characters in reverse
    order, then the 100 digit pairs (never produced: the pre-tokenizer splits every character), so
    every character has another id and the vocabulary another size; embedding rows move with
    their token, the new ones start at the mean row."""
    from tokenizers import Regex, decoders, pre_tokenizers

    from unified_opd.domains.lm import load_causal_lm
    from unified_opd.domains.lm.tiny import SPECIALS, word_level_tokenizer
    from unified_opd.domains.text.zoo import arith

    out = Path(args.out_runs) / "remapped_teacher"
    lm, old = load_causal_lm(args.same_teacher, "float32", False, "teacher")
    vocab = SPECIALS + arith.CHARS[::-1] + [a + b for a in "0123456789" for b in "0123456789"]
    tok = word_level_tokenizer({t: i for i, t in enumerate(vocab)}, pre_tokenizers.Split(Regex("."), behavior="isolated"), decoders.Fuse())
    weight = lm.get_input_embeddings().weight.detach()
    rows = torch.stack([weight[old.convert_tokens_to_ids(t)] if t in old.get_vocab() else weight.mean(0) for t in vocab])
    lm.resize_token_embeddings(len(vocab))
    with torch.no_grad():
        lm.get_input_embeddings().weight.copy_(rows)
    lm.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def load_jsonl(path: str) -> list:
    import json

    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def teacher_accuracy(path: str, records) -> float:
    """Greedy held-out accuracy of the teacher at `path`, with its own tokenizer."""
    from unified_opd.domains.lm import load_causal_lm
    from unified_opd.domains.text.zoo import arith

    lm, tok = load_causal_lm(path, "float32", False, "teacher")
    return arith.greedy_accuracy(lm, tok, records)


def cut_otherwise(path: str, records) -> float:
    """Share of `records`' answers that the tokenizer at `path` cuts into other pieces than one
    character a token (where align's spans hold more than one student token)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    pieces = [tok(r["answer"], add_special_tokens=False)["input_ids"] for r in records]
    return sum(len(p) != len(r["answer"]) for p, r in zip(pieces, records)) / len(records)


def overrides(args, teacher: list, run_dir: Path, seed: int) -> list:
    return [*teacher, *arith_overrides(args, run_dir), f"trainer.seed={seed}", "eval.kl=false"]


def train_interleaved(args, teachers: dict):
    """One row per seed: the student's accuracy before training and each case's after."""
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for
    from unified_opd.trainer import Trainer

    for seed in args.seeds:
        trainers = {}
        for c in args.cases:
            _, needs, teacher = CASES[c]
            run_dir = Path(args.out_runs) / f"{c}_seed{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            trainers[c] = Trainer(load_config(CONFIG, overrides(args, teacher(teachers[needs]), run_dir, seed), schema_for))
        before = next(iter(trainers.values()))._evaluate("step_0")["accuracy"]
        names = list(trainers)
        for step in range(1, args.steps + 1):
            for c in names if step % 2 else names[::-1]:
                trainers[c].train_step()
                trainers[c].step += 1
        yield {"seed": seed, "before": before, "after": {c: tr._evaluate(f"step_{args.steps}")["accuracy"] for c, tr in trainers.items()}}


def gain_stats(rows: list, case: str, n: int) -> tuple:
    """(mean accuracy after, mean gain, binomial s.e. of one run's gain, s.e. of the mean gain
    across seeds or None with one seed), in accuracy units."""
    after = [r["after"][case] for r in rows]
    gains = [a - r["before"] for a, r in zip(after, rows)]
    a, b = sum(after) / len(after), rows[0]["before"]
    binomial = math.sqrt((a * (1 - a) + b * (1 - b)) / n)
    mean = sum(gains) / len(gains)
    seeds = math.sqrt(sum((g - mean) ** 2 for g in gains) / (len(gains) - 1) / len(gains)) if len(gains) > 1 else None
    return a, mean, binomial, seeds


def report(rows, args, teachers: dict, teacher_acc: dict, cut: float, command: str, load_before: tuple) -> None:
    n, b = args.eval_size, rows[0]["before"]
    seeds = ", ".join(str(r["seed"]) for r in rows)
    teacher_lines = []
    if "pair" in teachers:
        teacher_lines.append(
            f"The pair teacher: `--teacher-tokenizer {args.teacher_tokenizer}` (119 tokens; {args.teacher_hidden} wide, "
            f"{args.teacher_layers} layers, {args.teacher_heads} heads, {args.teacher_steps} supervised steps, the zoo "
            f"teacher's recipe; `{teachers['pair']}`); it cuts {cut:.0%} of the held-out answers otherwise than one "
            f"character a token."
        )
    if "remapped" in teachers:
        teacher_lines.append(f"The remapped teacher: `{teachers['remapped']}`.")
    if "reseeded" in teachers:
        teacher_lines.append(f"The reseeded teacher (character-level, the zoo recipe from seed {args.reseeded_teacher_seed}): `{teachers['reseeded']}`.")
    md = [
        "# Cross-tokenizer distillation on arith",
        "",
        f"`{command}`: {args.steps} steps, {args.batch} prompts x 1 sample per step, lr {args.lr} constant after {args.warmup} "
        f"warm-up steps, seed(s) {seeds}; the character-level zoo student (19 tokens). Accuracy: greedy on {n} held-out prompts.",
        *teacher_lines,
        f"Load average (1/5/15 min) at the start: {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "Teachers' own held-out accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in teacher_acc.items()) + ". "
        f"Student before training: {b:.3f}.",
        "",
        "| case | accuracy after (per seed) | gain over the initial student (± s.e. of one run) | ± s.e. across seeds | gain / same-tokenizer gain |",
        "|---|---|---|---|---|",
    ]
    same_gain = gain_stats(rows, "same", n)[1] if "same" in args.cases else None
    for c in args.cases:
        a, g, binomial, across = gain_stats(rows, c, n)
        per_seed = " / ".join(f"{r['after'][c]:.3f}" for r in rows)
        ratio = f"{g / same_gain:.2f}" if same_gain else "–"
        spread = f"{across * 100:.1f} pts" if across is not None else "– (one seed)"
        md.append(f"| {CASES[c][0]} | {a:.3f} ({per_seed}) | {g * 100:+.1f} ± {binomial * 100:.1f} pts | {spread} | {ratio} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cross_tokenizer.md").write_text("\n".join(md) + "\n")


def main(argv=None):
    from unified_opd.domains.text.zoo import arith

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arith_run_args(p)
    p.add_argument("--same-teacher", default="zoo:arith/teacher")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=["same", "align-pair", "uld-pair"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--teacher-tokenizer", choices=list(arith.PAIR_SPLITS), default="answer-tail", help="arith.build_pair_tokenizer's pairs")
    p.add_argument("--teacher-steps", type=int, default=arith.TEACHER.steps)
    p.add_argument("--teacher-hidden", type=int, default=arith.TEACHER.hidden)
    p.add_argument("--teacher-layers", type=int, default=arith.TEACHER.layers)
    p.add_argument("--teacher-heads", type=int, default=arith.TEACHER.heads)
    p.add_argument("--reseeded-teacher-seed", type=int, default=5, help="same-reseeded's teacher (the zoo teacher's is 1)")
    p.add_argument("--out-runs", default="runs/bench_cross_tokenizer")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from unified_opd.zoo import resolve

    needed = {CASES[c][1] for c in args.cases}
    teachers = {"same": args.same_teacher}
    if "pair" in needed:
        teachers["pair"] = str(pair_teacher(args))
    if "remapped" in needed:
        teachers["remapped"] = str(remapped_teacher(args))
    if "reseeded" in needed:
        teachers["reseeded"] = str(reseeded_teacher(args))
    held = load_jsonl(resolve("zoo:arith/eval.jsonl", "data.eval_path"))[: args.eval_size]
    acc = {k: teacher_accuracy(path, held) for k, path in teachers.items()}
    cut = cut_otherwise(teachers["pair"], held) if "pair" in teachers else 0.0
    collect("cross_tokenizer.py", argv, train_interleaved(args, teachers),
            lambda done, command, load: report(done, args, teachers, acc, cut, command, load))
    print((Path(args.out) / "cross_tokenizer.md").read_text())


if __name__ == "__main__":
    main()
