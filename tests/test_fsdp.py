"""FSDP2: a launch that asks for it shards the student (accelerate on GPUs, `unified_opd.fsdp`'s
`fully_shard` on CPU processes), samples through the sharded student, checkpoints it sharded and
resumes bit-exactly, and writes a normal model to `final/`; DeepSpeed stops at start-up.

Tolerance against DDP: the two launches start from the same weights, sample with the same
per-rank seeds and see the same batches, and their forward passes see the same float32 weights
(FSDP gathers exact copies of its shards); they differ only in how the gradients are summed
(DDP's all-reduce over buckets, FSDP's per-layer reduce-scatter), i.e. float32 rounding of about
1e-7 relative per step. AdamW divides by the gradients' running RMS, so over a few steps that
grows to ~1e-5 in the weights (measured 1.4e-5 in `fsdp_worker.py`), and the logged losses agree
to rel 1e-4 (the tolerance `test_distributed.py` uses for one vs two processes). A sharding bug
(a gradient not reduced, a shard applied to the wrong rows) moves the loss by 1e-2 or more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from accelerate.utils import DistributedType
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import text_overrides
from unified_opd import checkpoint, fsdp
from unified_opd.accelerator import check_engine
from unified_opd.domains.lm.sampler import sample
from unified_opd.domains.lm.scoring import HiddenStates
from unified_opd.domains.lm.tiny import tiny_llama
from unified_opd.domains.text.zoo import arith
from unified_opd.errors import ConfigError, UserError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_deepspeed_that_accelerate_did_not_apply_is_an_error():
    with pytest.raises(UserError, match="the config asks for DeepSpeed, but accelerate runs MULTI_CPU here"):
        check_engine(DistributedType.MULTI_CPU, {"ACCELERATE_USE_DEEPSPEED": "true"})


def test_deepspeed_applied_by_accelerate_is_an_error():
    with pytest.raises(UserError, match="DeepSpeed is not supported"):
        check_engine(DistributedType.DEEPSPEED, {"ACCELERATE_USE_DEEPSPEED": "true"})


def test_fsdp_on_gpus_or_cpu_processes_passes_and_on_one_process_is_an_error():
    check_engine(DistributedType.FSDP, {"ACCELERATE_USE_FSDP": "true"})
    check_engine(DistributedType.MULTI_CPU, {"ACCELERATE_USE_FSDP": "true"})
    with pytest.raises(UserError, match="the config asks for FSDP, but accelerate runs NO here"):
        check_engine(DistributedType.NO, {"ACCELERATE_USE_FSDP": "true"})


def test_ddp_and_single_process_launches_pass():
    check_engine(DistributedType.MULTI_CPU, {"ACCELERATE_USE_FSDP": "false"})
    check_engine(DistributedType.NO, {})


def test_fsdp1_and_an_ema_self_teacher_are_refused_before_loading():
    fsdp2 = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
    with pytest.raises(UserError, match="fsdp_version 1 is not supported"):
        fsdp.check_request(OmegaConf.create({}), {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"})
    with pytest.raises(ConfigError, match="teacher.ema"):
        fsdp.check_request(OmegaConf.create({"teacher": {"kind": "self", "ema": 0.99}}), fsdp2)
    for ema in (0.0, 1.0):
        fsdp.check_request(OmegaConf.create({"teacher": {"kind": "self", "ema": ema}}), fsdp2)
    fsdp.check_request(OmegaConf.create({"teacher": {"kind": "self", "ema": 0.99}}), {})


def _student() -> HiddenStates:
    torch.manual_seed(0)
    return HiddenStates(tiny_llama(arith.build_tokenizer(), hidden=32, layers=2, heads=2, context=32))


def test_the_groups_are_the_decoder_layers_the_model_names():
    assert fsdp.layer_classes(_student()) == {"LlamaDecoderLayer"}
    with pytest.raises(UserError, match="_no_split_modules"):
        fsdp.shard(torch.nn.Linear(2, 2))


def test_full_parameters_swaps_in_the_given_tensors_keeping_ties_and_puts_them_back():
    module = _student()
    before = {n: p for n, p in module.named_parameters()}
    state = {k: torch.full_like(v, 0.5) for k, v in module.state_dict().items()}
    with fsdp.full_parameters(module, state):
        assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())
        assert module.lm.lm_head.weight is module.lm.model.embed_tokens.weight
    assert all(p is before[n] for n, p in module.named_parameters())


@pytest.fixture
def one_rank(tmp_path):
    """A one-process gloo group (FSDP over a single rank), torn down afterwards so no other test sees it."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield SimpleNamespace(is_main_process=True, process_index=0, num_processes=1, wait_for_everyone=dist.barrier)
    finally:
        dist.destroy_process_group()


