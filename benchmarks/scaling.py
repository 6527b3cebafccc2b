"""How an OPD update step's time and memory grow with sequence length, batch, vocabulary and teachers.

One step, as the trainer runs it after the rollout: every teacher scores the sampled tokens
(no gradient), the student runs forward, the loss is the full-vocabulary reverse KL from the
student's lazy `Categorical.from_hidden` to the teachers' log-linear pool (`uo.pool`, equal
weights; one teacher is the teacher itself), then backward and an AdamW step. Rollout
(decoding) is left out: its cost is the generation engine's, not the toolkit's.

The models are small Llamas (`--hidden`, `--layers`) built in-process. From a base point, one
axis is swept at a time (sequence length T, batch B, vocabulary V, teachers K). Each case runs
in a fresh process forked from a server that has only imported the libraries: its peak RSS
above its RSS before the first step is the memory figure, and the median process CPU time
(user + system) of `--repeats` steps after one warm-up step is the time. For each axis the
log-log slope (least squares over the sweep) is the growth exponent; an exponent above
`SUPERLINEAR` (time) is flagged as super-linear growth.

    OMP_NUM_THREADS=1 python benchmarks/scaling.py            # T, B, V, K sweeps around B=4, T=256, V=16k, K=1
    OMP_NUM_THREADS=1 python benchmarks/scaling.py --quick    # small sizes, seconds (tests/test_bench_scaling.py)
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import torch
from _common import collect, peak_rss_above, reset_peak_rss

import unified_opd as uo

FULL = dict(
    base=dict(T=256, B=4, V=16384, K=1),
    sweeps=dict(T=(64, 128, 256, 512, 1024), B=(1, 2, 4, 8, 16), V=(4096, 8192, 16384, 32768, 65536), K=(1, 2, 4)),
)
QUICK = dict(base=dict(T=16, B=2, V=256, K=1), sweeps=dict(T=(8, 16, 32), B=(1, 2, 4), V=(128, 256, 512), K=(1, 2)))
AXES = {"T": "sequence length T", "B": "batch B", "V": "vocabulary V", "K": "teachers K"}
# a growth exponent above this (log-log slope of time) is flagged as super-linear
SUPERLINEAR = 1.15


def build_models(v: int, k: int, hidden: int, layers: int, max_len: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    def llama(seed: int, h: int) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=v,
            hidden_size=h,
            intermediate_size=3 * h,
            num_hidden_layers=layers,
            num_attention_heads=max(1, h // 64),
            num_key_value_heads=max(1, h // 64),
            max_position_embeddings=max_len,
        )
        return LlamaForCausalLM(cfg).eval()

    student = llama(0, hidden)
    teachers = [llama(1 + i, 2 * hidden).requires_grad_(False) for i in range(k)]
    return student, teachers


def lazy(model, ids: torch.Tensor) -> uo.Categorical:
    """The model's next-token distribution at every position, lazy: last hidden states + lm_head."""
    hidden = model.model(input_ids=ids).last_hidden_state
    return uo.Categorical.from_hidden(hidden, model.lm_head.weight)


def opd_step(student, teachers, optimizer, ids: torch.Tensor) -> float:
    """Teachers score, student forward, full-vocabulary reverse KL to their pool, backward, AdamW."""
    with torch.no_grad():
        scored = [lazy(t, ids) for t in teachers]
    target = scored[0] if len(scored) == 1 else uo.pool(scored, [1.0 / len(scored)] * len(scored))
    loss = uo.divergence("reverse_kl")(lazy(student, ids), target).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def run_case(point: dict, hidden: int, layers: int, repeats: int) -> dict:
    """In a fresh process: peak RSS above the start over the first (warm-up) step and the rest;
    median process CPU time of the steps after the warm-up."""
    t, b, v, k = point["T"], point["B"], point["V"], point["K"]
    base = reset_peak_rss()
    student, teachers = build_models(v, k, hidden, layers, max_len=t)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    ids = torch.randint(0, v, (b, t), generator=torch.Generator().manual_seed(0))
    times = []
    for i in range(repeats + 1):
        t0 = time.process_time()
        opd_step(student, teachers, optimizer, ids)
        if i:
            times.append(time.process_time() - t0)
    peak = peak_rss_above(base)
    return {"seconds": statistics.median(times), "peak_mb": peak / 2**20, "times": times}


