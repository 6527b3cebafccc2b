"""Vision domain units: crop box mapping and clipping, the teacher view, loss masking of image
tokens, EMA, and bad input (corrupt images, boxes outside the image, image-less prompts,
mismatched processors) as clear errors."""

from __future__ import annotations

import re
import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from test_vision_fixtures import STUDENT, _one_thread, tiny_vision, vision_overrides, write_records  # noqa: F401
from unified_opd.cli import main as cli_main
from unified_opd.config import load_config
from unified_opd.domain import schema_for
from unified_opd.domains.lm import LMTeacher, Sampling
from unified_opd.domains.vision.zoo import finedetail_data as finedetail
from unified_opd.domains.vision.config import DataConfig, TeacherConfig
from unified_opd.domains.vision.crops import BoxError, Cropper, clip, crop_box, crop_image, grow, slide_inside, to_pixels
from unified_opd.domains.vision.data import load_image, load_records
from unified_opd.domains.vision.generation import ViewBuilder
from unified_opd.domains.vision.models import load_vision_lm
from unified_opd.domains.vision.policy import VisionPolicy
from unified_opd.domains.vision.zoo.tiny import TinySpec, build_processor, build_tokenizer, save_tiny
from unified_opd.errors import UserError
from unified_opd.self_teachers import ema_update
from unified_opd.trainer import Trainer


# ------------------------------------------------------------------ crop boxes
def test_box_mapping_from_normalized_and_pixels():
    assert to_pixels([0.25, 0.5, 0.75, 1.0], 200, 100, "normalized") == (50.0, 50.0, 150.0, 100.0)
    assert to_pixels([1, 2, 3, 4], 200, 100, "pixels") == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(BoxError, match="empty"):
        to_pixels([5, 5, 5, 9], 10, 10, "pixels")
    with pytest.raises(BoxError, match="expected"):
        to_pixels([1, 2, 3], 10, 10, "pixels")


def test_grow_adds_margin_then_squares_about_the_centre():
    # 10x4 box, margin 0.5: 20x8 about the centre (15, 12); square: 20x20
    assert grow((10, 10, 20, 14), 0.5, False) == (5.0, 8.0, 25.0, 16.0)
    assert grow((10, 10, 20, 14), 0.5, True) == (5.0, 2.0, 25.0, 22.0)


def test_slide_inside_keeps_size_and_clip_cuts_to_the_image():
    assert slide_inside((-4, 90, 16, 110), 100, 100) == (0, 80, 20, 100)
    assert slide_inside((-10, 0, 110, 20), 100, 100) == (-10.0, 0, 110.0, 20)  # wider than the image: centred
    assert clip((-10.2, 0, 110.0, 20.5), 100, 100) == (0, 0, 100, 21)
    with pytest.raises(BoxError, match="outside"):
        clip((120, 0, 130, 10), 100, 100)


def test_crop_box_end_to_end_and_out_of_image_box():
    # 16 px box at the right edge of a 64 px image, margin 0.25 -> 24 px square slid back inside
    assert crop_box([48, 20, 64, 36], 64, 64, "pixels", 0.25, True) == (40, 16, 64, 40)
    # partly outside: the box is clipped, the crop stays inside the image
    assert crop_box([56, 56, 72, 72], 64, 64, "pixels", 0.0, True) == (48, 48, 64, 64)
    with pytest.raises(BoxError, match="outside"):
        crop_box([70, 70, 80, 80], 64, 64, "pixels", 0.25, True)


def test_crop_image_content_and_upscale():
    image = Image.new("RGB", (8, 8), "white")
    image.putpixel((5, 2), (255, 0, 0))
    out = crop_image(image, (4, 1, 8, 5), 1.0)
    assert out.size == (4, 4) and out.getpixel((1, 1)) == (255, 0, 0)
    assert crop_image(image, (4, 1, 8, 5), 2.5).size == (10, 10)


# ------------------------------------------------------------------ finedetail task


def test_held_out_pairs_are_a_fifth_of_each_glyph_and_position():
    pairs = [(x, y, g) for x in finedetail.GRID for y in finedetail.GRID for g in finedetail.GLYPHS]
    held = [(x, y, g) for x, y, g in pairs if finedetail.held_out_pair(x, y, g)]
    assert len(held) * 5 == len(pairs)
    for g in finedetail.GLYPHS:
        assert sum(h[2] == g for h in held) == len(finedetail.GRID) ** 2 // 5
    for x in finedetail.GRID:
        for y in finedetail.GRID:
            assert 0 < sum(h[:2] == (x, y) for h in held) < len(finedetail.GLYPHS)