def test_sharded_sampling_checkpoint_and_final_in_one_process(one_rank, tmp_path):
    """The fast check of the default suite: the mechanics on one rank (the two-rank test is slow)."""
    plain, sharded = _student(), fsdp.shard(_student())
    assert fsdp.is_sharded(sharded) and not fsdp.is_sharded(plain)
    ids = torch.randint(4, plain.lm.config.vocab_size, (3, 4), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    with fsdp.gathered(sharded):
        drawn = sample(sharded.lm, ids, torch.ones_like(ids), 5, None, 0)
    torch.manual_seed(5)
    assert torch.equal(drawn, sample(plain.lm, ids, torch.ones_like(ids), 5, None, 0))
    optimizer = torch.optim.AdamW(sharded.parameters(), lr=1e-2)
    sharded(drawn, torch.ones_like(drawn)).sum().backward()
    optimizer.step()
    fsdp.ShardedCheckpoints(one_rank, sharded, optimizer).save(tmp_path / "ck", 1, {"k": 1}, None, keep=1, generators=())
    fresh = fsdp.shard(_student())
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    data = fsdp.ShardedCheckpoints(one_rank, fresh, fresh_opt).load(tmp_path / "ck" / "step_00000001", "trainer.resume")
    assert data["state"]["k"] == 1 and data["model"] is None
    a, b = fsdp.full_state(sharded), fsdp.full_state(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fresh_opt.state_dict()["state"][0]["exp_avg"].full_tensor().equal(optimizer.state_dict()["state"][0]["exp_avg"].full_tensor())
    with fsdp.saving_final(one_rank, sharded):
        sharded.lm.save_pretrained(tmp_path / "final")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert all(torch.equal(v, a[f"lm.{k}"]) for k, v in loaded.state_dict().items())
    with pytest.raises(UserError, match="holds an FSDP-sharded student"):
        checkpoint.load_into(tmp_path / "ck" / "step_00000001", plain, torch.optim.AdamW(plain.parameters()), "trainer.resume")


@pytest.mark.slow
def test_two_cpu_ranks_sample_train_checkpoint_and_gather_like_one_unsharded_model(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "tests" / "fsdp_worker.py"), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    for rep in ranks:
        assert rep["sharded"] and rep["layer_classes"] == ["LlamaDecoderLayer"]
        assert rep["same_tokens"] and rep["tokens_varied"]
        assert rep["resumed_step3"] == rep["sharded_steps"][2]  # bit for bit
        assert rep["still_sharded"] and rep["state_read"] == "test"
    for i, plain in enumerate(ranks[0]["plain"]):
        mean_loss = (ranks[0]["sharded_steps"][i][0] + ranks[1]["sharded_steps"][i][0]) / 2
        assert mean_loss == pytest.approx(plain[0], rel=1e-5)
        assert ranks[0]["sharded_steps"][i][1] == pytest.approx(plain[1], rel=1e-5)  # the global gradient norm
    assert ranks[0]["full_keys_equal"] and ranks[0]["full_max_diff"] < 1e-4 and ranks[0]["resumed_bit_exact"]
    full = torch.load(tmp_path / "full.pt")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert all(torch.equal(v, full[f"lm.{k}"]) for k, v in loaded.state_dict().items())


def _launch(config: str, out: Path, tiny_text, *launcher: str, **extra) -> subprocess.CompletedProcess:
    same = {"trainer.max_time_minutes": 0, "trainer.warmup_steps": 0, "trainer.save_every": 3, "eval.size": 8, "eval.batch_size": 8}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "-m", "unified_opd.cli", "train", config,
           *text_overrides(tiny_text, out, **{**same, **extra})]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


def _losses(out: Path) -> dict:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m for m in rows if "loss" in m}


