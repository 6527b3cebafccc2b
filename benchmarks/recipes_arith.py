"""Every OPD recipe config on `arith`: same student, teacher, rollout budget and seeds.

Each run trains one `configs/text/<recipe>.yaml` in a subprocess (so wall-clock and peak memory
are its own), then evaluates the final student against the arith teacher on the same held-out
prompts (greedy accuracy, reverse KL on the student's outputs). Writes a markdown table and a PNG
of held-out accuracy vs step per recipe. Runs go one at a time, each child on one thread, so
wall-clock and CPU-time ratios are comparable between recipes.

    UOPD_HOME=runs/bench_home python benchmarks/recipes_arith.py --steps 30 --seeds 0 1 2
    UOPD_HOME=runs/bench_home python benchmarks/mini_zoo.py        # optional reduced zoo (CPU budget)

Without the mini zoo, `zoo:arith` and `zoo:arith_experts` are built at full size on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RECIPES = [
    ("OPD (vanilla)", "opd_arith"),
    ("ExOPD λ=1.5", "exopd_arith"),
    ("G-OPD reward correction", "exopd_reward_correction_arith"),
    ("vOPD", "vopd_arith"),
    ("vOPD top-4", "vopd_topk_arith"),
    ("EffOPD", "effopd_arith"),
    ("AlignDistil (TV-adaptive k)", "aligndistil_arith"),
    ("TIP 50%", "tip_arith"),
    ("PW-OPSD", "pw_opsd_arith"),
    ("SCOPE", "scope_arith"),
    ("SRPO", "srpo_arith"),
    ("dGRPO", "dgrpo_arith"),
    ("OPSD", "opsd_arith"),
    ("OPSD (EMA)", "opsd_ema_arith"),
    ("Lightning OPD (cache)", "lightning_arith"),
    ("Multi-teacher router", "multi_router_arith"),
    ("Multi-teacher pool (fixed)", "multi_pool_arith"),
    ("Multi-teacher pool (confidence)", "multi_confidence_arith"),
    ("Best-of-N teacher (BRTS)", "best_of_arith"),
]


def budget(args) -> list:
    """Overrides shared by every run: the same rollout budget, evaluation and schedule."""
    return [
        f"trainer.max_steps={args.steps}",
        f"rollout.batch_size={args.batch}",
        f"rollout.num_samples={args.samples}",
        "trainer.max_time_minutes=0",
        "trainer.save_every=0",
        f"trainer.eval_every={args.eval_every}",
        f"eval.size={args.eval_size}",
        "eval.batch_size=250",
        "eval.kl=false",
        "eval.teacher=false",
        "trainer.warmup_steps=5",
        "trainer.lr_schedule=constant",
    ]


def run_one(config: str, out: str, seed: int, overrides: list, eval_size: int) -> None:
    """Child process: train, then score the final student against the arith teacher."""
    import torch

    torch.set_num_threads(1)
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for
    from unified_opd.evaluate import run_eval
    from unified_opd.trainer import Trainer

    cfg = load_config(config, [*overrides, f"trainer.seed={seed}", f"trainer.output_dir={out}"], schema_for)
    cpu0 = time.process_time()
    summary = Trainer(cfg).train()
    train_cpu = time.process_time() - cpu0
    final = run_eval(
        "configs/text/opd_arith.yaml", [f"student.path={out}/final", f"eval.size={eval_size}", "eval.teacher=false"]
    )
    lines = [json.loads(x) for x in open(Path(out) / "metrics.jsonl")]
    step_times = [x["time/step"] for x in lines if "time/step" in x]
    curve = [(x["step"], x["eval/accuracy"]) for x in lines if "eval/accuracy" in x]
    result = {"accuracy": final["accuracy"], "reverse_kl": final["reverse_kl"], "train_seconds": summary["train_seconds"],
              "train_cpu_seconds": train_cpu,
              "step_seconds": statistics.median(step_times), "curve": curve,
              **{k: v for k, v in final.items() if k.startswith("accuracy/")}}
    (Path(out) / "bench.json").write_text(json.dumps(result))


def one_thread_env() -> dict:
    """Children run on one BLAS/OpenMP thread: runs go one at a time, and their times stay comparable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def launch(config: str, out: Path, seed: int, overrides: list, eval_size: int) -> dict:
    """Run `run_one` in a child; returns its result plus its own peak RSS (wait4) and wall-clock."""
    cmd = [sys.executable, __file__, "--one", config, str(out), str(seed), str(eval_size), "--", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(out.parent / f"{out.name}.log", "w"), env=one_thread_env())
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{config} seed {seed} failed; see {out.parent / (out.name + '.log')}")
    result = json.loads((out / "bench.json").read_text())
    result.update(wall_seconds=time.perf_counter() - t0, peak_rss_mb=usage.ru_maxrss / 1024)
    return result


def run_cached(out: Path, name: str, seed: int, overrides: list, args) -> None:
    """One (recipe, seed) run unless its result is already on disk (a re-run resumes)."""
    run_dir = out / f"{name}_s{seed}"
    if (run_dir / "wall.json").is_file():
        return
    if run_dir.exists():
        shutil.rmtree(run_dir)
    r = launch(f"configs/text/{name}.yaml", run_dir, seed, overrides, args.eval_size)
    (run_dir / "wall.json").write_text(json.dumps(r))
    print(f"{name} seed {seed}: accuracy {r['accuracy']:.3f} kl {r['reverse_kl']:.3f} step {r['step_seconds']:.2f}s", flush=True)


