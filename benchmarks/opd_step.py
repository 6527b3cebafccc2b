"""End-to-end on-policy distillation throughput: our Trainer vs TRL's DistillationTrainer.

Both train the same student (saved with `save_pretrained`) toward the same teacher, on the same
prompts, batch, completion length, learning rate, AdamW, constant schedule and gradient clipping.
A step is the whole on-policy loop: sample completions from the student, score them with the
teacher, full-vocabulary reverse KL, backward, optimiser step. TRL is `DistillationTrainer` with
`beta=1` (reverse KL; it generates every step, i.e. fully on-policy); ours is `uopd train` with
the generated config `<out>/uopd.yaml`, once with the same loss (`objective.estimator=analytic`)
and once with our default sampled-token estimator.

Reported per trainer: median seconds per step (process CPU time between consecutive step ends,
the first step excluded), student tokens per second, and the drop of the student's mean reverse KL to the
teacher, measured by one function for both on the same held-out prompts before and after
training, divided by the number of steps. For ours also the rollout / teacher / update shares
(`uopd train --profile`).

    nice -n 19 python benchmarks/opd_step.py                     # overhead-bound: ~100k-parameter models
    nice -n 19 python benchmarks/opd_step.py --regime compute    # 20M student, 100M teacher, V=32k, 128 tokens
    python benchmarks/opd_step.py --profile sampled               # cProfile of our step instead
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


@dataclass
class Regime:
    vocab: int
    student: tuple  # (hidden, layers)
    teacher: tuple
    prompts: int
    prompt_tokens: int
    new_tokens: int
    steps: int


REGIMES = {
    "overhead": Regime(vocab=256, student=(48, 2), teacher=(64, 2), prompts=16, prompt_tokens=8, new_tokens=8, steps=40),
    "compute": Regime(vocab=32000, student=(512, 1), teacher=(1024, 5), prompts=16, prompt_tokens=16, new_tokens=128, steps=4),
}
LR = 1e-3
EVAL_PROMPTS = 32


# ------------------------------------------------------------------ models and data
def build_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `w0 w1 ...`: any vocabulary size, every id decodes and re-encodes."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    table = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(vocab - len(specials))])}
    tok = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="left"
    )


def save_model(path: Path, tok, hidden: int, layers: int, seed: int, max_len: int, init_std: float = 0.02) -> int:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64) * 2,
        num_key_value_heads=max(1, hidden // 64) * 2,
        max_position_embeddings=max_len,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=init_std,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def prompts(n: int, length: int, vocab: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, length), generator=g)
    return [{"prompt": " ".join(f"w{int(i) - 4}" for i in row)} for row in ids]


def write_jsonl(path: Path, records: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


# ------------------------------------------------------------------ the shared yardstick
@torch.no_grad()
def mean_reverse_kl(student_dir: Path, teacher_dir: Path, records: list, new_tokens: int) -> float:
    """Mean full-vocabulary KL(student ‖ teacher) over the student's own sampled completion tokens
    (up to the first EOS), same seed for every call: one yardstick for both trainers."""
    tok = PreTrainedTokenizerFast.from_pretrained(student_dir)
    student = LlamaForCausalLM.from_pretrained(student_dir).eval()
    teacher = LlamaForCausalLM.from_pretrained(teacher_dir).eval()
    enc = tok([r["prompt"] for r in records], return_tensors="pt", padding=True)
    torch.manual_seed(1234)
    seq = student.generate(**enc, do_sample=True, max_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
    gen = seq[:, enc["input_ids"].shape[1] :]
    is_eos = (gen == tok.eos_token_id).long()
    keep = ((is_eos.cumsum(-1) - is_eos) == 0).float()
    attn = torch.cat([enc["attention_mask"], keep.long()], 1)
    positions = (attn.cumsum(-1) - 1).clamp_min(0)
    start = enc["input_ids"].shape[1] - 1
    ls, lt = (
        torch.log_softmax(m(input_ids=seq, attention_mask=attn, position_ids=positions).logits[:, start:-1].float(), -1)
        for m in (student, teacher)
    )
    kl = (ls.exp() * (ls - lt)).sum(-1)
    return float((kl * keep).sum() / keep.sum())


# ------------------------------------------------------------------ the two trainers
class StepClock:
    """Process CPU time at the end of every optimiser step; `after_step` is our trainer's callback
    hook. CPU time, not wall time: these runs are niced on shared machines, where a process can
    be preempted or stopped mid-step."""

    def __init__(self):
        self.ends = []

    def after_step(self, policy=None, step=None):
        self.ends.append(time.process_time())

    def seconds_per_step(self) -> float:
        return statistics.median(b - a for a, b in zip(self.ends, self.ends[1:]))


def uopd_config(root: Path, reg: Regime, estimator: str, out: Path) -> Path:
    """The YAML `uopd train` would be given; every key the comparison depends on is spelt out."""
    cfg = f"""# generated by benchmarks/opd_step.py; run alone with: uopd train {out}/uopd_{estimator}.yaml --profile