@pytest.mark.slow
def test_the_shipped_fsdp2_config_trains_resumes_bit_exactly_and_matches_ddp(tiny_text, tmp_path):
    fsdp_launch = ("--config_file", str(CONFIGS / "fsdp2.yaml"))
    ddp_launch = ("--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no")
    config = "configs/text/opd_arith.yaml"
    whole, resumed, ddp, ddp_resumed = tmp_path / "whole", tmp_path / "resumed", tmp_path / "ddp", tmp_path / "ddp_resumed"
    runs = ((whole, fsdp_launch, 6), (resumed, fsdp_launch, 3), (resumed, fsdp_launch, 6), (ddp, ddp_launch, 6),
            (ddp_resumed, ddp_launch, 3), (ddp_resumed, ddp_launch, 6))
    for out, launcher, steps in runs:
        r = _launch(config, out, tiny_text, *launcher, **{"trainer.max_steps": steps})
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count('"steps"') == 1, r.stdout[-2000:]  # the summary once per launch, not once per rank
    assert (resumed / "checkpoints" / "step_00000006" / fsdp.SHARDED).is_dir()
    assert (ddp / "checkpoints" / "step_00000006" / "model.safetensors").is_file()
    a, b, c, d = _losses(whole), _losses(resumed), _losses(ddp), _losses(ddp_resumed)
    assert sorted(a) == sorted(b) == sorted(d) == list(range(1, 7))
    for step in range(1, 7):
        for key in ("loss", "kl", "grad_norm"):
            assert b[step][key] == a[step][key], (step, key)  # resumed at 3: bit-exact
            assert d[step][key] == c[step][key], (step, key)  # DDP resumed at 3: bit-exact too
            assert c[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-6), (step, key)
    # the ranks' generators have drifted apart by step 3 (different prompts stop sampling at different
    # lengths): restoring the main process's state on every rank could not have resumed bit-exactly
    step3 = ddp_resumed / "checkpoints" / "step_00000003"
    rank_states = [load_file(str(step3 / f"rng_rank{i}.safetensors"))["torch"] for i in (0, 1)]
    assert not torch.equal(*rank_states)
    final = {name: load_file(str(d / "final" / "model.safetensors")) for name, d in (("whole", whole), ("resumed", resumed), ("ddp", ddp))}
    assert all(torch.equal(final["whole"][k], final["resumed"][k]) for k in final["whole"])
    assert all(torch.allclose(final["whole"][k], final["ddp"][k], atol=1e-4) for k in final["whole"])
    AutoModelForCausalLM.from_pretrained(whole / "final")
    init = load_file(str(tiny_text / "student" / "model.safetensors"))
    assert any(not torch.equal(final["whole"][k], init[k]) for k in init), "training did not change the weights"


def test_a_sharded_save_that_dies_before_its_commit_leaves_the_previous_checkpoint(one_rank, tmp_path, monkeypatch):
    sharded = fsdp.shard(_student())
    optimizer = torch.optim.AdamW(sharded.parameters(), lr=1e-2)
    saver, root = fsdp.ShardedCheckpoints(one_rank, sharded, optimizer), tmp_path / "ck"
    saver.save(root, 2, {"k": 2}, None, keep=2, generators=())
    commit = checkpoint.commit_checkpoint

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies once every shard of step 4 is on disk

    monkeypatch.setattr(checkpoint, "commit_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        saver.save(root, 4, {"k": 4}, None, keep=2, generators=())
    assert (checkpoint.staging_dir(root, 4) / fsdp.SHARDED).is_dir()
    assert checkpoint.latest_checkpoint(root).name == "step_00000002"
    monkeypatch.setattr(checkpoint, "commit_checkpoint", commit)
    saver.save(root, 6, {"k": 6}, None, keep=2, generators=())  # the next save sweeps the leftover
    assert not checkpoint.staging_dir(root, 4).exists()
    assert [p.name for p in checkpoint.list_checkpoints(root)] == ["step_00000002", "step_00000006"]