def expert_accuracy(eval_size: int) -> dict:
    """Greedy held-out accuracy of each single expert (and the teacher) on the same prompts."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from unified_opd.data import read_jsonl
    from unified_opd.domains.text.zoo import arith
    from unified_opd.zoo import resolve

    held = read_jsonl(resolve("zoo:arith/eval.jsonl", "data.eval_path"))[:eval_size]
    out = {}
    for name in ("zoo:arith/teacher", "zoo:arith_experts/addsub", "zoo:arith_experts/mul"):
        path = resolve(name, "teacher.path")
        tok = PreTrainedTokenizerFast.from_pretrained(path)
        out[name] = arith.greedy_accuracy(AutoModelForCausalLM.from_pretrained(path), tok, held)
    return out


def mean_std(xs: list) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.pstdev(xs):.3f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8, help="prompts per step")
    p.add_argument("--samples", type=int, default=4, help="rollouts per prompt (group size of GRPO/SCOPE/SRPO)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eval-size", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--recipes", nargs="*", help="config names to run (default: all)")
    p.add_argument("--out", default="runs/bench_recipes")
    p.add_argument("--table-only", action="store_true", help="only rebuild the table and plot from finished runs")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = budget(args)
    recipes = [r for r in RECIPES if not args.recipes or r[1] in args.recipes]
    cache_dir = out / "lightning_cache"
    # Lightning: cache as many prompts as the online runs consume, so the rollout budget matches
    cache_over = [f"teacher.cache.dir={cache_dir}", f"teacher.cache.prompts={args.steps * args.batch}",
                  f"rollout.batch_size={args.batch}", f"rollout.num_samples={args.samples}"]
    t0 = time.perf_counter()
    if not args.table_only and any(name == "lightning_arith" for _, name in recipes):
        subprocess.run([sys.executable, "-m", "unified_opd.cli", "cache-teacher", "configs/text/lightning_arith.yaml", *cache_over],
                       check=True, env=one_thread_env())
        (out / "cache_seconds.json").write_text(json.dumps(time.perf_counter() - t0))
    cache_file = out / "cache_seconds.json"
    cache_seconds = json.loads(cache_file.read_text()) if cache_file.is_file() else float("nan")
    jobs = [(name, seed) for _, name in recipes for seed in args.seeds]
    if not args.table_only:
        for name, seed in jobs:
            run_cached(out, name, seed, [*common, *(cache_over if name == "lightning_arith" else [])], args)
    results = {}
    for label, name in recipes:
        runs = [json.loads((out / f"{name}_s{seed}" / "wall.json").read_text()) for seed in args.seeds
                if (out / f"{name}_s{seed}" / "wall.json").is_file()]
        if runs:
            results[name] = (label, runs)
    experts = expert_accuracy(args.eval_size)
    (out / "results.json").write_text(json.dumps({"results": results, "experts": experts, "cache_seconds": cache_seconds}, indent=1))
    write_table(out, results, experts, cache_seconds, args)
    write_plot(out, results)


def write_table(out: Path, results: dict, experts: dict, cache_seconds: float, args) -> None:
    base = results.get("opd_arith", (None, None))[1]
    step0 = statistics.mean(r["step_seconds"] for r in base) if base else None
    wall0 = statistics.mean(r["train_seconds"] for r in base) if base else None
    cpu0 = statistics.mean(r["train_cpu_seconds"] for r in base) if base else None
    mem0 = statistics.mean(r["peak_rss_mb"] for r in base) if base else None
    rows = [
        f"Budget: {args.steps} steps x {args.batch} prompts x {args.samples} samples per run, seeds {args.seeds}, "
        f"held-out = first {args.eval_size} arith eval prompts (greedy).",
        "",
        "| recipe | config | held-out accuracy | reverse KL | train wall-clock / OPD | train CPU time / OPD | step time / OPD | peak RSS / OPD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (label, runs) in results.items():
        acc = mean_std([r["accuracy"] for r in runs])
        kl = mean_std([r["reverse_kl"] for r in runs])
        wall = statistics.mean(r["train_seconds"] for r in runs) / wall0 if wall0 else float("nan")
        cpu = statistics.mean(r["train_cpu_seconds"] for r in runs) / cpu0 if cpu0 else float("nan")
        step = statistics.mean(r["step_seconds"] for r in runs) / step0 if step0 else float("nan")
        mem = statistics.mean(r["peak_rss_mb"] for r in runs) / mem0 if mem0 else float("nan")
        rows.append(f"| {label} | `{name}.yaml` | {acc} | {kl} | {wall:.2f} | {cpu:.2f} | {step:.2f} | {mem:.2f} |")
    rows += ["", "Single models, greedy, same held-out prompts: " + ", ".join(f"`{k}` {v:.3f}" for k, v in experts.items()),
             f"Lightning cache written once in {cache_seconds:.1f} s (not included in its training wall-clock)."]
    (out / "table.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


def write_plot(out: Path, results: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install unified_opd[bench]); no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(9, 6))
    for i, (name, (label, runs)) in enumerate(results.items()):
        steps = [s for s, _ in runs[0]["curve"]]
        accs = [statistics.mean(r["curve"][j][1] for r in runs if j < len(r["curve"])) for j in range(len(steps))]
        # the colour cycle has 10 entries: a second line style keeps 19 recipes apart
        ax.plot(steps, accs, marker="o", linestyle="-" if i < 10 else "--", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("held-out accuracy (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_step.png", dpi=110)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        config, out, seed, eval_size = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        run_one(config, out, seed, sys.argv[7:], eval_size)
    else:
        main()
