"""Every supported image-text family, tiny models from configs: the per-token log-probs the
trainer uses (student on the full image, teacher on the full image and on the crop) equal a plain
model forward of each unpadded sequence, with several samples per prompt and padded batches;
several images per prompt and chat messages with image parts; dynamic-resolution crops; an
unknown family is an error."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from test_vision_fixtures import _one_thread, write_records  # noqa: F401
from unified_opd.domains.lm import Sampling, lm_teacher_view
from unified_opd.domains.vision.config import DataConfig, TeacherConfig
from unified_opd.domains.vision.crops import Cropper
from unified_opd.domains.vision.data import load_images, load_records
from unified_opd.domains.vision.generation import ViewBuilder, format_prompts
from unified_opd.domains.vision.models import load_vision_lm
from unified_opd.domains.vision.policy import VisionPolicy
from unified_opd.domains.vision.zoo import finedetail_data as finedetail
from unified_opd.domains.vision.families import FAMILIES
from unified_opd.domains.vision.zoo.tiny_qwen import QwenSpec, save_tiny_qwen
from unified_opd.errors import ConfigError, UserError
from vision_family_models import BUILDERS, WORDS, build

# what each per-token input is on answer tokens (the models' documented input format):
# Qwen-VL text tokens are 0; PaliGemma's answer is the causal suffix, 1; Gemma 3 text is 0
ANSWER_TOKEN_TYPE = {"mm_token_type_ids": {}, "token_type_ids": {"paligemma": 1}}


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory) -> Path:
    """Five finedetail records: prompts of two lengths, images of two sizes (48 and 64 px), one
    record with two images and chat messages."""
    root = tmp_path_factory.mktemp("family_records")
    records = finedetail.make_records(5, seed=4, image_dir=root / "images", prefix="r", held_out=False)
    records[1]["prompt"] = "what is in the box ?"
    small = Image.open(root / records[2]["image"]).resize((48, 48))
    small.save(root / "images" / "small.png")
    records[2].update(image="images/small.png", box=[round(v * 0.75) for v in records[2]["box"]])
    question = records[4].pop("prompt")
    records[4]["image"] = [records[4]["image"], records[0]["image"]]
    content = [{"type": "image"}, {"type": "text", "text": question}, {"type": "image"}]
    records[4]["messages"] = [{"role": "user", "content": content}]
    write_records(root / "records.jsonl", records)
    # for processors without a chat template (PaliGemma): two images and a plain prompt instead
    write_records(root / "plain.jsonl", records[:4] + [{**{k: v for k, v in records[4].items() if k != "messages"}, "prompt": question}])
    return root


def plain_answer_log_probs(lm, processor, record, images, answer: torch.Tensor, data_cfg) -> torch.Tensor:
    """log p(answer token k | prompt, answer < k) from one plain forward of the unpadded sequence,
    encoded alone by the processor (no positions passed: the model computes its own)."""
    enc = processor(text=format_prompts(processor, [record], data_cfg), images=[images], return_tensors="pt")
    prompt_len = enc["input_ids"].shape[1]
    inputs = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor) and k != "labels"}  # PaliGemma adds labels
    inputs["input_ids"] = torch.cat([enc["input_ids"], answer[None]], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    for key, by_family in ANSWER_TOKEN_TYPE.items():
        if key in inputs:
            value = by_family.get(lm.config.model_type, 0)
            inputs[key] = torch.cat([inputs[key], inputs[key].new_full((1, len(answer)), value)], 1)
    logits = lm(**inputs).logits[0, prompt_len - 1 : -1].float()
    return logits.log_softmax(-1).gather(-1, answer[:, None]).squeeze(-1)


def check_invariant(model_dir: Path, records_path: Path, lazy: bool, crop_upscale: float = 1.0):
    """Max |trainer log-prob − plain forward| over the student (full image) and the crop teacher,
    and the rollout."""
    data_cfg = OmegaConf.structured(DataConfig(path=str(records_path)))
    cropper = Cropper(OmegaConf.structured(TeacherConfig(crop_upscale=crop_upscale)), data_cfg)
    lm, processor = load_vision_lm(str(model_dir), "float32", False, "student")
    records, _ = load_records(str(records_path), data_cfg, cropper)
    policy = VisionPolicy(lm, processor, data_cfg, Sampling(num_samples=2, max_new_tokens=3), lazy, ViewBuilder(processor, data_cfg, cropper))
    torch.manual_seed(0)
    rollout = policy.rollout(records)
    assert (rollout.student_view["attention_mask"][:, 0] == 0).any()  # left padding is exercised
    views = {
        "full": (policy.distribution(rollout), lambda r, ims: ims),
        "crop": (lm_teacher_view(policy.module).distribution(rollout), lambda r, ims: [cropper(r, ims[0]), *ims[1:]]),
    }
    worst = 0.0
    for name, (dist, shown) in views.items():
        got = dist.log_prob(rollout.actions).detach()
        for row, record in enumerate(rollout.meta["records"]):
            mask = rollout.loss_mask[row].bool()
            answer = rollout.actions[row][mask]
            plain = plain_answer_log_probs(lm, processor, record, shown(record, load_images(record)), answer, data_cfg)
            err = float((got[row][mask] - plain).abs().max().detach())
            assert err <= 1e-5, (name, row, err)
            worst = max(worst, err)
    return worst, rollout


@pytest.mark.parametrize("model_type", sorted(BUILDERS))
def test_trainer_log_probs_equal_a_plain_forward(model_type, records_dir, tmp_path):
    records = records_dir / ("plain.jsonl" if model_type == "paligemma" else "records.jsonl")
    worst, _ = check_invariant(build(model_type, tmp_path / model_type), records, lazy=model_type != "llava")
    print(f"{model_type}: max |error| {worst:.2e}")


@pytest.mark.parametrize("model_type, wrong", [("qwen2_vl", {"rope_index": False}), ("paligemma", {"completion_type": 0})])
def test_the_invariant_catches_1d_positions_and_a_bidirectional_answer(model_type, wrong, records_dir, tmp_path, monkeypatch):
    """The two ways a family's scoring goes silently wrong: Qwen-VL scored with 1-D positions
    (generate uses M-RoPE), PaliGemma's answer put in its bidirectional prefix."""
    monkeypatch.setitem(FAMILIES, model_type, dataclasses.replace(FAMILIES[model_type], **wrong))
    records = records_dir / ("plain.jsonl" if model_type == "paligemma" else "records.jsonl")
    with pytest.raises(AssertionError):
        check_invariant(build(model_type, tmp_path / model_type), records, lazy=True)


