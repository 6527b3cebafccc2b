"""Peak memory per rank of a >=100M-parameter student on 2 CPU processes (gloo): DDP vs FSDP2
(full fine-tuning) vs LoRA under DDP, and the step-time cost of gradient checkpointing (one process).

Every case is `uopd train` on arith with the zoo teacher and a freshly initialised Llama student
of `--hidden` x `--layers` over the arith tokenizer; peak memory is the trainer's own
`memory/peak_rss_gib/rank<i>` metric (resident set high-water, so it includes the teacher, the
Python runtime and the rollout), step times are its `time/update` and `time/step`. The
checkpointing cases alternate (off, on, off, on, ...) so both see the same machine load; the
ratio of medians is reported. FSDP2 is `accelerate launch --config_file configs/accelerate/fsdp2.yaml`
(on CPU the student is sharded by `unified_opd.fsdp`).

    UOPD_HOME=runs/bench_home OMP_NUM_THREADS=1 python benchmarks/scale_memory.py --steps 4 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from unified_opd.domains.lm.tiny import tiny_llama
from unified_opd.domains.text.zoo import arith

ROOT = Path(__file__).resolve().parents[1]
RUN = ["configs/text/opd_arith.yaml", "rollout.batch_size=8", "rollout.num_samples=1", "eval.size=8", "eval.teacher=false",
       "trainer.save_every=0", "trainer.max_time_minutes=0", "trainer.warmup_steps=0", "trainer.cpu=true"]


def build_student(path: Path, hidden: int, layers: int) -> int:
    """A fresh Llama student saved at `path`; returns its parameter count."""
    tok = arith.build_tokenizer()
    torch.manual_seed(0)
    model = tiny_llama(tok, hidden=hidden, layers=layers, heads=hidden // 64, context=64)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


DDP = ("--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no")
FSDP2 = ("--config_file", str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"))


def train(out: Path, student: Path, steps: int, processes: int, *overrides: str, engine=DDP) -> list:
    """One `uopd train` (under `accelerate launch` with `engine`'s flags for 2 processes); its metrics rows."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", *engine, "--num_processes", str(processes), "-m", "unified_opd.cli"]
    cmd = (launch if processes > 1 else [sys.executable, "-m", "unified_opd.cli"]) + [
        "train", *RUN, f"student.path={student}", f"trainer.max_steps={steps}", f"trainer.output_dir={out}", *overrides]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return [json.loads(x) for x in open(out / "metrics.jsonl") if '"loss"' in x]


def peaks(rows: list, processes: int) -> list:
    return [rows[-1][f"memory/peak_rss_gib/rank{i}"] for i in range(processes)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=14)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", default="runs/bench_scale")
    ap.add_argument("--out", default="docs/benchmarks/scale_memory.md")
    args = ap.parse_args(argv)
    work = Path(args.work)
    student = work / "student"
    n = build_student(student, args.hidden, args.layers)
    lines = [f"# Peak memory per rank and gradient checkpointing ({n / 1e6:.0f}M-parameter student, CPU)", "",
             f"`python benchmarks/scale_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "| case (2 processes, gloo) | peak RSS rank 0 (GiB) | peak RSS rank 1 (GiB) | time/update (s) |", "|---|---|---|---|"]
    cases = (("DDP, full fine-tuning", (), DDP), ("FSDP2, full fine-tuning", (), FSDP2),
             ("DDP, LoRA r=16", ("student.lora.r=16", "student.lora.alpha=32"), DDP))
    for name, extra, engine in cases:
        rows = train(work / name.replace(" ", "_").replace(",", "").replace("=", ""), student, args.steps, 2, *extra, engine=engine)
        p = peaks(rows, 2)
        upd = statistics.median(r["time/update"] for r in rows[1:])
        lines.append(f"| {name} | {p[0]:.2f} | {p[1]:.2f} | {upd:.2f} |")
    times = {False: [], True: []}
    for i in range(args.repeats):
        for ckpt in (False, True):
            rows = train(work / f"ckpt_{ckpt}_{i}", student, args.steps, 1, f"trainer.gradient_checkpointing={ckpt}")
            times[ckpt] += [(r["time/update"], r["time/step"]) for r in rows[1:]]
    med = {k: [statistics.median(t[j] for t in v) for j in (0, 1)] for k, v in times.items()}
    lines += ["", "| gradient checkpointing (1 process, full fine-tuning) | time/update (s) | time/step (s) |", "|---|---|---|"]
    lines += [f"| {'on' if k else 'off'} | {v[0]:.3f} | {v[1]:.3f} |" for k, v in med.items()]
    lines += ["", f"ratio on/off: update {med[True][0] / med[False][0]:.2f}x, step {med[True][1] / med[False][1]:.2f}x "
              f"(medians over {args.repeats} alternating launches x {args.steps - 1} steps; the first step of each is left out)"]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
