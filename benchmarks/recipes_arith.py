"""Every OPD recipe config on `arith`, and the settings built for single papers' claims.

Each run trains one `configs/text/<recipe>.yaml` (plus the row's overrides) in a subprocess (so
wall-clock and peak memory are its own), then evaluates the final student against the arith
teacher on the same held-out prompts (greedy accuracy, per operator, reverse KL on the student's
outputs). Writes a markdown table and a PNG of held-out accuracy vs step per row. Runs go one at
a time, each child on one thread, so wall-clock and CPU-time ratios are comparable between rows.
Every setting has the plain-OPD and SeqKD rows at its own budget, SeqKD with as many teacher
samples as OPD scores rollouts (equal teacher compute).

    --setting all     every recipe config, from `zoo:arith/student`
    --setting merge   G-OPD's merging setting: the student distilled from skill experts fine-tuned
                      from it (`zoo:arith_skill_experts`), λ = 1 against λ > 1
    --setting hint    OPSD on a student that reads the answer hint (`zoo:arith_hint`), evaluated
                      without hints, next to OPD and SeqKD from the arith teacher

    UOPD_HOME=runs/bench_home python benchmarks/recipes_arith.py --steps 30 --seeds 0 1 2
    UOPD_HOME=runs/bench_home python benchmarks/recipes_arith.py --setting merge --batch 64 --samples 1
    UOPD_HOME=runs/bench_home python benchmarks/mini_zoo.py        # optional reduced zoo (CPU budget)

Without the mini zoo, the zoo entries are built at full size on first use.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

@dataclass(frozen=True)
class Row:
    """One table row: `label`, `config` under configs/text/, extra `overrides`; `key` names its runs."""

    label: str
    config: str
    overrides: Tuple[str, ...] = ()
    key: str = ""

    @property
    def name(self) -> str:
        return self.key or self.config


OPD = Row("OPD (vanilla)", "opd_arith")
SEQKD = Row("SeqKD (teacher samples)", "seqkd_arith")
RECIPES = [
    OPD,
    SEQKD,
    Row("ExOPD λ=1.5", "exopd_arith"),
    Row("G-OPD reward correction", "exopd_reward_correction_arith"),
    Row("vOPD", "vopd_arith"),
    Row("vOPD top-4", "vopd_topk_arith"),
    Row("EffOPD", "effopd_arith"),
    Row("AlignDistil (TV-adaptive k)", "aligndistil_arith"),
    Row("TIP 50%", "tip_arith"),
    Row("PW-OPSD", "pw_opsd_arith"),
    Row("SCOPE", "scope_arith"),
    Row("SRPO", "srpo_arith"),
    Row("dGRPO", "dgrpo_arith"),
    Row("OPSD", "opsd_arith"),
    Row("OPSD (EMA)", "opsd_ema_arith"),
    Row("Lightning OPD (cache)", "lightning_arith"),
    Row("Multi-teacher router", "multi_router_arith"),
    Row("Multi-teacher pool (fixed)", "multi_pool_arith"),
    Row("Multi-teacher pool (confidence)", "multi_confidence_arith"),
    Row("Best-of-N teacher (BRTS)", "best_of_arith"),
]
HINT_STUDENT = ("student.path=zoo:arith_hint/student",)
SETTINGS = {
    "all": RECIPES,
    "merge": [
        Row("Skill-expert router, λ=1 (OPD)", "exopd_merge_arith", ("objective.lam=1",), "exopd_merge_arith_lam1"),
        Row("ExOPD merge λ=1.5", "exopd_merge_arith", ("objective.lam=1.5",), "exopd_merge_arith_lam1.5"),
        Row("ExOPD merge λ=2", "exopd_merge_arith", ("objective.lam=2",), "exopd_merge_arith_lam2"),
        OPD,
        SEQKD,
    ],
    "hint": [
        Row("OPSD (hint-reading student)", "opsd_hint_arith"),
        # the config's lr before it was lowered to 3e-4: the first-50-step fall it shows is why
        Row("OPSD, lr 1e-3", "opsd_hint_arith", ("trainer.lr=1e-3",), "opsd_hint_arith_lr1e-3"),
        Row("OPSD, reverse KL instead (lr 1e-3)", "opsd_hint_arith", ("divergence.name=reverse_kl", "objective.weights=[]", "trainer.lr=1e-3"), "opsd_hint_arith_rkl"),
        Row("OPD (vanilla), hint student", "opd_arith", HINT_STUDENT, "opd_arith_hint"),
        Row("SeqKD, hint student", "seqkd_arith", HINT_STUDENT, "seqkd_arith_hint"),
        # the 5M-teacher baselines at OPSD's lr, so that the lr does not decide the comparison
        Row("OPD (vanilla), hint student, lr 3e-4", "opd_arith", (*HINT_STUDENT, "trainer.lr=3e-4"), "opd_arith_hint_lr3e-4"),
        Row("SeqKD, hint student, lr 3e-4", "seqkd_arith", (*HINT_STUDENT, "trainer.lr=3e-4"), "seqkd_arith_hint_lr3e-4"),
        # PW-OPSD is OPSD plus position weights: on the student that reads the hint, with OPSD's frozen
        # self-teacher and lr, the difference between the two rows is the weight alone
        Row("PW-OPSD, hint student", "pw_opsd_arith", (*HINT_STUDENT, "teacher.ema=1", "trainer.lr=3e-4"), "pw_opsd_arith_hint"),
    ],
}
# the models each setting's table lists on their own, greedy on the same prompts
REFERENCE_MODELS = {
    "all": ("zoo:arith/student", "zoo:arith/teacher", "zoo:arith_experts/addsub", "zoo:arith_experts/mul"),
    "merge": ("zoo:arith/student", "zoo:arith_skill_experts/addsub", "zoo:arith_skill_experts/mul", "zoo:arith/teacher"),
    "hint": ("zoo:arith_hint/student", "zoo:arith/teacher"),
}
CACHED = ("lightning_arith", "seqkd_arith")  # teacher kind `cache`: written once per setting and budget


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


def run_cached(out: Path, row: Row, seed: int, overrides: list, args) -> None:
    """One (row, seed) run unless its result is already on disk (a re-run resumes)."""
    run_dir = out / f"{row.name}_s{seed}"
    if (run_dir / "wall.json").is_file():
        return
    if run_dir.exists():
        shutil.rmtree(run_dir)
    r = launch(f"configs/text/{row.config}.yaml", run_dir, seed, [*overrides, *row.overrides], args.eval_size)
    (run_dir / "wall.json").write_text(json.dumps(r))
    print(f"{row.name} seed {seed}: accuracy {r['accuracy']:.3f} kl {r['reverse_kl']:.3f} step {r['step_seconds']:.2f}s", flush=True)


def reference_accuracy(models: tuple, eval_size: int) -> dict:
    """Greedy held-out accuracy of single models on the same prompts: mixed and per operator."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from unified_opd.data import read_jsonl
    from unified_opd.domains.text.zoo import arith
    from unified_opd.zoo import cached_version, resolve, zoo_home

    held = read_jsonl(resolve("zoo:arith/eval.jsonl", "data.eval_path"))[:eval_size]
    out = {}
    for name in models:
        if name.startswith("zoo:arith_experts/") and cached_version(zoo_home() / "arith_experts") is None:
            continue  # listing a model never starts a build; the multi-teacher rows build this entry
        path = resolve(name, "teacher.path")
        tok = PreTrainedTokenizerFast.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        out[name] = {"mixed": arith.greedy_accuracy(model, tok, held)}
        for op in arith.OPS:
            out[name][op] = arith.greedy_accuracy(model, tok, [r for r in held if r["task"] == op])
    return out