def slope(xs, ys) -> float:
    """Least-squares slope of log(y) on log(x): the growth exponent (1 = linear)."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (c - my) for a, c in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def measure(args, sizes: dict):
    """Yield one row per case; the base point is measured once and shared by every sweep."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "unified_opd", "transformers.models.llama.modeling_llama"])
    done = {}
    for axis in args.axes:
        for value in sizes["sweeps"][axis]:
            point = dict(sizes["base"], **{axis: value})
            key = tuple(sorted(point.items()))
            if key not in done:
                with ctx.Pool(1) as pool:
                    done[key] = pool.apply(run_case, (point, args.hidden, args.layers, args.repeats))
                r = done[key]
                print(f"{point}: {r['seconds']:.3f}s {r['peak_mb']:.0f} MiB", flush=True)
            yield {"axis": axis, "value": value, **point, **done[key]}


def growth(rows: list, axis: str, key: str) -> float:
    pts = [(r["value"], r[key]) for r in rows if r["axis"] == axis]
    return slope(*zip(*pts)) if len(pts) > 1 else float("nan")


def table(rows: list, axes) -> str:
    lines = ["| axis | value | T | B | V | K | step CPU s | peak MiB |", "|" + "---|" * 8]
    for r in rows:
        cells = [r["axis"], r["value"], r["T"], r["B"], r["V"], r["K"], f"{r['seconds']:.3f}", f"{r['peak_mb']:.0f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "| axis | time exponent | memory exponent | flag |", "|---|---|---|---|"]
    for axis in axes:
        et, em = growth(rows, axis, "seconds"), growth(rows, axis, "peak_mb")
        flag = "**super-linear**" if et > SUPERLINEAR else ""
        lines.append(f"| {AXES[axis]} | {et:.2f} | {em:.2f} | {flag} |")
    return "\n".join(lines)


def plot(rows: list, axes, base: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, panels = plt.subplots(1, 2, figsize=(10, 4))
    panels_keys = ((panels[0], "seconds", "step time (CPU s, median)"), (panels[1], "peak_mb", "peak RSS above start (MiB)"))
    for ax, key, label in panels_keys:
        for i, axis in enumerate(axes):
            pts = [(r["value"] / base[axis], r[key]) for r in rows if r["axis"] == axis]
            if pts:
                ax.plot(*zip(*pts), marker="os^D"[i % 4], label=f"{AXES[axis]} (×{growth(rows, axis, key):.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("size / base size")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, title="exponent", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(rows: list, args, sizes: dict, command: str, load_before: tuple, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = ", ".join(f"{k}={v}" for k, v in sizes["base"].items())
    md = "\n".join(
        [
            "# Scaling of an OPD update step",
            "",
            f"`{command}`: student Llama hidden {args.hidden}, teachers hidden {2 * args.hidden}, {args.layers} layers each, "
            f"float32, CPU ({torch.get_num_threads()} threads). A step: teachers score (no gradient), student forward, "
            f"full-vocabulary reverse KL to the teachers' log-linear pool via `Categorical.from_hidden`, backward, AdamW "
            f"(rollout excluded). One axis at a time around {base}. Time: median process CPU time of {args.repeats} step(s) "
            f"after a warm-up; memory: peak RSS of a fresh process above its RSS before building the models. "
            f"Exponents are least-squares log-log slopes over each sweep; time exponents above {SUPERLINEAR} are flagged.",
            f"Load average (1/5/15 min) at the start: {' '.join(f'{x:.2f}' for x in load_before)}, "
            f"at the last row: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
            "",
            table(rows, [a for a in args.axes if any(r["axis"] == a for r in rows)]),
            "",
        ]
    )
    (out / "scaling.md").write_text(md)
    try:
        plot(rows, [a for a in args.axes if any(r["axis"] == a for r in rows)], sizes["base"], out / "scaling.png")
    except ImportError:
        print("matplotlib is not installed: no scaling.png (pip install -e '.[bench]')")


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--axes", nargs="+", default=list(AXES), choices=list(AXES))
    p.add_argument("--hidden", type=int, default=128, help="student hidden size (teachers: twice)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--out", default="docs/benchmarks", help="where scaling.md and scaling.png go")
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.layers = min(args.hidden, 32), 1
    sizes = QUICK if args.quick else FULL
    rows = collect(
        "scaling.py", argv, measure(args, sizes), lambda done, command, load: write_report(done, args, sizes, command, load, Path(args.out))
    )
    print((Path(args.out) / "scaling.md").read_text())
    return rows


if __name__ == "__main__":
    main()