domain: text
student: {{path: {root}/student}}
teacher: {{path: {root}/teacher}}
data: {{path: {root}/train.jsonl, eval_path: {root}/eval.jsonl, chat_template: never}}
rollout: {{batch_size: {reg.prompts}, num_samples: 1, max_new_tokens: {reg.new_tokens}, temperature: 1.0}}
divergence: {{name: reverse_kl}}
objective: {{estimator: {estimator}}}
trainer: {{max_steps: {reg.steps}, lr: {LR}, lr_schedule: constant, grad_clip: 1.0, weight_decay: 0.0, seed: 0,
  output_dir: {out}/run_uopd_{estimator}, save_every: 0, resume: never, cpu: true, profile: true}}
eval: {{size: 4, batch_size: 4, teacher: false, kl: false}}
"""
    path = out / f"uopd_{estimator}.yaml"
    path.write_text(cfg)
    return path


def run_uopd(root: Path, reg: Regime, estimator: str, out: Path) -> dict:
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for
    from unified_opd.trainer import Trainer

    trainer = Trainer(load_config(str(uopd_config(root, reg, estimator, out)), [], schema_for))
    clock = StepClock()
    trainer.callbacks.append(clock)
    summary = trainer.train()
    phases = summary["phase_seconds"]
    total = sum(phases.values())
    return {
        "seconds_per_step": clock.seconds_per_step(),
        "final": out / f"run_uopd_{estimator}" / "final",
        "shares": {k: v / total for k, v in phases.items()},
    }


def run_trl(root: Path, reg: Regime, out: Path) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DistillationConfig, DistillationTrainer

    class TrlClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clock.after_step()

    args = DistillationConfig(
        output_dir=str(out / "run_trl"),
        per_device_train_batch_size=reg.prompts,
        gradient_accumulation_steps=1,
        max_completion_length=reg.new_tokens,
        max_steps=reg.steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=1.0,
        temperature=1.0,
        bf16=False,
        gradient_checkpointing=False,  # TRL's default is on; ours never recomputes the backbone
        use_cpu=True,
        seed=0,
        logging_steps=reg.steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    records = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    tok = PreTrainedTokenizerFast.from_pretrained(root / "student")
    clock = StepClock()
    trainer = DistillationTrainer(
        model=str(root / "student"),
        teacher_model=str(root / "teacher"),
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tok,
        callbacks=[TrlClock()],
    )
    trainer.train()
    trainer.save_model(str(out / "run_trl" / "final"))
    tok.save_pretrained(out / "run_trl" / "final")
    return {"seconds_per_step": clock.seconds_per_step(), "final": out / "run_trl" / "final"}


def profile_uopd(root: Path, reg: Regime, estimator: str, argv: list, rows: int = 25) -> str:
    """cProfile of our training steps (after two warm-up steps): the functions with the most
    cumulative time, to show which part of a step is ours to cut and which is the model's."""
    import cProfile
    import io
    import pstats

    from unified_opd.config import load_config
    from unified_opd.domain import schema_for
    from unified_opd.trainer import Trainer

    trainer = Trainer(load_config(str(uopd_config(root, reg, estimator, root)), [], schema_for))
    for _ in range(2):
        trainer.train_step()
    prof = cProfile.Profile()
    prof.runcall(lambda: [trainer.train_step() for _ in range(reg.steps)])
    text = io.StringIO()
    pstats.Stats(prof, stream=text).strip_dirs().sort_stats("cumulative").print_stats(rows)
    body = text.getvalue().split("\n")
    start = next(i for i, line in enumerate(body) if line.strip().startswith("ncalls"))
    return "\n".join(
        [
            f"# Where an OPD step goes: cProfile of `uopd train` ({estimator}), regime `{argv_regime(argv)}`",
            "",
            f"`python benchmarks/opd_step.py {' '.join(argv)}`: {reg.steps} steps after 2 warm-up steps, "
            f"{reg.prompts} prompts x {reg.new_tokens} new tokens, one process. Top {rows} functions by cumulative time:",
            "",
            "```",
            *(line for line in body[start:] if line.strip()),
            "```",
            "",
        ]
    )


