"""Every supported image-text family, tiny models from configs: the per-token log-probs the
trainer uses (student on the full image, teacher on the full image and on the crop) equal a plain
model forward of each unpadded sequence, with several samples per prompt and padded batches;
several images per prompt and chat messages with image parts; dynamic-resolution crops; an
unknown family is an error."""

from __future__ import annotations

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
from vision_family_models import BUILDERS, build

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
    return root


def plain_answer_log_probs(lm, processor, record, images, answer: torch.Tensor, data_cfg) -> torch.Tensor:
    """log p(answer token k | prompt, answer < k) from one plain forward of the unpadded sequence,
    encoded alone by the processor (no positions passed: the model computes its own)."""
    enc = processor(text=format_prompts(processor, [record], data_cfg), images=[images], return_tensors="pt")
    prompt_len = enc["input_ids"].shape[1]
    inputs = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}
    inputs["input_ids"] = torch.cat([enc["input_ids"], answer[None]], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    for key, by_family in ANSWER_TOKEN_TYPE.items():
        if key in inputs:
            value = by_family.get(lm.config.model_type, 0)
            inputs[key] = torch.cat([inputs[key], inputs[key].new_full((1, len(answer)), value)], 1)
    logits = lm(**inputs).logits[0, prompt_len - 1 : -1].float()
    return logits.log_softmax(-1).gather(-1, answer[:, None]).squeeze(-1)


def check_invariant(model_dir: Path, records_path: Path, lazy: bool) -> float:
    """Max |trainer log-prob − plain forward| over the student (full image) and the crop teacher."""
    data_cfg = OmegaConf.structured(DataConfig(path=str(records_path)))
    cropper = Cropper(OmegaConf.structured(TeacherConfig()), data_cfg)
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
    return worst


@pytest.mark.parametrize("model_type", sorted(BUILDERS))
def test_trainer_log_probs_equal_a_plain_forward(model_type, records_dir, tmp_path):
    worst = check_invariant(build(model_type, tmp_path / model_type), records_dir / "records.jsonl", lazy=model_type != "llava")
    print(f"{model_type}: max |error| {worst:.2e}")
