"""Memory switches of the student: gradient checkpointing gives the gradients of a plain backward,
bf16 mixed precision keeps float32 master weights and optimiser state, bf16 weights under AdamW
warn (a LoRA adapter on a bf16 base is kept float32 and does not), peak memory per rank is logged."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from accelerate.state import AcceleratorState
from omegaconf import OmegaConf

from conftest import text_overrides
from unified_opd.config import load_config
from unified_opd.data import read_jsonl
from unified_opd.domain import schema_for
from unified_opd.domains.lm import Sampling, load_causal_lm
from unified_opd.domains.text.config import DataConfig
from unified_opd.domains.text.policy import TextPolicy
from unified_opd.errors import ConfigError
from unified_opd.memory import enable_gradient_checkpointing, low_precision_warning, peak_memory_gib
from unified_opd.trainer import Trainer


def _trainer(root, out, **extra) -> Trainer:
    return Trainer(load_config(None, text_overrides(root, out, **{"trainer.save_every": 0, **extra}), schema_for))


def _grads(tiny_text, checkpointing: bool):
    lm, tok = load_causal_lm(str(tiny_text / "student"), "float32", False, "student")
    policy = TextPolicy(lm, tok, OmegaConf.structured(DataConfig(path="x")), Sampling(num_samples=2, max_new_tokens=4))
    policy.train_module = policy.module
    torch.manual_seed(0)
    rollout = policy.rollout(read_jsonl(str(tiny_text / "train.jsonl"), ("prompt",))[:4])
    if checkpointing:
        enable_gradient_checkpointing(policy.module)
        assert lm.model.gradient_checkpointing
    policy.module.train()
    logp = policy.distribution(rollout).log_prob(rollout.actions)
    (logp * rollout.loss_mask).sum().backward()
    return {n: p.grad for n, p in lm.named_parameters()}


def test_gradient_checkpointing_gives_the_gradients_of_a_plain_backward(tiny_text):
    plain, recomputed = _grads(tiny_text, False), _grads(tiny_text, True)
    for n in plain:
        torch.testing.assert_close(recomputed[n], plain[n], atol=1e-6, rtol=1e-5)


def test_gradient_checkpointing_of_a_module_without_it_is_a_config_error():
    with pytest.raises(ConfigError, match="trainer.gradient_checkpointing"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state, fixed by the first Accelerator: this test's bf16
    run needs its own, and must not leave it to the tests after it."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_mixed_precision_keeps_float32_master_weights(tiny_text, tmp_path, fresh_accelerator_state):
    trainer = _trainer(tiny_text, tmp_path / "run", **{"trainer.mixed_precision": "bf16", "trainer.max_steps": 2})
    rollout = trainer.policy.rollout(trainer.data.next())
    view = rollout.student_view
    seen = []
    layer = trainer.policy.lm.model.layers[0].mlp.down_proj
    hook = layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    trainer.policy.train_module(view["input_ids"], view["attention_mask"])
    hook.remove()
    assert seen == [torch.bfloat16]  # computed under bf16 autocast
    trainer.train()
    assert all(p.dtype == torch.float32 for p in trainer.policy.module.parameters())
    state = trainer.optimizer.state_dict()["state"]
    assert state and all(s["exp_avg"].dtype == torch.float32 for s in state.values())


def test_bf16_weights_warn_but_a_lora_adapter_on_a_bf16_base_is_float32(tiny_text, tmp_path):
    with pytest.warns(UserWarning, match="student.dtype: the trained weights are bfloat16"):
        _trainer(tiny_text, tmp_path / "full", **{"student.dtype": "bfloat16"})
    pytest.importorskip("peft")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        trainer = _trainer(tiny_text, tmp_path / "lora", **{"student.dtype": "bfloat16", "student.lora.r": 4})
    trained = [p for p in trainer.policy.module.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert any(p.dtype == torch.bfloat16 for p in trainer.policy.module.parameters() if not p.requires_grad)
    assert low_precision_warning(trained) == ""


def test_peak_memory_per_rank_is_in_the_metrics(tiny_text, tmp_path):
    _trainer(tiny_text, tmp_path / "run", **{"trainer.max_steps": 2}).train()
    rows = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    peaks = [r["memory/peak_rss_gib/rank0"] for r in rows if "memory/peak_rss_gib/rank0" in r]
    assert len(peaks) == 2 and 0 < peaks[0] <= peaks[1]
    assert peaks[1] <= peak_memory_gib()["rss"]
