"""Asynchronous vs synchronous rollouts, steps/s: arith OPD (`configs/text/opd_arith.yaml`) with
`rollout.max_staleness` 0 and k, the same steps on the same engine, one run after the other in one
process (so the ratio is measured under the same machine load, as far as a shared machine allows).

Reported per run: the median wall seconds of a training step after `--skip` warm-up steps, its
inverse (steps/s), the median time the step waited for its rollout (`time/rollout`: the whole
sampling time when synchronous, only what the update did not hide when asynchronous) and the mean
`rollout/staleness`.

    VLLM_CPU_KVCACHE_SPACE=1 python benchmarks/async_rollouts.py --engine vllm --steps 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from unified_opd.config import load_config
from unified_opd.domain import schema_for
from unified_opd.trainer import Trainer

CONFIG = "configs/text/opd_arith.yaml"


def run(out: Path, engine: str, staleness: int, steps: int, skip: int) -> dict:
    overrides = [
        f"trainer.output_dir={out}", f"trainer.max_steps={steps}", "trainer.save_every=0", "trainer.max_time_minutes=0",
        "eval.size=64", "eval.teacher=false", "eval.kl=false", f"rollout.engine={engine}", f"rollout.max_staleness={staleness}",
        "rollout.vllm.gpu_memory_utilization=0.05", "rollout.vllm.enforce_eager=true",
    ]
    Trainer(load_config(CONFIG, overrides, schema_for)).train()
    lines = [json.loads(x) for x in open(out / "metrics.jsonl") if '"time/step"' in x][skip:]
    step = statistics.median(x["time/step"] for x in lines)
    return {
        "max_staleness": staleness, "steps_timed": len(lines), "s_per_step": step, "steps_per_s": 1 / step,
        "rollout_wait_s": statistics.median(x["time/rollout"] for x in lines),
        "mean_staleness": statistics.mean(x.get("rollout/staleness", 0.0) for x in lines),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("hf", "vllm"), default="vllm")
    parser.add_argument("--staleness", type=int, default=1, help="k of the asynchronous run")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of the timing (engine and allocator warm-up)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(Path(tmp) / f"k{k}", args.engine, k, args.steps, args.skip) for k in (0, args.staleness)]
    for row in rows:
        print(json.dumps(row), flush=True)
    base = rows[0]["steps_per_s"]
    print(f"\n| rollouts | s / step | steps/s | rollout wait s / step | mean staleness | vs synchronous |\n|---|---|---|---|---|---|")
    for row in rows:
        name = "synchronous" if row["max_staleness"] == 0 else f"asynchronous, k = {row['max_staleness']}"
        print(f"| {name} | {row['s_per_step']:.3f} | {row['steps_per_s']:.2f} | {row['rollout_wait_s']:.3f} | "
              f"{row['mean_staleness']:.2f} | {row['steps_per_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()