# ------------------------------------------------------------------ report
def report(results: dict, reg: Regime, kl0: float, params: dict, argv: list, loads: tuple) -> str:
    tokens = reg.prompts * reg.new_tokens  # completion tokens per step, at most (EOS can end one early)
    trl = results.get("trl")
    lines = [
        "| trainer | CPU s/step | student tokens/CPU s | steps/s ×TRL | KL after | KL drop per step | drop/step ×TRL |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        drop = (kl0 - r["kl"]) / reg.steps
        vs = f"{trl['seconds_per_step'] / r['seconds_per_step']:.2f}" if trl else "n/a"
        dvs = f"{drop / ((kl0 - trl['kl']) / reg.steps):.2f}" if trl and kl0 != trl["kl"] else "n/a"
        lines.append(
            f"| {name} | {r['seconds_per_step']:.3f} | {tokens / r['seconds_per_step']:.0f} | {vs} | {r['kl']:.4f} | {drop:.5f} | {dvs} |"
        )
    shares = "\n".join(
        f"- `{name}`: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["shares"].items())
        for name, r in results.items()
        if "shares" in r
    )
    return "\n".join(
        [
            f"## Regime `{argv_regime(argv)}`",
            "",
            f"`{' '.join(['python', 'benchmarks/opd_step.py', *argv])}`: student {params['student']:,} parameters, teacher "
            f"{params['teacher']:,}, vocabulary {reg.vocab}, {reg.prompts} prompts x {reg.new_tokens} new tokens per step, "
            f"{reg.steps} steps, lr {LR}, CPU ({torch.get_num_threads()} threads). KL before training: {kl0:.4f}. "
            f"Load average before / after: {loads[0]:.2f} / {loads[1]:.2f}.",
            "",
            *lines,
            "",
            "Where our step time goes (rollout / teacher / update, wall time, `trainer.profile`):",
            "",
            shares,
            "",
        ]
    )


def argv_regime(argv: list) -> str:
    return argv[argv.index("--regime") + 1] if "--regime" in argv else "overhead"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(names, [1 / results[n]["seconds_per_step"] for n in names], color=["C1" if n == "trl" else "C2" for n in names])
    ax.set_xlabel("optimiser steps per second")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--regime", choices=list(REGIMES), default="overhead")
    p.add_argument("--steps", type=int, help="override the regime's number of steps")
    p.add_argument("--work", default="runs/bench_opd_step", help="models, data and runs")
    p.add_argument("--out", default="docs/benchmarks", help="where opd_step[_compute].md and .png go")
    p.add_argument("--profile", choices=["analytic", "sampled"], help="instead: cProfile our trainer (that estimator)")
    argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    args = p.parse_args(argv)
    reg = REGIMES[args.regime]
    if args.steps:
        reg.steps = args.steps
    root = Path(args.work) / args.regime
    for old_run in root.glob("run_*"):  # the trainers refuse to overwrite a finished run
        shutil.rmtree(old_run)
    root.mkdir(parents=True, exist_ok=True)
    max_len = reg.prompt_tokens + reg.new_tokens + 8
    tok = build_tokenizer(reg.vocab)
    params = {
        "student": save_model(root / "student", tok, *reg.student, seed=0, max_len=max_len),
        # a wider initialisation makes the random teacher peaked, so there is a KL to close
        "teacher": save_model(root / "teacher", tok, *reg.teacher, seed=1, max_len=max_len, init_std=0.3),
    }
    write_jsonl(root / "train.jsonl", prompts(reg.prompts * max(reg.steps, 1), reg.prompt_tokens, reg.vocab, seed=0))
    held = prompts(EVAL_PROMPTS, reg.prompt_tokens, reg.vocab, seed=1)
    write_jsonl(root / "eval.jsonl", held)
    suffix = "" if args.regime == "overhead" else f"_{args.regime}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.profile:
        md = profile_uopd(root, reg, args.profile, argv)
        (out / f"opd_step{suffix}_profile.md").write_text(md)
        print(md)
        return {}
    kl0 = mean_reverse_kl(root / "student", root / "teacher", held, reg.new_tokens)
    load_before = os.getloadavg()[0]
    results = {
        "trl": run_trl(root, reg, root),
        "uopd (analytic)": run_uopd(root, reg, "analytic", root),
        "uopd (sampled)": run_uopd(root, reg, "sampled", root),
    }
    loads = (load_before, os.getloadavg()[0])
    for r in results.values():
        r["kl"] = mean_reverse_kl(r["final"], root / "teacher", held, reg.new_tokens)
    md = report(results, reg, kl0, params, argv, loads)
    (out / f"opd_step{suffix}.md").write_text("# End-to-end OPD step: uopd vs TRL DistillationTrainer\n\n" + md)
    print(md)
    plot(results, out / f"opd_step{suffix}.png")
    return results


if __name__ == "__main__":
    main()
