"""Multi-turn OPD on KeyDoor (depth 6), Shop and ScienceWorld: vanilla OPD vs TCOD vs SOD vs TCOD+SOD.

Every method gets the same rollout budget (`rollout.batch_size` episodes x `trainer.max_steps`
steps, same seeds); only `objective.weights` differs. Figures are greedy, on held-out env seeds:
success rate, and for ScienceWorld the mean score / 100 (`mean_return`) on its test variations.
Writes a markdown table to docs/benchmarks/agent.md.

    python benchmarks/agent_tcod_sod.py                    # 3 seeds, both envs
    python benchmarks/agent_tcod_sod.py --envs keydoor --seeds 0 --steps 10   # a quick look

Every finished run keeps its `summary.json` under `--runs` and is not trained again, so two
processes can split the work (`--methods OPD TCOD` and `--methods SOD TCOD+SOD`, same `--runs`)
and a last call with all methods writes the table from their runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from unified_opd.config import load_config, read_yaml
from unified_opd.domain import schema_for
from unified_opd.evaluate import run_eval
from unified_opd.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "keydoor": "configs/agent/opd_keydoor.yaml",
    "shop": "configs/agent/opd_shop.yaml",
    "scienceworld": "configs/agent/opd_scienceworld.yaml",
}
METRICS = {"scienceworld": "mean_return"}  # ScienceWorld's score is partial credit; the others succeed or not


def metric(env: str) -> str:
    return METRICS.get(env, "success_rate")


def config(env: str):
    """The recipe as written, with its `defaults:` merged under it (no schema)."""
    return read_yaml(str(ROOT / CONFIGS[env]))


def max_turns(env: str) -> int:
    """The config's `rollout.max_turns`: TCOD grows k up to it."""
    turns = config(env).rollout.max_turns
    if not turns:
        raise SystemExit(f"{CONFIGS[env]}: rollout.max_turns must be set for the TCOD schedule")
    return int(turns)


METHODS = ("OPD", "TCOD", "SOD", "TCOD+SOD")


def methods(env: str) -> dict:
    tcod = f"{{name: tcod, k0: 2, k_max: {max_turns(env)}, ramp: 0.5}}"
    sod = "{name: sod, tau: 0.2}"
    return dict(zip(METHODS, ("[]", f"[{tcod}]", f"[{sod}]", f"[{tcod}, {sod}]")))


def train_once(env: str, weights: str, seed: int, steps: int, episodes: int, out: Path) -> dict:
    overrides = [
        f"objective.weights={weights}",
        f"trainer.seed={seed}",
        f"trainer.max_steps={steps}",
        f"trainer.output_dir={out}",
        "trainer.resume=auto",
        "trainer.save_every=0",
        f"eval.episodes={episodes}",
        "eval.teacher=false",
        "eval.kl=false",
    ]
    summary_file = out / "summary.json"
    if summary_file.is_file():  # finished earlier: the benchmark resumes where it stopped
        return json.loads(summary_file.read_text())
    return Trainer(load_config(str(ROOT / CONFIGS[env]), overrides, schema_for)).train()


def baseline(env: str, episodes: int, cache: Path) -> dict:
    """The initial student's and the teacher's held-out figures (cached: the script resumes)."""
    if cache.is_file():
        return json.loads(cache.read_text())
    figures = run_eval(str(ROOT / CONFIGS[env]), [f"eval.episodes={episodes}", "eval.kl=false"])
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(figures))
    return figures


def mean_std(xs: list) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["keydoor", "shop"], choices=sorted(CONFIGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="train only these (the table needs all)")
    p.add_argument("--steps", type=int, default=0, help="training steps per run (0: each config's trainer.max_steps)")
    p.add_argument("--episodes", type=int, default=0, help="held-out episodes per evaluation (0: each config's eval.episodes)")
    p.add_argument("--runs", default="runs/bench_agent")
    p.add_argument("--out", default="docs/benchmarks/agent.md")
    args = p.parse_args()
    t0 = time.time()
    partial = set(args.methods) != set(METHODS)
    rows, steps, training_seconds = [], {}, 0.0
    for env in args.envs:
        episodes = args.episodes or int(config(env).eval.episodes)
        base = baseline(env, episodes, Path(args.runs) / env / "baseline.json")
        results = {}
        steps[env] = args.steps or int(config(env).trainer.max_steps)
        for name, weights in methods(env).items():
            if name not in args.methods:
                continue
            runs = [train_once(env, weights, seed, steps[env], episodes, Path(args.runs) / env / f"{name}_s{seed}") for seed in args.seeds]
            results[name] = [r["after"][metric(env)] for r in runs]
            training_seconds += sum(r["train_seconds"] for r in runs)
            print(f"{env} {name}: {results[name]}", file=sys.stderr)
        if partial:
            continue
        before, teacher = base[metric(env)], base[f"teacher_{metric(env)}"]
        opd = statistics.mean(results["OPD"])
        gap = (opd - before) / (teacher - before) if teacher > before else float("nan")
        rows.append((env, before, results, teacher, gap))
    if partial:
        return 0
    minutes = (time.time() - t0) / 60
    budget = ", ".join(f"{env} {steps[env]} steps x {config(env).rollout.batch_size} episodes" for env in args.envs)
    lines = [
        "# Agent domain: multi-turn OPD, TCOD and SOD",
        "",
        "Greedy success rate (ScienceWorld: mean score / 100) on each config's held-out episodes "
        f"(`--episodes {args.episodes}`: 0 = the config's eval.episodes), mean ± std over training seeds "
        f"{args.seeds}; every method used the same rollout budget ({budget}, "
        "sampled at temperature 1) and the JSD divergence (β = 0.5). TCOD: `k0=2`, k grows to the turn "
        "limit over the first half of training; SOD: `tau=0.2`. Gap closed = (OPD − student) / (teacher − student).",
        "",
        "| env | student before | OPD | TCOD | SOD | TCOD+SOD | teacher | gap closed by OPD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env, before, res, teacher, gap in rows:
        cells = " | ".join(mean_std(res[m]) for m in ("OPD", "TCOD", "SOD", "TCOD+SOD"))
        lines.append(f"| {env} | {before:.2f} | {cells} | {teacher:.2f} | {100 * gap:.0f}% |")
    lines += ["", f"Per training seed ({', '.join(map(str, args.seeds))}):", ""]
    for env, _, res, _, _ in rows:
        lines += [f"- {env}: " + "; ".join(f"{m} " + " / ".join(f"{x:.2f}" for x in res[m]) for m in METHODS)]
    lines += [
        "",
        f"Made with `python benchmarks/agent_tcod_sod.py --envs {' '.join(args.envs)} --steps {args.steps} --episodes {args.episodes} "
        f"--seeds {' '.join(map(str, args.seeds))}` on a shared 2-core CPU; the runs' training steps took "
        f"{training_seconds / 60:.0f} minutes in all (the `train_seconds` of each run's summary.json; runs reused "
        f"from `--runs` count), this call {minutes:.0f} minutes, "
        f"with the zoo models of `uopd zoo build {'`, `uopd zoo build '.join(args.envs)}`.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
