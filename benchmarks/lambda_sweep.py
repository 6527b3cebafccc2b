"""Scan ExOPD's λ and locate the extrapolation cliff on `arith`.

For each λ, trains `configs/text/exopd_arith.yaml` with `objective.lam=λ` (same seed and budget),
then decodes the held-out prompts greedily and reports accuracy and *format validity* (the share
of completions that are a bare integer closed by EOS, arith's output format). The cliff is the
smallest λ whose validity falls below `--drop` x the validity at λ = 1: past it the extrapolated
target leaves the region where the student's format survives (The Extrapolation Cliff).

    UOPD_HOME=runs/bench_home python benchmarks/lambda_sweep.py --lams 1 1.25 1.5 2 3 4 --steps 30

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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lams", type=float, nargs="+", default=[1.0, 1.25, 1.5, 2.0, 3.0, 4.0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--eval-size", type=int, default=200)
    p.add_argument("--drop", type=float, default=0.9)
    p.add_argument("--out", default="runs/lambda_sweep")
    args = p.parse_args()
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
