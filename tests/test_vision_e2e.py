"""Vision domain end to end through the Trainer on tiny models: the KL between the views falls,
outputs load with transformers, an EMA teacher resumes, a separate full-image teacher runs, a
Qwen2-VL-architecture student trains with a 2x crop self-teacher."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from test_vision_fixtures import _one_thread, tiny_vision, vision_overrides  # noqa: F401
from unified_opd.domains.vision.models import load_vision_lm
from unified_opd.domains.vision.zoo import finedetail_data as finedetail
from unified_opd.domains.vision.zoo.tiny_qwen import QwenSpec, save_tiny_qwen
from unified_opd.config import load_config
from unified_opd.domain import schema_for
from unified_opd.evaluate import run_eval
from unified_opd.trainer import Trainer


def _train(root, out, **extra):
    return Trainer(load_config(None, vision_overrides(root, out, **extra), schema_for)).train()


def test_crop_self_distillation_kl_falls(tiny_vision, tmp_path):
    out = tmp_path / "run"
    # evaluated on the training images: a few steps can fit the crop teacher there
    extra = {"trainer.max_steps": 80, "trainer.lr": 5e-3, "objective.estimator": "analytic", "data.eval_path": tiny_vision / "train.jsonl", "eval.size": 48, "eval.batch_size": 48}
    s = _train(tiny_vision, out, **extra)
    assert s["after"]["kl_views"] < 0.8 * s["before"]["kl_views"], s
    assert {"accuracy_full", "accuracy_crop", "kl_views"} <= set(s["after"])
    assert (out / "examples_step0.png").is_file() and (out / "examples_step80.png").is_file()
    lines = [json.loads(x) for x in open(out / "metrics.jsonl")]
    assert any("eval/kl_views" in x for x in lines)
    model = AutoModelForImageTextToText.from_pretrained(out / "final")
    processor = AutoProcessor.from_pretrained(out / "final")
    assert model.config.model_type == "llava" and processor.image_token_id == model.config.image_token_id


def test_separate_full_image_teacher_and_uopd_eval(tiny_vision, tmp_path):
    extra = {"teacher.kind": "model", "teacher.view": "full", "teacher.path": tiny_vision / "teacher", "trainer.max_steps": 2}
    s = _train(tiny_vision, tmp_path / "run", **extra)
    assert s["steps"] == 2 and s["after"]["kl_views"] > 0
    metrics = run_eval("configs/vision/opd_finedetail.yaml", vision_overrides(tiny_vision, tmp_path / "eval", **extra))
    assert {"accuracy_full", "accuracy_crop", "kl_views"} <= set(metrics)


@pytest.mark.parametrize("source", ["ema", "live"])
def test_self_teacher_sources_train_and_resume(tiny_vision, tmp_path, source):
    extra = {"teacher.kind": "self", "teacher.ema": {"ema": 0.99, "live": 0.0}[source], "trainer.max_steps": 2, "trainer.save_every": 1, "eval.size": 4, "eval.examples": 0}
    _train(tiny_vision, tmp_path / "run", **extra)
    (tmp_path / "run" / "final").rename(tmp_path / "discarded")
    s = _train(tiny_vision, tmp_path / "run", **{**extra, "trainer.max_steps": 3})
    assert s["steps"] == 3 and s["steps_this_run"] == 1


def test_qwen2_vl_student_trains_with_a_crop_self_teacher_and_saves_what_loads(tiny_vision, tmp_path):
    student = tmp_path / "qwen"
    save_tiny_qwen(student, QwenSpec(max_pixels=64 * 64), finedetail.WORDS)
    extra = {"student.path": student, "teacher.crop_upscale": 2.0, "trainer.max_steps": 2, "eval.size": 4, "eval.examples": 0}
    s = _train(tiny_vision, tmp_path / "run", **extra)
    assert s["steps"] == 2 and s["after"]["kl_views"] > 0
    lm, processor = load_vision_lm(str(tmp_path / "run" / "final"), "float32", False, "student")
    assert lm.config.model_type == "qwen2_vl" and processor.image_processor.size["longest_edge"] == 64 * 64  # max_pixels
