"""What a finished run leaves for the ecosystem around it: tracker logs through accelerate
(TensorBoard, W&B in offline mode), the model card in `final/`, and the Hub upload."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from conftest import text_overrides
from unified_opd.cli import main

CONFIG = "configs/text/opd_arith.yaml"


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tracked_run(tiny_text, tmp_path_factory):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    out = tmp_path_factory.mktemp("tracked") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    try:
        args = text_overrides(tiny_text, out, **{"trainer.max_steps": 3, "eval.size": 8})
        assert main(["train", CONFIG, *args, "trainer.report_to=[tensorboard,wandb]"]) == 0
    finally:
        mp.undo()
    return out


def test_tensorboard_gets_every_logged_step(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = [m for m in _metrics(tracked_run) if "loss" in m]
    acc = EventAccumulator(str(tracked_run / "trackers" / "unified_opd"))
    acc.Reload()
    events = acc.Scalars("loss")
    assert [e.step for e in events] == [m["step"] for m in logged]
    assert [e.value for e in events] == pytest.approx([m["loss"] for m in logged], rel=1e-6)


def test_wandb_offline_run_holds_the_metrics_and_config(tracked_run):
    (run_file,) = glob.glob(str(tracked_run / "wandb" / "offline-run-*" / "run-*.wandb"))
    raw = open(run_file, "rb").read()
    # W&B stores each history value as its JSON text: every logged loss must be there verbatim
    for m in _metrics(tracked_run):
        if "loss" in m:
            assert json.dumps(m["loss"]).encode() in raw, m
    assert b"trainer.lr" in raw and b"eval/accuracy" in raw


def test_final_has_a_model_card(tracked_run, tiny_text):
    card = ModelCard.load(tracked_run / "final" / "README.md")
    summary = json.loads((tracked_run / "summary.json").read_text())
    assert card.data.library_name == "transformers"
    assert {"unified_opd", "on-policy-distillation", "text"} <= set(card.data.tags)
    assert card.data.base_model is None  # local paths are not Hub ids
    assert f"`{tiny_text / 'student'}`" in card.text and f"`{tiny_text / 'teacher'}`" in card.text
    before, after = summary["before"]["reverse_kl"], summary["after"]["reverse_kl"]
    assert f"| reverse_kl | {before:.4g} | {after:.4g} |" in card.text
    assert "max_steps: 3" in card.text


def test_push_to_hub_uploads_final(tiny_text, tmp_path, monkeypatch):
    import huggingface_hub

    from unified_opd import trainer_checks

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create", repo_id, private, exist_ok))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/me/{repo_id}")

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload", sorted(p.name for p in Path(folder_path).iterdir()), repo_id))

    monkeypatch.setattr(trainer_checks, "check_can_push", lambda repo: calls.append(("checked", repo)))
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "pushed"
    args = text_overrides(tiny_text, out, **{"trainer.max_steps": 1, "eval.size": 8, "trainer.push_to_hub": True})
    assert main(["train", CONFIG, *args, "trainer.hub_model_id=tiny-opd"]) == 0
    assert calls[0] == ("checked", "tiny-opd")
    assert calls[1] == ("create", "tiny-opd", True, True)
    assert calls[2][0] == "upload" and calls[2][2] == "me/tiny-opd"
    assert {"README.md", "config.json", "model.safetensors"} <= set(calls[2][1])


def test_failed_upload_keeps_the_model(tiny_text, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from unified_opd import trainer_checks

    class Unreachable:
        def create_repo(self, *a, **k):
            raise ConnectionError("connection reset")

    monkeypatch.setattr(trainer_checks, "check_can_push", lambda repo: None)
    monkeypatch.setattr(huggingface_hub, "HfApi", Unreachable)
    out = tmp_path / "run"
    args = text_overrides(tiny_text, out, **{"trainer.max_steps": 1, "eval.size": 8, "trainer.push_to_hub": True})
    assert main(["train", CONFIG, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "trainer.push_to_hub: uploading to 'run' failed (ConnectionError" in err and "hf upload run" in err
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "README.md").is_file()


def test_zero_steps_evaluates_and_exports_the_built_student(tiny_text, tmp_path):
    """`trainer.max_steps=0` is the supervised-only arm of docs/diffusion.md (a cold start, no OPD
    update): the run must still evaluate, export `final/` and leave the weights untouched."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    assert main(["train", CONFIG, *text_overrides(tiny_text, out, **{"trainer.max_steps": 0, "eval.size": 8})]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 0 and summary["before"] == summary["after"]
    before = AutoModelForCausalLM.from_pretrained(tiny_text / "student").state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
