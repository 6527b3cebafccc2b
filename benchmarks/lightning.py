"""Lightning OPD (offline teacher cache) vs online OPD on `arith`: step throughput, accuracy, memory.

Every case is a shipped config with the same overrides: the same student and teacher, `--batch`
prompts x 1 sample per step, the online baseline's learning-rate schedule, `--steps` steps, seed 0.

* online (the baseline) -- `configs/text/opd_arith.yaml`: the student samples, the teacher scores
  in the loop, sampled-token reverse KL (the OPD default);
* online analytic -- `configs/text/full_vocab_arith.yaml`: the same rollouts, full-vocabulary
  reverse KL (the loss Lightning uses, but online);
* lightning -- `configs/text/lightning_arith.yaml`: `uopd cache-teacher` first writes the
  teacher's own samples and their top-8 log-probs for steps x batch training prompts, so each
  cached rollout is used once as each online one is; training replays them with no teacher in
  memory (reverse KL over the top-8 + tail buckets).

Time: the trainers of all cases live in this one process and take steps in turn (the order
alternates each round), so a change of load hits every case alike. A step's time is the process
CPU time of `Trainer.train_step`; the figure is the median over all steps, reported as step
throughput relative to online (online's median / the case's). Writing the cache is timed the
same way and also shown amortised over this one run. Accuracy: greedy on the first
`--eval-size` held-out prompts, every `--eval-every` steps and after the last; the difference to
online comes with its binomial standard error. Memory: a fresh process per case, forked from a
server that has only imported the libraries, builds the trainer and takes `--mem-steps` steps;
the figure is its peak RSS above its RSS before the build.

    OMP_NUM_THREADS=1 python benchmarks/lightning.py                            # zoo:arith, 300 steps x 64 prompts
    OMP_NUM_THREADS=1 python benchmarks/lightning.py --cases online online_analytic lightning
    python benchmarks/lightning.py --quick --set student.path=... ...           # tiny (tests/test_bench_lightning.py)
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import statistics
import time
from pathlib import Path

import torch
from _common import collect, peak_rss_above, reset_peak_rss

CASES = {  # name -> (label, config)
    "online": ("online OPD (sampled-token)", "configs/text/opd_arith.yaml"),
    "online_analytic": ("online OPD (full-vocab analytic)", "configs/text/full_vocab_arith.yaml"),
    "lightning": ("Lightning OPD (cache, top-8 analytic)", "configs/text/lightning_arith.yaml"),
}
BASELINE = "online"
GOALS = "step throughput ≥ 3x online, accuracy within 2 points of online"


def overrides(args, case: str, run_dir: Path) -> list:
    """What every case shares (batch, steps, schedule, evaluation), plus the cache location."""
    common = [
        f"rollout.batch_size={args.batch}",
        "rollout.num_samples=1",
        f"trainer.max_steps={args.steps}",
        f"trainer.lr={args.lr}",
        f"trainer.warmup_steps={args.warmup}",
        "trainer.lr_schedule=constant",
        "trainer.max_time_minutes=0",
        "trainer.save_every=0",
        "trainer.seed=0",
        f"trainer.output_dir={run_dir}",
        f"eval.size={args.eval_size}",
        "eval.kl=false",
        *args.set,
    ]
    if case == "lightning":
        common += [f"teacher.cache.dir={Path(args.out_runs) / 'cache'}", f"teacher.cache.prompts={args.steps * args.batch}"]
    return common


def make_config(args, case: str, run_dir: Path):
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for

    if run_dir.exists():
        shutil.rmtree(run_dir)
    return load_config(CASES[case][1], overrides(args, case, run_dir), schema_for)


def write_cache(args) -> float:
    """`uopd cache-teacher` for the lightning case, in this process; returns its CPU seconds."""
    from unified_opd.domains.text.cache import write_teacher_cache

    cfg = make_config(args, "lightning", Path(args.out_runs) / "cache_writer")
    t0 = time.process_time()
    write_teacher_cache(cfg)
    return time.process_time() - t0


def memory_case(args, case: str) -> float:
    """In a fresh process: MiB of peak RSS above the start, over the build and a few steps."""
    torch.set_num_threads(1)
    from unified_opd.trainer import Trainer

    base = reset_peak_rss()
    trainer = Trainer(make_config(args, case, Path(args.out_runs) / f"mem_{case}"))
    for _ in range(args.mem_steps):
        trainer.train_step()
    return peak_rss_above(base) / 2**20


def train_interleaved(args, cases):
    """Build every case's trainer, then take steps in turn; yields a row per case per evaluation."""
    from unified_opd.trainer import Trainer

    trainers = {c: Trainer(make_config(args, c, Path(args.out_runs) / c)) for c in cases}
    times = {c: [] for c in cases}
    phases = {c: [] for c in cases}
    curve = {c: [] for c in cases}

    def evaluate(step: int) -> None:
        for c, tr in trainers.items():
            curve[c].append((step, tr._evaluate(f"step_{step}")))

    evaluate(0)
    for step in range(1, args.steps + 1):
        for c in cases if step % 2 else cases[::-1]:
            tr = trainers[c]
            t0 = time.process_time()
            tr.train_step()
            times[c].append(time.process_time() - t0)
            phases[c].append(dict(tr.timer.this_step))
            tr.step += 1
        if step % args.eval_every == 0 or step == args.steps:
            evaluate(step)
            yield {"times": times, "phases": phases, "curve": curve, "step": step}


def accuracy(row: dict, case: str) -> float:
    return row["curve"][case][-1][1]["accuracy"]


