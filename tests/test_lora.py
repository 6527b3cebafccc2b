"""LoRA students (student.lora, PEFT): only the adapter trains, the log-probs trained on are the
PEFT model's plain forward, resume is bit-exact, an adapter directory is a student.path, the
merged final/ loads in plain transformers, the frozen base is the reference at no extra memory."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import text_overrides
from test_lm import check_matches_plain_forward
from test_vision_fixtures import _one_thread, tiny_vision  # noqa: F401
from unified_opd.config import load_config
from unified_opd.data import read_jsonl
from unified_opd.domain import schema_for
from unified_opd.domains.lm import Sampling, load_causal_lm
from unified_opd.domains.text.config import DataConfig
from unified_opd.domains.text.policy import TextPolicy
from unified_opd.domains.vision.config import DataConfig as VisionDataConfig
from unified_opd.domains.vision.data import load_records
from unified_opd.domains.vision.models import load_vision_lm
from unified_opd.domains.vision.policy import VisionPolicy
from unified_opd.errors import ConfigError
from unified_opd.lora import BaseModelTeacher, LoraConfig, apply_lora, check_lora
from unified_opd.trainer import Trainer

peft = pytest.importorskip("peft")

LORA = {"student.lora.r": 4, "student.lora.alpha": 8, "trainer.lr": 1e-2}


def _trainer(root, out, **extra) -> Trainer:
    return Trainer(load_config(None, text_overrides(root, out, **{**LORA, **extra}), schema_for))


def _randomised_adapter(lm):
    """A PEFT model whose adapters are non-zero (a fresh one computes exactly its base)."""
    adapted = apply_lora(lm, OmegaConf.structured(LoraConfig(r=4, alpha=8)))
    torch.manual_seed(3)
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return adapted


@pytest.mark.parametrize("checkpointing", [False, True])
def test_only_adapter_parameters_change(tiny_text, tmp_path, checkpointing):
    overrides = {"trainer.max_steps": 3, "trainer.save_every": 0, "trainer.gradient_checkpointing": checkpointing}
    trainer = _trainer(tiny_text, tmp_path / "run", **overrides)
    before = {n: p.detach().clone() for n, p in trainer.policy.module.named_parameters()}
    trainable = {n for n, p in trainer.policy.module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == {
        id(p) for n, p in trainer.policy.module.named_parameters() if n in trainable
    }
    trainer.train()
    after = dict(trainer.policy.module.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed)


@pytest.mark.parametrize("lazy", [True, False])
def test_log_probs_equal_a_plain_forward_of_the_peft_model(tiny_text, lazy):
    lm, tok = load_causal_lm(str(tiny_text / "student"), "float32", False, "student")
    adapted = _randomised_adapter(lm)
    data_cfg = OmegaConf.structured(DataConfig(path=str(tiny_text / "train.jsonl")))
    policy = TextPolicy(adapted, tok, data_cfg, Sampling(num_samples=2, max_new_tokens=4), lazy)
    policy.train_module = policy.module
    torch.manual_seed(0)
    rollout = policy.rollout(read_jsonl(str(tiny_text / "train.jsonl"), ("prompt",))[:6])
    check_matches_plain_forward(policy, rollout)
    # and the adapter is in that forward: the base model scores the same sequences differently
    base, _ = load_causal_lm(str(tiny_text / "student"), "float32", False, "student")
    ids = rollout.student_view["input_ids"][:1]
    assert not torch.allclose(adapted(input_ids=ids).logits, base(input_ids=ids).logits, atol=1e-3)


def test_image_text_log_probs_equal_a_plain_forward_of_the_peft_model(tiny_vision):  # noqa: F811
    data_cfg = OmegaConf.structured(VisionDataConfig(path=str(tiny_vision / "train.jsonl")))
    lm, processor = load_vision_lm(str(tiny_vision / "student"), "float32", False, "student")
    policy = VisionPolicy(_randomised_adapter(lm), processor, data_cfg, Sampling(num_samples=2, max_new_tokens=3), True)
    policy.train_module = policy.module
    records, _ = load_records(str(tiny_vision / "train.jsonl"), data_cfg, None)
    torch.manual_seed(0)
    rollout = policy.rollout(records[:4], with_teacher_view=False)
    images = rollout.student_view["images"]
    check_matches_plain_forward(policy, rollout, lambda row: {k: v[row : row + 1] for k, v in images.items()})


def test_resume_with_lora_is_bit_exact_and_checkpoints_hold_only_the_adapter(tiny_text, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _trainer(tiny_text, full, **{"trainer.max_steps": 6, "trainer.save_every": 3}).train()
    _trainer(tiny_text, part, **{"trainer.max_steps": 3, "trainer.save_every": 3}).train()
    (part / "final").rename(tmp_path / "discarded")  # as if killed right after the step-3 checkpoint
    _trainer(tiny_text, part, **{"trainer.max_steps": 6, "trainer.save_every": 3}).train()
    a = load_file(str(full / "final" / "adapter_model.safetensors"))
    b = load_file(str(part / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = load_file(str(part / "checkpoints" / "step_00000006" / "model.safetensors"))
    assert saved and all("lora_" in k for k in saved)


def test_adapter_directory_as_student_path_and_merged_final(tiny_text, tmp_path):
    first = tmp_path / "first"
    _trainer(tiny_text, first, **{"trainer.max_steps": 2, "trainer.save_every": 0, "student.lora.merge": True}).train()
    adapter = load_file(str(first / "final" / "adapter_model.safetensors"))
    # the merged model is a plain transformers directory computing what base + adapter compute
    merged = AutoModelForCausalLM.from_pretrained(first / "final" / "merged")
    base, _ = load_causal_lm(str(tiny_text / "student"), "float32", False, "student")
    adapted = peft.PeftModel.from_pretrained(base, str(first / "final"))
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    torch.testing.assert_close(merged(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-5, rtol=0)

    second = _trainer(
        tiny_text, tmp_path / "second",
        **{"student.path": first / "final", "student.lora.r": 0, "trainer.max_steps": 1, "trainer.save_every": 0},
    )
    loaded = {n.replace(".default", ""): p for n, p in second.policy.module.named_parameters() if p.requires_grad}
    assert len(loaded) == len(adapter)
    for k, v in adapter.items():
        assert torch.equal(loaded["lm." + k], v), k
    second.train()
    assert (tmp_path / "second" / "final" / "adapter_model.safetensors").is_file()


def test_reference_is_the_base_with_adapters_disabled(tiny_text, tmp_path):
    trainer = _trainer(
        tiny_text, tmp_path / "run", **{"teacher.reference": "student", "objective.lam": 1.5, "trainer.max_steps": 3, "trainer.save_every": 0}
    )
    reference = trainer.components.reference
    assert isinstance(reference, BaseModelTeacher)
    trainer.train()
    base, _ = load_causal_lm(str(tiny_text / "student"), "float32", False, "student")
    rollout = trainer.policy.rollout(trainer.data.next())
    view = rollout.view_for_teacher
    want = torch.log_softmax(base(input_ids=view["input_ids"], attention_mask=view["attention_mask"],
                                  position_ids=(view["attention_mask"].cumsum(-1) - 1).clamp_min(0)).logits[:, :-1], -1)
    got = reference.distribution(rollout).log_prob(rollout.actions)
    expected = want.gather(-1, rollout.actions[..., None]).squeeze(-1)
    mask = rollout.loss_mask.bool()
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=0)
    # the student itself moved away from its base: its adapters are back on after the reference scored
    student = trainer.policy.distribution(rollout).log_prob(rollout.actions).detach()
    assert not torch.allclose(student[mask], expected[mask], atol=1e-3)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"student.lora.r": -1}, "student.lora.r"),
        ({"student.lora.alpha": 0}, "student.lora.alpha"),
        ({"student.lora.dropout": 1.0}, "student.lora.dropout"),
        ({"student.lora.target_modules": []}, "student.lora.target_modules"),
    ],
)
def test_bad_lora_values_are_config_errors(override, message):
    cfg = OmegaConf.structured({"path": "x", "lora": LoraConfig(r=4)})
    for k, v in override.items():
        OmegaConf.update(cfg, k.removeprefix("student."), v)
    with pytest.raises(ConfigError, match=message):
        check_lora(cfg)


def test_rank_with_an_adapter_directory_is_a_config_error(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    cfg = OmegaConf.structured({"path": str(tmp_path), "lora": LoraConfig(r=4)})
    with pytest.raises(ConfigError, match="student.lora.r: student.path is a PEFT adapter"):
        check_lora(cfg)