def test_finedetail_splits_are_disjoint_and_glyph_cells_sit_on_the_patch_grid(tmp_path):
    split = {}
    for held_out in (True, False):
        recs = finedetail.make_records(40, seed=3, image_dir=tmp_path / "images", prefix=f"h{held_out}", held_out=held_out)
        for r in recs:
            x0, y0, x1, y1 = r["box"]
            cell = (x0 + finedetail.FRAME, y0 + finedetail.FRAME)
            assert cell[0] % finedetail.PATCH == 0 and cell[1] % finedetail.PATCH == 0
            assert 0 <= x0 and x1 <= finedetail.CANVAS and 0 <= y0 and y1 <= finedetail.CANVAS
            assert finedetail.held_out_pair(*cell, r["answer"]) == held_out
            image = Image.open(tmp_path / r["image"]).convert("RGB")
            assert len(image.crop(r["box"]).getcolors()) > 1  # the frame and glyph are in the box
            left = image.crop((0, 0, x0, finedetail.CANVAS))
            assert len(left.getcolors()) == 1  # plain background outside it
        split[held_out] = {(*r["box"][:2], r["answer"]) for r in recs}
    assert not split[True] & split[False]


def test_tiny_init_std_sets_every_projection_init():
    tok = build_tokenizer(finedetail.WORDS)
    for std in (0.02, 0.1):
        torch.manual_seed(0)
        model = TinySpec(image_size=16, patch_size=8, init_std=std).build(tok)
        w = dict(model.named_parameters())
        for name in ("model.vision_tower.embeddings.patch_embedding.weight", "model.multi_modal_projector.linear_1.weight",
                     "model.language_model.layers.0.self_attn.v_proj.weight", "lm_head.weight"):
            assert abs(w[name].std().item() - std) < 0.25 * std, (name, std)


def test_ema_update_formula():
    t, s = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    ema_update(t, s, 0.75)
    assert torch.allclose(t, torch.tensor([1.5, 1.0]))


# ------------------------------------------------------------------ views and masks
def _policy(root: Path, view_processor=None, transform="crop"):
    data_cfg = OmegaConf.structured(DataConfig(path=str(root / "train.jsonl")))
    cropper = Cropper(OmegaConf.structured(TeacherConfig()), data_cfg)
    lm, processor = load_vision_lm(str(root / "student"), "float32", False, "student")
    records, _ = load_records(str(root / "train.jsonl"), data_cfg, cropper)
    view = ViewBuilder(view_processor or processor, data_cfg, cropper if transform == "crop" else None)
    return VisionPolicy(lm, processor, data_cfg, Sampling(num_samples=2, max_new_tokens=3), teacher_view=view), records


def test_crop_view_differs_from_the_student_view_only_in_the_image(tiny_vision):
    policy, records = _policy(tiny_vision)
    r = policy.rollout(records[:4])
    s, t = r.student_view, r.teacher_view
    assert torch.equal(s["input_ids"], t["input_ids"]) and torch.equal(s["attention_mask"], t["attention_mask"])
    assert s["prompt_len"] == t["prompt_len"]
    assert s["images"]["pixel_values"].shape == t["images"]["pixel_values"].shape == (8, 3, 16, 16)
    for i in range(8):
        assert not torch.equal(s["images"]["pixel_values"][i], t["images"]["pixel_values"][i])
    # the crop teacher's pixels are the processor's encoding of the cropper's image
    proc = policy.processor
    rec = r.meta["records"][0]
    expected = proc.image_processor(Cropper(OmegaConf.structured(TeacherConfig()), policy.data_cfg)(rec, load_image(rec)), return_tensors="pt")
    assert torch.allclose(t["images"]["pixel_values"][0], expected["pixel_values"][0])


def test_full_view_with_another_processor_keeps_the_completion_aligned(tiny_vision):
    teacher_processor = load_vision_lm(str(tiny_vision / "teacher"), "float32", False, "teacher")[1]
    policy, records = _policy(tiny_vision, teacher_processor, transform=None)
    r = policy.rollout(records[:3])
    s, t = r.student_view, r.teacher_view
    assert t["images"]["pixel_values"].shape[-1] == 32 and t["prompt_len"] == s["prompt_len"] + 12  # 16 vs 4 image tokens
    assert torch.equal(s["input_ids"][:, s["prompt_len"] :], t["input_ids"][:, t["prompt_len"] :])
    image = policy.processor.image_token_id
    for a, b in zip(s["input_ids"], t["input_ids"]):  # same text once image tokens are removed
        assert torch.equal(a[a != image], b[b != image])
    # alignment: the teacher's distribution has the student's positions
    t_lm = load_vision_lm(str(tiny_vision / "teacher"), "float32", False, "teacher")[0]
    assert LMTeacher(t_lm).distribution(r).log_probs().shape[:2] == r.loss_mask.shape


def test_image_tokens_are_masked_out_of_the_loss(tiny_vision):
    policy, records = _policy(tiny_vision)
    r = policy.rollout(records[:4])
    image = policy.processor.image_token_id
    targets = r.student_view["input_ids"][:, 1:]
    assert (targets == image).any()
    assert not r.loss_mask[targets == image].any()
    assert r.loss_mask[:, : r.student_view["prompt_len"] - 1].sum() == 0
    assert r.loss_mask.sum() > 0