def mean_std(xs: list) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.pstdev(xs):.3f}"


def cache_overrides(out: Path, config: str, args) -> list:
    """A cache-teacher row's cache: as many prompts as the online rows consume, the same samples
    per prompt, so its teacher compute (one sampled sequence per rollout) matches OPD's."""
    return [f"teacher.cache.dir={out / (config + '_cache')}", f"teacher.cache.prompts={args.steps * args.batch}",
            f"rollout.batch_size={args.batch}", f"rollout.num_samples={args.samples}"]


def write_caches(out: Path, rows: list, args) -> dict:
    """`uopd cache-teacher` once per cached config in `rows` (the student override does not change
    teacher samples); returns the seconds each took, kept on disk across re-runs."""
    seconds_file = out / "cache_seconds.json"
    seconds = json.loads(seconds_file.read_text()) if seconds_file.is_file() else {}
    for config in sorted({r.config for r in rows if r.config in CACHED}):
        if args.table_only or config in seconds:
            continue
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "unified_opd.cli", "cache-teacher", f"configs/text/{config}.yaml", *cache_overrides(out, config, args)],
                       check=True, env=one_thread_env())
        seconds[config] = time.perf_counter() - t0
        seconds_file.write_text(json.dumps(seconds))
    return seconds


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--setting", choices=sorted(SETTINGS), default="all")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8, help="prompts per step")
    p.add_argument("--samples", type=int, default=4, help="rollouts per prompt (group size of GRPO/SCOPE/SRPO)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eval-size", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--recipes", nargs="*", help="row names to run (default: all of the setting)")
    p.add_argument("--out", default=None, help="default: runs/bench_recipes[_SETTING]")
    p.add_argument("--table-only", action="store_true", help="only rebuild the table and plot from finished runs")
    args = p.parse_args()
    out = Path(args.out or ("runs/bench_recipes" if args.setting == "all" else f"runs/bench_recipes_{args.setting}"))
    out.mkdir(parents=True, exist_ok=True)
    common = budget(args)
    rows = [r for r in SETTINGS[args.setting] if not args.recipes or r.name in args.recipes]
    cache_seconds = write_caches(out, rows, args)
    if not args.table_only:
        for row in rows:
            for seed in args.seeds:
                extra = cache_overrides(out, row.config, args) if row.config in CACHED else []
                run_cached(out, row, seed, [*common, *extra], args)
    results = {}
    for row in rows:
        runs = [json.loads((out / f"{row.name}_s{seed}" / "wall.json").read_text()) for seed in args.seeds
                if (out / f"{row.name}_s{seed}" / "wall.json").is_file()]
        if runs:
            results[row.name] = (row.label, runs)
    references = reference_accuracy(REFERENCE_MODELS[args.setting], args.eval_size)
    (out / "results.json").write_text(json.dumps({"results": results, "references": references, "cache_seconds": cache_seconds}, indent=1))
    write_table(out, results, references, cache_seconds, args)
    write_plot(out, results)


def write_table(out: Path, results: dict, references: dict, cache_seconds: dict, args) -> None:
    base = next((runs for name, (_, runs) in results.items() if name.startswith("opd_arith")), None)
    step0 = statistics.mean(r["step_seconds"] for r in base) if base else None
    wall0 = statistics.mean(r["train_seconds"] for r in base) if base else None
    cpu0 = statistics.mean(r["train_cpu_seconds"] for r in base) if base else None
    mem0 = statistics.mean(r["peak_rss_mb"] for r in base) if base else None
    ops = [f"accuracy/{op}" for op in ("add", "sub", "mul")]
    rows = [
        f"Setting `{args.setting}`. Budget: {args.steps} steps x {args.batch} prompts x {args.samples} samples per run, "
        f"seeds {args.seeds}, held-out = first {args.eval_size} arith eval prompts (greedy, no hint).",
        "",
        "| recipe | config | held-out accuracy | + | − | × | last 3 evals | reverse KL | train wall-clock / OPD | train CPU time / OPD | step time / OPD | peak RSS / OPD |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (label, runs) in results.items():
        acc = mean_std([r["accuracy"] for r in runs])
        per_op = [f"{statistics.mean(r[k] for r in runs):.3f}" if all(k in r for r in runs) else "–" for k in ops]
        kl = mean_std([r["reverse_kl"] for r in runs])
        wall = statistics.mean(r["train_seconds"] for r in runs) / wall0 if wall0 else float("nan")
        cpu = statistics.mean(r["train_cpu_seconds"] for r in runs) / cpu0 if cpu0 else float("nan")
        step = statistics.mean(r["step_seconds"] for r in runs) / step0 if step0 else float("nan")
        mem = statistics.mean(r["peak_rss_mb"] for r in runs) / mem0 if mem0 else float("nan")
        # the mean of the last three in-training evaluations: one final greedy evaluation of a
        # student still moving by several points between evaluations is a noisy reading
        late = mean_std([statistics.mean(a for _, a in r["curve"][-3:]) for r in runs])
        rows.append(f"| {label} | `{name}` | {acc} | {' | '.join(per_op)} | {late} | {kl} | {wall:.2f} | {cpu:.2f} | {step:.2f} | {mem:.2f} |")
    rows += ["", "Single models, greedy, same held-out prompts (mixed / + / − / ×):"]
    rows += [f"- `{k}` {v['mixed']:.3f} / {v['add']:.3f} / {v['sub']:.3f} / {v['mul']:.3f}" for k, v in references.items()]
    rows += [f"- teacher cache of `{k}` written once in {v:.1f} s (not in its training wall-clock)" for k, v in cache_seconds.items()]
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
