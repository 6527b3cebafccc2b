"""Text domain end to end on tiny models: KL falls, resume is exact, outputs load with HF,
bad models are clear errors, non-finite steps are skipped and then stop the run."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import save_tiny_lm, text_overrides
from unified_opd.checkpoint import list_checkpoints, load_checkpoint
from unified_opd.config import load_config
from unified_opd.domain import schema_for
from unified_opd.errors import ConfigError, UserError
from unified_opd.trainer import Trainer


def _train(root, out, **extra):
    return Trainer(load_config(None, text_overrides(root, out, **extra), schema_for)).train()


@pytest.mark.parametrize("divergence, estimator", [("reverse_kl", "auto"), ("jsd", "auto"), ("reverse_kl", "analytic")])
def test_student_kl_to_teacher_falls(tiny_text, tmp_path, divergence, estimator):
    s = _train(
        tiny_text,
        tmp_path / "run",
        **{"trainer.max_steps": 40, "divergence.name": divergence, "objective.estimator": estimator, "trainer.save_every": 0},
    )
    assert s["after"]["reverse_kl"] < 0.8 * s["before"]["reverse_kl"], s
    lines = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert any("time/rollout" in x for x in lines) and any("eval/accuracy" in x for x in lines)
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_final_model_loads_with_transformers(tiny_text, tmp_path):
    _train(tiny_text, tmp_path / "run", **{"trainer.max_steps": 2})
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    tok = AutoTokenizer.from_pretrained(tmp_path / "run" / "final")
    out = model.generate(**tok(["12+3="], return_tensors="pt"), max_new_tokens=2, do_sample=False)
    assert out.shape[1] >= 6


def test_resume_after_interruption_matches_uninterrupted_run(tiny_text, tmp_path):
    full = tmp_path / "full"
    _train(tiny_text, full, **{"trainer.max_steps": 6, "trainer.save_every": 3})
    part = tmp_path / "part"
    _train(tiny_text, part, **{"trainer.max_steps": 3, "trainer.save_every": 3})
    (part / "final").rename(tmp_path / "discarded")  # as if killed right after the step-3 checkpoint
    _train(tiny_text, part, **{"trainer.max_steps": 6, "trainer.save_every": 3})
    a = AutoModelForCausalLM.from_pretrained(full / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(part / "final").state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_time_budget_spans_resumed_launches(tiny_text, tmp_path):
    out = tmp_path / "run"
    _train(tiny_text, out, **{"trainer.max_steps": 3, "trainer.save_every": 3})
    (out / "final").rename(tmp_path / "discarded")
    used = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])["state"]["train_seconds"]
    assert used > 0
    # a budget the first launch already spent: the resumed launch stops after one step
    s = _train(tiny_text, out, **{"trainer.max_steps": 6, "trainer.max_time_minutes": 0.99 * used / 60})
    assert s["steps"] == 4 and s["steps_this_run"] == 1


def test_tokenizer_mismatch_is_a_clear_error(tiny_text, tmp_path):
    odd = save_tiny_lm(tmp_path / "odd_teacher", vocab_extra=3)
    with pytest.raises(UserError, match="teacher.path: vocabulary size"):
        _train(tiny_text, tmp_path / "run", **{"teacher.path": odd})


def test_existing_run_is_not_overwritten(tiny_text, tmp_path):
    _train(tiny_text, tmp_path / "run", **{"trainer.max_steps": 2})
    before = (tmp_path / "run" / "final" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        _train(tiny_text, tmp_path / "run", **{"trainer.max_steps": 2, "trainer.resume": "never"})
    assert (tmp_path / "run" / "final" / "model.safetensors").read_bytes() == before


def test_nonfinite_steps_are_skipped_then_stop_the_run(tiny_text, tmp_path):
    out = tmp_path / "run"
    extra = {"trainer.max_steps": 4, "trainer.save_every": 1, "trainer.max_nonfinite": 2}
    trainer = Trainer(load_config(None, text_overrides(tiny_text, out, **extra), schema_for))
    real, finite = trainer.objective, iter([True, False, True, False, False])

    def objective(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        return (loss if next(finite) else loss * float("nan")), metrics

    trainer.objective = objective
    # one bad step is skipped (step 2 comes from the third batch); two in a row stop the run
    with pytest.raises(UserError, match="non-finite for 2 consecutive steps at step 2"):
        trainer.train()
    saved = list_checkpoints(out / "checkpoints")
    assert [p.name for p in saved] == ["step_00000001", "step_00000002"]
    for p in saved:
        assert all(torch.isfinite(t).all() for t in load_checkpoint(p)["model"].values())
    assert not (out / "final").exists()


def test_reused_rollouts_take_several_clipped_updates_per_step(tiny_text, tmp_path):
    out = tmp_path / "run"
    s = _train(tiny_text, out, **{"trainer.max_steps": 20, "trainer.updates_per_rollout": 2, "trainer.save_every": 0})
    state = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])["optimizer"]["state"]
    assert all(int(v["step"]) == 40 for v in state.values())  # 20 steps x 2 updates, one rollout per step
    lines = [json.loads(x) for x in open(out / "metrics.jsonl") if '"clip_frac"' in x]
    assert len(lines) == 20 and all(0.0 <= x["clip_frac"] <= 1.0 for x in lines)
    assert s["after"]["reverse_kl"] < s["before"]["reverse_kl"], s


def test_updates_per_rollout_below_one_is_a_config_error(tiny_text, tmp_path):
    with pytest.raises(ConfigError, match="trainer.updates_per_rollout"):
        _train(tiny_text, tmp_path / "run", **{"trainer.updates_per_rollout": 0})