def test_a_native_resolution_crop_gets_more_visual_tokens_and_stays_exact(records_dir, tmp_path):
    """Dynamic resolution: a 128 px image is shown in 64 tokens (max_pixels 64²), the box's
    crop at its own resolution in as many as a full image: several times the tokens its region
    has inside the full view, and the log-probs still equal a plain forward."""
    first, _, small = (json.loads(x) for x in (records_dir / "records.jsonl").read_text().splitlines()[:3])
    big = Image.open(records_dir / first["image"]).resize((128, 128), Image.NEAREST)
    big.save(tmp_path / "big.png")
    records = [{**first, "image": str(tmp_path / "big.png"), "box": [2 * v for v in first["box"]]}, {**small, "image": str(records_dir / small["image"])}]
    write_records(tmp_path / "big.jsonl", records)
    model = tmp_path / "qwen"
    save_tiny_qwen(model, QwenSpec(max_pixels=64 * 64), WORDS)
    worst, rollout = check_invariant(model, tmp_path / "big.jsonl", lazy=True)
    full = rollout.student_view["images"]["image_grid_thw"][0].prod() // 4
    crop = rollout.teacher_view["images"]["image_grid_thw"][0].prod() // 4
    box = Cropper(OmegaConf.structured(TeacherConfig()), OmegaConf.structured(DataConfig(path="x"))).box(records[0], big)
    share = (box[2] - box[0]) * (box[3] - box[1]) / 128**2
    assert full == 64 and crop > 3 * share * full, (full, crop, share)


def test_an_unknown_family_is_an_error_naming_the_model_type_before_any_weights_load(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "idefics2"}))
    with pytest.raises(ConfigError, match=r"student.path: model type 'idefics2' is not a supported image-text family"):
        load_vision_lm(str(tmp_path), "float32", False, "student")


def test_messages_with_more_image_parts_than_images_are_a_record_error(records_dir, tmp_path):
    record = json.loads((records_dir / "records.jsonl").read_text().splitlines()[4])
    record["image"] = record["image"][:1]
    record["image"] = [str(records_dir / record["image"][0])]
    write_records(tmp_path / "bad.jsonl", [record])
    data_cfg = OmegaConf.structured(DataConfig(path=str(tmp_path / "bad.jsonl")))
    with pytest.raises(UserError, match=r"field 'messages': 2 image parts in the messages, but 1 images"):
        load_records(str(tmp_path / "bad.jsonl"), data_cfg, None)
