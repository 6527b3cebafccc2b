"""Scan ExOPD's λ and locate the extrapolation cliff on `arith`.

For each λ, trains `configs/text/exopd_arith.yaml` with `objective.lam=λ` (same seed and budget),
then decodes the held-out prompts greedily and reports accuracy and *format validity* (the share
of completions that are a bare integer closed by EOS, arith's output format). The cliff is the
smallest λ whose validity falls below `--drop` x the validity at λ = 1: past it the extrapolated
target leaves the region where the student's format survives (The Extrapolation Cliff).

    UOPD_HOME=runs/bench_home python benchmarks/lambda_sweep.py --lams 1 1.25 1.5 2 3 4 --steps 30

`--target` trains nothing: it decodes the extrapolated target itself, greedily, in G-OPD's merging
setting (each problem's skill expert from `zoo:arith_skill_experts`, the student as reference),
i.e. argmax of pool([expert, student], [λ, 1−λ]) token by token. It shows whether the target that
ExOPD distils towards answers better than the expert (λ = 1) before any training noise:

    UOPD_HOME=runs/bench_home python benchmarks/lambda_sweep.py --target --lams 1 1.5 2 3 --eval-size 300

The same scan by hand is an override loop:
    for l in 1 1.5 2 3; do uopd train configs/text/exopd_arith.yaml objective.lam=$l trainer.output_dir=runs/lam_$l; done
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from unified_opd.config import load_config
from unified_opd.data import read_jsonl
from unified_opd.domain import schema_for
from unified_opd.trainer import Trainer
from unified_opd.zoo import resolve

INTEGER = re.compile(r"^-?\d+$")


def format_validity(completions: list) -> float:
    """Share of completions that are one integer and nothing else."""
    return sum(bool(INTEGER.match(c.strip())) for c in completions) / max(1, len(completions))


@torch.no_grad()
def decode(policy, records: list) -> list:
    from unified_opd.domains.lm import Sampling

    greedy = Sampling(num_samples=1, max_new_tokens=policy.sampling.max_new_tokens, greedy=True)
    r = policy.rollout(records, greedy)
    eos = [bool((r.actions[i][r.mask[i]] == policy.tokenizer.eos_token_id).any()) for i in range(r.batch_size)]
    comps = [c if e else c + "<no-eos>" for c, e in zip(r.meta["completions"], eos)]
    return comps, float(r.outcome.float().mean())


EXPERT_OF = {"add": "addsub", "sub": "addsub", "mul": "mul"}


@torch.no_grad()
def target_accuracy(lam: float, held: list, max_new_tokens: int = 6) -> dict:
    """Greedy accuracy of the extrapolated target pool([expert, student], [λ, 1−λ]), per operator.
    An operator's prompts all have one length (operands are zero-padded), so a batch needs no padding."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    import unified_opd as uo

    student_path = resolve("zoo:arith/student", "student.path")
    tok = PreTrainedTokenizerFast.from_pretrained(student_path)
    ref = AutoModelForCausalLM.from_pretrained(student_path).eval()
    out = {}
    for op, expert_name in EXPERT_OF.items():
        expert = AutoModelForCausalLM.from_pretrained(resolve(f"zoo:arith_skill_experts/{expert_name}", "teacher.path")).eval()
        records = [r for r in held if r["task"] == op]
        ids = torch.tensor(tok([r["prompt"] for r in records])["input_ids"])
        done = torch.zeros(len(records), dtype=torch.bool)
        answers = [[] for _ in records]
        for _ in range(max_new_tokens):
            target = uo.pool([uo.Categorical.from_logits(expert(ids).logits[:, -1]), uo.Categorical.from_logits(ref(ids).logits[:, -1])], [lam, 1.0 - lam])
            nxt = target.log_probs().argmax(-1)
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    answers[i].append(t)
            done |= nxt == tok.eos_token_id
            ids = torch.cat([ids, nxt[:, None]], 1)
        texts = tok.batch_decode(answers, skip_special_tokens=True)
        out[op] = sum(t.strip() == r["answer"] for t, r in zip(texts, records)) / len(records)
    out["mixed"] = sum(out[op] * sum(r["task"] == op for r in held) for op in EXPERT_OF) / len(held)
    return out


def target_scan(args) -> None:
    held = read_jsonl(resolve("zoo:arith/eval.jsonl", "data.eval_path"))[: args.eval_size]
    rows = [{"lam": lam, **target_accuracy(lam, held)} for lam in args.lams]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "target.json").write_text(json.dumps(rows, indent=1))
    print("| λ | target greedy accuracy | + | − | × |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lam']} | {r['mixed']:.3f} | {r['add']:.3f} | {r['sub']:.3f} | {r['mul']:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lams", type=float, nargs="+", default=[1.0, 1.25, 1.5, 2.0, 3.0, 4.0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--eval-size", type=int, default=200)
    p.add_argument("--drop", type=float, default=0.9)
    p.add_argument("--out", default="runs/lambda_sweep")
    p.add_argument("--target", action="store_true", help="decode the merging setting's extrapolated target per λ (no training)")
    args = p.parse_args()
    if args.target:
        return target_scan(args)
    held = read_jsonl(resolve("zoo:arith/eval.jsonl", "data.eval_path"))[: args.eval_size]
    rows = []
    for lam in args.lams:
        over = [f"objective.lam={lam}", f"trainer.max_steps={args.steps}", "trainer.save_every=0", "trainer.max_time_minutes=0",
                f"trainer.output_dir={args.out}/lam_{lam}", "trainer.resume=never", "eval.size=50"]
        tr = Trainer(load_config("configs/text/exopd_arith.yaml", over, schema_for))
        tr.train()
        tr.policy.module.eval()
        comps, acc = decode(tr.policy, held)
        rows.append({"lam": lam, "accuracy": acc, "validity": format_validity(comps)})
        print(json.dumps(rows[-1]), flush=True)
    base = next((r["validity"] for r in rows if r["lam"] == 1.0), rows[0]["validity"])
    cliff = next((r["lam"] for r in rows if r["validity"] < args.drop * base), None)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "sweep.json").write_text(json.dumps({"rows": rows, "cliff": cliff}, indent=1))
    print("| λ | accuracy | format validity |\n|---|---|---|")
    for r in rows:
        print(f"| {r['lam']} | {r['accuracy']:.3f} | {r['validity']:.3f} |")
    print(f"extrapolation cliff: {'none in range' if cliff is None else f'λ* ≈ {cliff}'}")


if __name__ == "__main__":
    main()