def test_the_image_placeholder_is_never_generated(tiny_vision):
    policy, records = _policy(tiny_vision)
    lm = policy.lm
    image, eos = policy.processor.image_token_id, policy.processor.tokenizer.eos_token_id
    # every hidden state is zero and the head prefers the placeholder, then EOS
    lm.model.language_model.norm.weight.data.zero_()
    head = torch.nn.Linear(lm.lm_head.in_features, lm.lm_head.out_features, bias=True)
    head.weight.data.zero_()
    head.bias.data.zero_()
    head.bias.data[image], head.bias.data[eos] = 10.0, 5.0
    lm.lm_head = head
    r = policy.rollout(records[:2], Sampling(num_samples=1, max_new_tokens=2, greedy=True))
    gen = r.student_view["input_ids"][:, r.student_view["prompt_len"] :]
    assert (gen != image).all() and (gen[:, 0] == eos).all()


# ------------------------------------------------------------------ bad input
def _build(root, out, **extra):
    return Trainer(load_config(None, vision_overrides(root, out, **extra), schema_for))


def _bad_data(root: Path, tmp: Path, edit) -> Path:
    records = [json.loads(x) for x in open(root / "train.jsonl")][:6]
    for r in records:
        r["image"] = str(root / r["image"])
    edit(records, tmp)
    return write_records(tmp / "bad.jsonl", records)


def _corrupt(records, tmp):
    (tmp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    records[2]["image"] = str(tmp / "broken.png")


def test_corrupt_image_is_an_error_naming_record_and_field_and_nothing_is_written(tiny_vision, tmp_path):
    bad = _bad_data(tiny_vision, tmp_path, _corrupt)
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"data.path: record 2 of .*bad.jsonl, field 'image': cannot read image"):
        _build(tiny_vision, out, **{"data.path": bad})
    assert not out.exists()


def test_bad_records_can_be_skipped_and_counted(tiny_vision, tmp_path):
    def edit(records, tmp):
        _corrupt(records, tmp)
        records[4]["box"] = [500, 500, 510, 510]

    bad = _bad_data(tiny_vision, tmp_path, edit)
    cfg = OmegaConf.structured(DataConfig(path=str(bad), on_error="skip"))
    records, skipped = load_records(str(bad), cfg, Cropper(OmegaConf.structured(TeacherConfig()), cfg))
    assert skipped == 2 and len(records) == 4


def test_box_outside_the_image_and_missing_image_are_errors(tiny_vision, tmp_path):
    def outside(records, tmp):
        records[1]["box"] = [100, 100, 120, 120]

    with pytest.raises(UserError, match=r"record 1 .* field 'box': .* outside the 64x64 image"):
        _build(tiny_vision, tmp_path / "a", **{"data.path": _bad_data(tiny_vision, tmp_path, outside)})

    def no_image(records, tmp):
        del records[3]["image"]

    with pytest.raises(UserError, match=r"record 3 .* field 'image': .*needs an image"):
        _build(tiny_vision, tmp_path / "b", **{"data.path": _bad_data(tiny_vision, tmp_path, no_image)})


def test_cli_exits_with_code_2_on_bad_input(tiny_vision, tmp_path, capsys):
    bad = _bad_data(tiny_vision, tmp_path, _corrupt)
    args = ["train", str(Path(__file__).parents[1] / "configs/vision/vision_opd_finedetail.yaml")]
    code = cli_main(args + vision_overrides(tiny_vision, tmp_path / "run", **{"data.path": bad}))
    assert code == 2 and "field 'image'" in capsys.readouterr().err


def test_mismatched_processor_and_vocabulary_are_errors(tiny_vision, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(tiny_vision / "student", odd)
    build_processor(build_tokenizer(["what", "is"]), 16, 4).save_pretrained(odd)  # patch 4: 16 image tokens, not 4
    with pytest.raises(UserError, match="student.path: .*mismatched processor"):
        _build(tiny_vision, tmp_path / "a", **{"student.path": odd})

    other_vocab = tmp_path / "other_vocab"
    save_tiny(other_vocab, STUDENT, ["what", "is", "extra", "words"], seed=0)
    with pytest.raises(UserError, match="teacher.path: vocabulary size"):
        _build(tiny_vision, tmp_path / "b", **{"teacher.kind": "model", "teacher.path": other_vocab, "teacher.view": "full"})


@pytest.mark.parametrize(
    "override, new",
    [("teacher.source=ema", "teacher.kind: self with teacher.ema"), ("teacher.ema_decay=0.9", "teacher.ema"),
     ("teacher.path=somewhere", "set teacher.kind=model")],
)
def test_old_teacher_keys_name_their_replacement_before_any_load(override, new):
    from unified_opd.config import load_config
    from unified_opd.domain import get_domain, schema_for
    from unified_opd.errors import ConfigError

    cfg = load_config("configs/vision/vision_opd_finedetail.yaml", [override], schema_for)
    with pytest.raises(ConfigError, match=re.escape(new)):
        get_domain("vision").check(cfg)
