"""The shared language-model layer: the log-probs the trainer trains on are a plain Hugging Face
forward's, for text and image-text students, lazy and full logits; the teacher kinds it offers
score the teacher view; importing an LM domain registers no other domain."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from test_vision_fixtures import _one_thread, tiny_vision  # noqa: F401
from unified_opd.data import read_jsonl
from unified_opd.domains.lm import Sampling, lm_teacher_view, load_causal_lm
from unified_opd.domains.text.config import DataConfig as TextDataConfig
from unified_opd.domains.text.policy import TextPolicy
from unified_opd.domains.vision.config import DataConfig, TeacherConfig
from unified_opd.domains.vision.crops import Cropper
from unified_opd.domains.vision.data import load_records
from unified_opd.domains.vision.generation import ViewBuilder
from unified_opd.domains.vision.models import load_vision_lm
from unified_opd.domains.vision.policy import VisionPolicy
from unified_opd.self_teachers import frozen_copy


def plain_token_log_probs(lm, view, row: int, **images) -> torch.Tensor:
    """log p(token t+1 | tokens ≤ t) of one row from a plain HF forward of its unpadded sequence."""
    keep = view["attention_mask"][row].bool()
    ids = view["input_ids"][row][keep][None]
    logits = lm(input_ids=ids, **images).logits[0, :-1].float()
    return logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)


def check_matches_plain_forward(policy, rollout, images_of_row=lambda row: {}) -> None:
    got = policy.distribution(rollout).log_prob(rollout.actions).detach()
    view = rollout.student_view
    for row in range(rollout.actions.shape[0]):
        # positions of the unpadded sequence: the left padding is cut from the front
        start = int((view["attention_mask"][row] == 0).long().cumprod(-1).sum())
        plain = plain_token_log_probs(policy.lm, view, row, **images_of_row(row))
        mask = rollout.loss_mask[row].bool()
        assert mask.any()
        idx = mask.nonzero().squeeze(-1)
        torch.testing.assert_close(got[row, idx], plain[idx - start], atol=1e-5, rtol=0)


@pytest.mark.parametrize("lazy", [True, False])
def test_text_log_probs_equal_a_plain_forward(tiny_text, lazy):
    lm, tok = load_causal_lm(str(tiny_text / "student"), "float32", False, "student")
    data_cfg = OmegaConf.structured(TextDataConfig(path=str(tiny_text / "train.jsonl")))
    records = read_jsonl(str(tiny_text / "train.jsonl"), ("prompt",))[:6]
    policy = TextPolicy(lm, tok, data_cfg, Sampling(num_samples=2, max_new_tokens=4), lazy)
    torch.manual_seed(0)
    rollout = policy.rollout(records)
    assert (rollout.student_view["attention_mask"] == 0).any()  # left padding and post-EOS padding are exercised
    check_matches_plain_forward(policy, rollout)


@pytest.mark.parametrize("lazy", [True, False])
def test_vision_log_probs_equal_a_plain_forward(tiny_vision, lazy):  # noqa: F811
    data_cfg = OmegaConf.structured(DataConfig(path=str(tiny_vision / "train.jsonl")))
    lm, processor = load_vision_lm(str(tiny_vision / "student"), "float32", False, "student")
    records, _ = load_records(str(tiny_vision / "train.jsonl"), data_cfg, None)
    policy = VisionPolicy(lm, processor, data_cfg, Sampling(num_samples=2, max_new_tokens=3), lazy)
    torch.manual_seed(0)
    rollout = policy.rollout(records[:4], with_teacher_view=False)
    images = rollout.student_view["images"]
    check_matches_plain_forward(policy, rollout, lambda row: {k: v[row : row + 1] for k, v in images.items()})


def test_live_view_scores_with_the_students_module_and_a_frozen_copy_does_not_follow_it(tiny_vision):  # noqa: F811
    data_cfg = OmegaConf.structured(DataConfig(path=str(tiny_vision / "train.jsonl")))
    cropper = Cropper(OmegaConf.structured(TeacherConfig()), data_cfg)
    lm, processor = load_vision_lm(str(tiny_vision / "student"), "float32", False, "student")
    records, _ = load_records(str(tiny_vision / "train.jsonl"), data_cfg, cropper)
    policy = VisionPolicy(lm, processor, data_cfg, Sampling(num_samples=1, max_new_tokens=2), teacher_view=ViewBuilder(processor, data_cfg, cropper))
    live, frozen = lm_teacher_view(policy.module), lm_teacher_view(frozen_copy(policy.module))
    r = policy.rollout(records[:2])
    assert torch.allclose(live.distribution(r).log_probs(), frozen.distribution(r).log_probs())
    assert all(p.requires_grad for p in policy.lm.parameters())  # the live view freezes nothing
    with torch.no_grad():
        for p in policy.lm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert not torch.allclose(live.distribution(r).log_probs(), frozen.distribution(r).log_probs())


@pytest.mark.parametrize("domain", ["vision", "agent"])
def test_importing_a_domain_registers_no_other_domain(domain):
    code = (
        f"import sys, unified_opd.domains.{domain}\n"
        "from unified_opd.domain import DOMAINS\n"
        "from unified_opd.zoo import ZOO\n"
        f"assert sorted(DOMAINS._items) == [{domain!r}], sorted(DOMAINS._items)\n"
        "assert 'arith' not in ZOO._items\n"
        "assert not [m for m in sys.modules if m.startswith('unified_opd.domains.text')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_the_lm_layer_registers_nothing():
    code = (
        "import unified_opd.domains.lm\n"
        "from unified_opd.domain import DOMAINS\n"
        "from unified_opd.zoo import ZOO\n"
        "assert not DOMAINS._items and not ZOO._items\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_graph_runs_domains_to_the_lm_layer_to_the_core():
    """No domain package imports another; the LM layer imports no domain (ast of every module)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "domains"
    bad = []
    for path in sorted(root.glob("*/**/*.py")):
        own = path.relative_to(root).parts[0]
        allowed = {own} if own == "lm" else {own, "lm"}
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                parts = name.split(".")
                if parts[:2] == ["unified_opd", "domains"] and len(parts) > 2 and parts[2] not in allowed:
                    bad.append(f"{path.relative_to(root)} imports {name}")
    assert not bad, bad
