"""`accelerate launch --multi_gpu --num_processes 2` on a CPU-only machine (gloo): the same loop trains and both ranks end
with identical weights (gradients were all-reduced).

The run has a time budget and a linear LR schedule, and rank 1's clock runs three times as fast as
rank 0's: the ranks must still agree on every step's learning rate and on the step they stop at,
or the weights would differ (different LRs) or rank 0 would hang in an all-reduce rank 1 never
joins. With two micro-batches per step, rank 1's loss is non-finite once, in the second micro-batch
of the first step: both ranks must skip that step, or their all-reduces pair up with the wrong ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import text_overrides


def test_two_process_cpu_run(tiny_text, tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "run.py"
    script.write_text(
        "import json, os, sys, time, torch\n"
        "if os.environ.get('RANK') == '1':\n"
        "    real = time.perf_counter\n"
        "    time.perf_counter = lambda: 3.0 * real()\n"
        "from unified_opd.config import load_config\n"
        "from unified_opd.domain import schema_for\n"
        "from unified_opd.trainer import Trainer\n"
        "t = Trainer(load_config(None, sys.argv[1:], schema_for))\n"
        "if os.environ.get('RANK') == '1':\n"
        "    real_objective, calls = t.objective, []\n"
        "    class NonFiniteOnce:\n"
        "        def __getattr__(self, name):\n"
        "            return getattr(real_objective, name)\n"
        "        def __call__(self, *args):\n"
        "            loss, metrics = real_objective(*args)\n"
        "            calls.append(t.step)\n"
        "            return (loss * float('nan') if calls.count(0) == 2 and calls[-1] == 0 else loss), metrics\n"
        "    t.objective = NonFiniteOnce()\n"
        "t.train()\n"
        "from safetensors.torch import save_file\n"
        "sd = {k: v.contiguous().clone() for k, v in t.policy.module.state_dict().items()}\n"
        f"save_file(sd, '{tmp_path}/rank%d.safetensors' % t.accelerator.process_index)\n"
        f"open('{tmp_path}/rank%d.json' % t.accelerator.process_index, 'w').write(json.dumps([t.step, t.scheduler.get_last_lr()]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
        *text_overrides(tiny_text, out, **{
            "trainer.max_steps": 100000, "trainer.max_time_minutes": 0.05, "trainer.lr_schedule": "linear",
            "trainer.cpu": True, "eval.size": 8, "trainer.grad_accum": 2,
        }),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    (step0, lr0), (step1, lr1) = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert step0 == step1 and step0 > 1, (step0, step1)
    assert " ".join(r.stderr.split()).count("non-finite loss or gradient at step 0; step skipped") == 2, r.stderr[-3000:]
    assert lr0 == lr1, (lr0, lr1)
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    init = load_file(str(tiny_text / "student" / "model.safetensors"))
    changed = False
    for k in a:
        assert torch.equal(a[k], b[k]), k
        name = k.removeprefix("lm.")
        if name in init and not torch.equal(a[k], init[name]):
            changed = True
    assert changed, "training did not change the weights"
    assert (out / "final" / "model.safetensors").is_file()


def test_launch_as_the_readme_says_is_one_job(tiny_text, tmp_path):
    """The README's command on a machine without GPUs (no `trainer.cpu`): one job over two gloo
    ranks, each metric logged once as the mean over ranks, and the same losses as one process
    with the same global batch. Greedy rollouts (top_k=1) make both runs sample the same tokens."""
    same = {"rollout.top_k": 1, "trainer.max_steps": 4, "trainer.save_every": 0, "eval.size": 8}
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = [sys.executable, "-m", "unified_opd.cli", "train", "configs/text/opd_arith.yaml", *text_overrides(tiny_text, one, **same)]
    r = subprocess.run(single, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "unified_opd.cli", "train", "configs/text/opd_arith.yaml",
        *text_overrides(tiny_text, two, **same),
    ]
    r = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = {name: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for name, d in (("one", one), ("two", two))}
    train = {name: [m for m in ms if "loss" in m] for name, ms in lines.items()}
    assert [m["step"] for m in train["two"]] == [1, 2, 3, 4]  # once per step, not once per rank
    assert len(lines["two"]) == len(lines["one"])
    for a, b in zip(train["one"], train["two"]):
        for key in ("loss", "kl", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)


def test_each_rank_gets_its_own_random_stream_from_the_run_seed():
    from unified_opd.checkpoint import seed_rank

    g = torch.Generator().manual_seed(10)
    seed_rank(3, 1, [g])
    drawn = torch.rand(4)
    torch.manual_seed(4)  # seed + rank
    assert torch.equal(drawn, torch.rand(4))
    assert g.initial_seed() == 11
    seed_rank(3, 0)
    assert not torch.equal(torch.rand(4), drawn)