def summary(row: dict, cases, mem: dict, cache_seconds: float, args) -> list:
    """One line per case: throughput vs online (median CPU time per step), accuracy, memory.
    Amortised over one run, Lightning's throughput is online_median · S / (lightning_median · S + cache
    CPU seconds), S = `--steps` (the cache holds S steps' rollouts)."""
    med = {c: statistics.median(row["times"][c]) for c in cases}
    base, acc0 = med[BASELINE], accuracy(row, BASELINE)
    lines = [
        "| case | step CPU ms (median) | step throughput / online | held-out accuracy | − online (± s.e.) | peak RSS MiB (fresh process) | memory / online |",
        "|" + "---|" * 7,
    ]
    for c in cases:
        a = accuracy(row, c)
        se = math.sqrt((a * (1 - a) + acc0 * (1 - acc0)) / args.eval_size) * 100
        diff = "–" if c == BASELINE else f"{(a - acc0) * 100:+.1f} ± {se:.1f} pts"
        m = mem.get(c, float("nan"))
        lines.append(
            f"| {CASES[c][0]} | {med[c] * 1000:.1f} | {base / med[c]:.2f}x | {a:.3f} | {diff} | {m:.0f} | {m / mem.get(BASELINE, float('nan')):.2f} |"
        )
    if "lightning" in cases:
        s = args.steps
        amortised = base * s / (med["lightning"] * s + cache_seconds)
        lines += ["", f"Cache write (`uopd cache-teacher`, teacher samples and scores): {cache_seconds:.1f} CPU s for {s} steps' "
                      f"rollouts; Lightning's throughput with it amortised over this one run: {amortised:.2f}x online."]
    shares = {p: statistics.median(x.get(p, 0.0) for x in row["phases"][BASELINE]) for p in ("rollout", "teacher", "update")}
    total = sum(shares.values()) or 1.0
    lines.append("Online step, median wall-time shares: " + ", ".join(f"{p} {v / total:.0%}" for p, v in shares.items()) + ".")
    return lines


def write_report(rows: list, args, cases, mem: dict, cache_seconds: float, command: str, load_before: tuple) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    row = rows[-1]
    md = [
        "# Lightning OPD (offline teacher cache) vs online OPD",
        "",
        f"`{command}`: {row['step']} of {args.steps} steps, {args.batch} prompts x 1 sample per step, lr {args.lr} "
        f"(constant after {args.warmup} warm-up steps: the online baseline's schedule, for every case), seed 0, "
        f"float32, CPU, one thread; goals: {GOALS}. Trainers take steps in turn in one process; time is process "
        f"CPU time per step (median); accuracy is greedy on the first {args.eval_size} held-out prompts after the "
        f"same number of steps; memory is the peak RSS of a fresh process per case above its RSS before building "
        f"the trainer, over the build and {args.mem_steps} steps.",
        f"Load average (1/5/15 min) at the start: {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"at the last row: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        *summary(row, cases, mem, cache_seconds, args),
        "",
        "Held-out accuracy by step:",
        "",
        "| step | " + " | ".join(CASES[c][0] for c in cases) + " |",
        "|" + "---|" * (len(cases) + 1),
    ]
    for i, (step, _) in enumerate(row["curve"][cases[0]]):
        md.append(f"| {step} | " + " | ".join(f"{row['curve'][c][i][1]['accuracy']:.3f}" for c in cases) + " |")
    (out / "lightning.md").write_text("\n".join(md) + "\n")
    try:
        plot(row, cases, out / "lightning.png")
    except ImportError:
        print("matplotlib is not installed: no lightning.png (pip install -e '.[bench]')")


def plot(row: dict, cases, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for c in cases:
        left.plot(*zip(*[(s, m["accuracy"]) for s, m in row["curve"][c]]), marker="o", label=CASES[c][0])
    left.set_xlabel("step")
    left.set_ylabel("held-out accuracy (greedy)")
    left.legend(fontsize=7)
    med = [statistics.median(row["times"][c]) * 1000 for c in cases]
    right.bar(range(len(cases)), med)
    right.set_xticks(range(len(cases)), [CASES[c][0].replace(" (", "\n(") for c in cases], fontsize=7)
    right.set_ylabel("step CPU time, median (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64, help="prompts per step (one sample each), every case")
    p.add_argument("--lr", type=float, default=5e-4, help="every case (configs/text/opd_arith.yaml's)")
    p.add_argument("--warmup", type=int, default=50, help="warm-up steps, every case (opd_arith.yaml's)")
    p.add_argument("--eval-size", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--mem-steps", type=int, default=5)
    p.add_argument("--cases", nargs="+", default=[BASELINE, "lightning"], choices=list(CASES))
    p.add_argument("--set", nargs="*", default=[], help="extra config overrides for every case (key=value)")
    p.add_argument("--out", default="docs/benchmarks", help="where lightning.md and lightning.png go")
    p.add_argument("--out-runs", default="runs/bench_lightning", help="run directories and the cache")
    p.add_argument("--quick", action="store_true", help="tiny budget: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.warmup, args.eval_size, args.eval_every, args.mem_steps = 4, 4, 1, 8, 2, 1
    torch.set_num_threads(1)
    cases = [BASELINE] + [c for c in args.cases if c != BASELINE]
    cache_seconds = write_cache(args) if "lightning" in cases else float("nan")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "unified_opd", "unified_opd.domains.text", "unified_opd.trainer"])
    mem = {}
    for c in cases:
        with ctx.Pool(1) as pool:
            mem[c] = pool.apply(memory_case, (args, c))
    rows = collect(
        "lightning.py", argv, train_interleaved(args, cases),
        lambda done, command, load: write_report(done, args, cases, mem, cache_seconds, command, load),
    )
    print((Path(args.out) / "lightning.md").read_text())
    return rows


if __name__ == "__main__":
    main()
