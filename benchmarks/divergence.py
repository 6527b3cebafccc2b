"""Full-vocabulary divergence, forward + backward: our lazy path vs dense logits vs TRL.

For N positions, hidden size H and vocabulary V, each method computes the per-position
divergence between a student (hidden states + lm_head weight, both trained) and a teacher
(frozen), then backpropagates its sum:

* dense -- the textbook version: both `[N, V]` logit tensors materialised, `log_softmax`, the formula;
* ours  -- `uo.divergence(name)(Categorical.from_hidden(...), Categorical.from_hidden(...))`;
* trl   -- TRL's own `ChunkedDivergenceFunction` (what `DistillationTrainer` calls through
  `_chunked_divergence_loss`), with its beta: 1 = reverse KL, 0 = forward KL, 0.5 = JSD.

Every case runs in a fresh process forked from a server that has only imported the libraries:
its peak RSS above the RSS it started the case with is the memory figure, and the CPU times of
its calls (first call included: on CPU nothing is compiled or cached) give the median. Times and memory
are reported as ratios to dense in the same run. Values and gradients are checked against dense
at the same V and H (N reduced to `check_n`; the tiling over the vocabulary is the same).

    OMP_NUM_THREADS=1 python benchmarks/divergence.py            # N=2048, H=1024, V in 32k / 64k / 152k
    OMP_NUM_THREADS=1 python benchmarks/divergence.py --quick    # small sizes, seconds (tests/test_bench_divergence.py)
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import torch
from _common import collect, peak_rss_above, reset_peak_rss

import unified_opd as uo
from unified_opd.divergences import forward_kl_terms, generalized_jsd_terms, reverse_kl_terms

DIVERGENCES = {  # our name -> (dense formula, our options, TRL's beta)
    "reverse_kl": (reverse_kl_terms, {}, 1.0),
    "forward_kl": (forward_kl_terms, {}, 0.0),
    "jsd": (lambda ls, lt: generalized_jsd_terms(ls, lt, 0.5), {"beta": 0.5}, 0.5),
}
METHODS = ("dense", "ours", "trl")
# check_n: 320 rows are one of our row tiles and 8 to 38 vocabulary tiles (the unit tests cover ragged row tiles)
FULL = dict(n=2048, h=1024, vocabs=(32768, 65536, 152064), check_n=320)
QUICK = dict(n=256, h=64, vocabs=(1024, 4096), check_n=64)
GOALS = "peak memory ≤ 0.25x dense and ≤ 1.0x TRL; time ≤ 1.0x TRL"


def make_inputs(n: int, h: int, v: int, seed: int = 0):
    """Student (trainable) and teacher (frozen) hidden states and heads; logits have std ≈ 2.

    Scaling in place keeps the setup free of V x H temporaries, so the RSS at the start of a
    case is also the highest it has been."""
    g = torch.Generator().manual_seed(seed)
    scale = 2.0 / h**0.5
    hs, ht = torch.randn(n, h, generator=g), torch.randn(n, h, generator=g)
    ws, wt = torch.randn(v, h, generator=g).mul_(scale), torch.randn(v, h, generator=g).mul_(scale)
    return hs.requires_grad_(), ws.requires_grad_(), ht, wt


def per_position(method: str, div: str, hs, ws, ht, wt) -> torch.Tensor:
    terms, options, beta = DIVERGENCES[div]
    if method == "dense":
        return terms(torch.log_softmax(hs @ ws.t(), -1), torch.log_softmax(ht @ wt.t(), -1))
    if method == "ours":
        return uo.divergence(div, **options)(uo.Categorical.from_hidden(hs, ws), uo.Categorical.from_hidden(ht, wt))
    from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

    return ChunkedDivergenceFunction.apply(hs, ws, None, ht, wt, None, beta)[0]


def forward_backward(method: str, div: str, inputs):
    hs, ws = inputs[0], inputs[1]
    hs.grad = ws.grad = None
    values = per_position(method, div, *inputs)
    values.sum().backward()
    return values.detach(), hs.grad, ws.grad


def run_case(method: str, div: str, n: int, h: int, v: int, repeats: int) -> dict:
    """In a fresh process: peak RSS of the first forward+backward, CPU time of every call.

    Process CPU time (user + system, all threads), not wall time: on a machine shared with
    other jobs a process can wait for a core for a long time mid-call."""
    inputs = make_inputs(n, h, v)
    base = reset_peak_rss()
    times = []
    for i in range(repeats):
        t0 = time.process_time()
        forward_backward(method, div, inputs)
        times.append(time.process_time() - t0)
        if i == 0:
            peak = peak_rss_above(base)
    return {"peak_mb": peak / 2**20, "seconds": statistics.median(times), "times": times}


def max_errors(n: int, h: int, v: int, div: str, methods) -> dict:
    """Largest |difference| from dense of the values and of both gradients, per method."""
    inputs = make_inputs(n, h, v, seed=1)
    ref = forward_backward("dense", div, inputs)
    errors = {}
    for m in methods:
        if m != "dense":
            out = forward_backward(m, div, inputs)
            errors[m] = max(float((a - b).abs().max()) for a, b in zip(out, ref))
    return errors


def measure(args, sizes: dict):
    """Yield one row per (V, divergence), so a long run reports what it has so far."""
    ctx = multiprocessing.get_context("forkserver")
    # the server imports once; each case is a fresh fork of it that has run no torch op yet
    ctx.set_forkserver_preload(["torch", "unified_opd"] + (["trl.kernels.chunked_divergence"] if "trl" in args.methods else []))
    for v in args.vocabs or sizes["vocabs"]:
        for div in args.divergences:
            row = {"V": v, "divergence": div}
            for m in args.methods:
                with ctx.Pool(1) as pool:
                    row[m] = pool.apply(run_case, (m, div, sizes["n"], sizes["h"], v, args.repeats))
                print(f"V={v} {div} {m}: {row[m]['seconds']:.2f}s {row[m]['peak_mb']:.0f} MiB", flush=True)
            row["errors"] = max_errors(sizes["check_n"], sizes["h"], v, div, args.methods)
            yield row


def ratio(row: dict, method: str, key: str, against: str = "dense") -> str:
    if method not in row or against not in row:
        return "n/a"
    return f"{row[method][key] / row[against][key]:.2f}"


def table(rows: list, methods) -> str:
    head = ["V", "divergence", "dense CPU s", "dense MiB"]
    for m in [m for m in methods if m != "dense"]:
        head += [f"{m} time ×dense", f"{m} mem ×dense"]
    if {"ours", "trl"} <= set(methods):
        head += ["ours/trl time", "ours/trl mem"]
    head += [f"max err {m}" for m in methods if m != "dense"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["V"]), r["divergence"], f"{r['dense']['seconds']:.2f}", f"{r['dense']['peak_mb']:.0f}"]
        for m in [m for m in methods if m != "dense"]:
            cells += [ratio(r, m, "seconds"), ratio(r, m, "peak_mb")]
        if {"ours", "trl"} <= set(methods):
            cells += [ratio(r, "ours", "seconds", "trl"), ratio(r, "ours", "peak_mb", "trl")]
        cells += [f"{r['errors'][m]:.1e}" for m in methods if m != "dense"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list, methods, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "peak_mb", "peak RSS above start (MiB)"), (axes[1], "seconds", "forward+backward (CPU s, median)")):
        for m in methods:
            for div, marker in zip(DIVERGENCES, "os^"):
                pts = [(r["V"], r[m][key]) for r in rows if r["divergence"] == div]
                ax.plot(*zip(*pts), marker=marker, label=f"{m} {div}", color={"dense": "C0", "ours": "C2", "trl": "C1"}[m])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vocabulary size V")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(rows: list, args, sizes: dict, command: str, load_before: tuple, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    trl = f"`trl` {__import__('trl').__version__} `ChunkedDivergenceFunction`." if "trl" in args.methods else "not run."
    md = "\n".join(
        [
            "# Full-vocabulary divergence: forward + backward",
            "",
            f"`{command}`: N={sizes['n']} positions, H={sizes['h']}, float32, CPU ({torch.get_num_threads()} threads), "
            f"CPU time (all threads) of forward+backward, median of {args.repeats} call(s); memory = peak RSS of a fresh process above its RSS before the call. "
            f"Ratios are against dense logits measured in the same run; errors are the largest |difference| "
            f"from dense of values and gradients (N={sizes['check_n']}). TRL: {trl}",
            f"Load average (1/5/15 min) at the start: {' '.join(f'{x:.2f}' for x in load_before)}, "
            f"at the last row: {' '.join(f'{x:.2f}' for x in os.getloadavg())}. Goals: {GOALS}.",
            "",
            table(rows, args.methods),
            "",
        ]
    )
    (out / "divergence.md").write_text(md)
    try:
        plot(rows, args.methods, out / "divergence.png")
    except ImportError:
        print("matplotlib is not installed: no divergence.png (pip install -e '.[bench]')")


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small N, H, V: a smoke run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--divergences", nargs="+", default=list(DIVERGENCES), choices=list(DIVERGENCES))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="dense is always run")
    p.add_argument("--vocabs", nargs="+", type=int, help="override the vocabulary sizes")
    p.add_argument("--out", default="docs/benchmarks", help="where divergence.md and divergence.png go")
    args = p.parse_args(argv)
    has_trl = importlib.util.find_spec("trl") is not None
    if "trl" in args.methods and not has_trl:
        print("trl is not installed: its columns are left out (pip install -e '.[bench]')")
    args.methods = [m for m in METHODS if (m in args.methods or m == "dense") and (m != "trl" or has_trl)]
    sizes = QUICK if args.quick else FULL
    rows = collect(
        "divergence.py", argv, measure(args, sizes), lambda done, command, load: write_report(done, args, sizes, command, load, Path(args.out))
    )
    print((Path(args.out) / "divergence.md").read_text())
    return rows


if __name__ == "__main__":
    main()
