"""Cross-tokenizer distillation on `arith`: a teacher with a BPE (digit-pair) tokenizer teaching
the character-level zoo student, against the same-tokenizer run.

The pair teacher (`arith.build_pair_tokenizer`: "47" is one token) is trained here from scratch
with the zoo's supervised recipe (`--teacher-steps`, cached under `--out-runs`); its greedy
accuracy is reported beside the zoo teacher's, since a gain depends on the teacher's strength.
Cases, each `configs/text/opd_arith.yaml` for `--steps` steps of `--batch` prompts x 1 sample
(seed 0), trainers interleaved in one process:

* same tokenizer -- the character-level teacher `--same-teacher` (default zoo:arith/teacher);
* align (pair teacher) -- the pair teacher, `teacher.tokenizer: align` (GOLD-style spans,
  sampled-token reverse KL);
* align / uld (remapped teacher) -- the same-tokenizer teacher's weights over another vocabulary
  (`remapped_teacher`: the characters in reverse id order plus the 100 digit pairs, 119 tokens;
  one character a token, so spans are one token each): `teacher.tokenizer: align`, and `uld`
  with `divergence.name: tv` (the ULD loss). A teacher as strong as the same-tokenizer one,
  whose token ids all differ.

Accuracy: greedy on the first `--eval-size` held-out prompts before training and after the
last step, with the binomial standard error of the gain.

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
CASES = {  # name -> overrides(args, {teacher kind: path})
    "same tokenizer": lambda args, t: [f"teacher.path={args.same_teacher}"],
    "align (pair teacher)": lambda args, t: [f"teacher.path={t['pair']}", "teacher.tokenizer=align"],
    "align (remapped teacher)": lambda args, t: [f"teacher.path={t['remapped']}", "teacher.tokenizer=align"],
    "uld (remapped teacher)": lambda args, t: [f"teacher.path={t['remapped']}", *ULD],
}


def pair_teacher(args) -> Path:
    """The digit-pair-tokenizer teacher, trained once with the zoo's supervised loop and cached."""
    from unified_opd.domains.text.zoo import arith
    from unified_opd.zoo import resolve

    out = Path(args.out_runs) / f"pair_teacher_{args.teacher_steps}"
    if (out / "config.json").is_file():
        return out
    tok = arith.build_pair_tokenizer()
    train = load_jsonl(resolve("zoo:arith/train.jsonl", "data.path"))
    torch.manual_seed(0)
    spec = arith.ModelSpec(hidden=args.teacher_hidden, layers=args.teacher_layers, heads=4, steps=args.teacher_steps, lr=1e-3, batch=64)
    model = spec.build(tok)
    arith.train_supervised(model, tok, train, spec, seed=0, label="pair-teacher")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


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


def overrides(args, teacher: list, run_dir: Path) -> list:
    return [*teacher, *arith_overrides(args, run_dir), "eval.kl=false"]


def train_interleaved(args, teachers: dict):
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for
    from unified_opd.trainer import Trainer

    trainers = {}
    for name, teacher in CASES.items():
        run_dir = Path(args.out_runs) / name.replace(" ", "_").strip("()").replace("(", "").replace(")", "")
        shutil.rmtree(run_dir, ignore_errors=True)
        trainers[name] = Trainer(load_config(CONFIG, overrides(args, teacher(args, teachers), run_dir), schema_for))
    before = trainers["same tokenizer"]._evaluate("step_0")["accuracy"]
    names = list(trainers)
    for step in range(1, args.steps + 1):
        for c in names if step % 2 else names[::-1]:
            trainers[c].train_step()
            trainers[c].step += 1
    yield {"before": before, "after": {c: tr._evaluate(f"step_{args.steps}")["accuracy"] for c, tr in trainers.items()}}


def report(rows, args, teachers: dict, teacher_acc: dict, command: str, load_before: tuple) -> None:
    row, n = rows[-1], args.eval_size
    b = row["before"]
    md = [
        "# Cross-tokenizer distillation on arith",
        "",
        f"`{command}`: {args.steps} steps, {args.batch} prompts x 1 sample per step, lr {args.lr} constant after {args.warmup} "
        f"warm-up steps, seed 0; the character-level zoo student (19 tokens) and, for the cross-tokenizer cases, a teacher "
        f"with the digit-pair BPE tokenizer (119 tokens; {args.teacher_hidden} wide, {args.teacher_layers} layers, "
        f"{args.teacher_steps} supervised steps, `{teachers['pair']}`) or the remapped one (`{teachers['remapped']}`). "
        f"Accuracy: greedy on {n} held-out prompts.",
        f"Load average (1/5/15 min) at the start: {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "Teachers' own held-out accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in teacher_acc.items()) + ". "
        f"Student before training: {b:.3f}.",
        "",
        "| case | accuracy after | gain over the initial student (± s.e.) | gain / same-tokenizer gain |",
        "|---|---|---|---|",
    ]
    same_gain = row["after"]["same tokenizer"] - b
    for c, a in row["after"].items():
        se = math.sqrt((a * (1 - a) + b * (1 - b)) / n) * 100
        md.append(f"| {c} | {a:.3f} | {(a - b) * 100:+.1f} ± {se:.1f} pts | {(a - b) / same_gain:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cross_tokenizer.md").write_text("\n".join(md) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arith_run_args(p)
    p.add_argument("--same-teacher", default="zoo:arith/teacher")
    p.add_argument("--teacher-steps", type=int, default=800)
    p.add_argument("--teacher-hidden", type=int, default=128)
    p.add_argument("--teacher-layers", type=int, default=3)
    p.add_argument("--out-runs", default="runs/bench_cross_tokenizer")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from unified_opd.zoo import resolve

    teachers = {"pair": pair_teacher(args), "remapped": remapped_teacher(args)}
    held = load_jsonl(resolve("zoo:arith/eval.jsonl", "data.eval_path"))[: args.eval_size]
    acc = {"same-tokenizer": teacher_accuracy(args.same_teacher, held), **{k: teacher_accuracy(str(p), held) for k, p in teachers.items()}}
    collect("cross_tokenizer.py", argv, train_interleaved(args, teachers),
            lambda done, command, load: report(done, args, teachers, acc, command, load))
    print((Path(args.out) / "cross_tokenizer.md").read_text())


if __name__ == "__main__":
    main()
