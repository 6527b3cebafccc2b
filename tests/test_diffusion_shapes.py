"""The text-to-image shapes task: renders, prompt parsing, the attribute judge's score by hand,
and the word-level offline tokenizers (the zoo's build itself is exercised by the slow run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unified_opd.domains.diffusion.judges import AttributeJudge, parse_attributes
from unified_opd.domains.diffusion.zoo.shapes import ATTRIBUTES, POSITIONS, WORDS, all_prompts, attribute_targets, render
from unified_opd.domains.diffusion.zoo.tiny_pipelines import char_clip_tokenizer, char_t5_tokenizer


def test_render_puts_the_coloured_shape_in_its_quadrant():
    rng = np.random.default_rng(0)
    for position, (qx, qy) in POSITIONS.items():
        img = render("blue", "square", position, rng)
        assert img.shape == (3, 32, 32) and img.min() >= -1 and img.max() <= 1
        lit = (img + 1).sum(0) > 0.5
        ys, xs = lit.nonzero(as_tuple=True)
        assert (xs // 16 == qx).all() and (ys // 16 == qy).all()
        assert float(img[2][lit].mean()) > float(img[0][lit].mean())  # blue, not red


def test_prompts_parse_to_their_attributes():
    prompts = [p for p, _ in all_prompts()]
    assert len(prompts) == 36 and len(set(prompts)) == 36
    t = attribute_targets(["a green triangle at the bottom left"])
    assert t.tolist() == [[1, 2, 2]]
    assert parse_attributes("a green triangle at the bottom left", ATTRIBUTES) == {"color": 1, "shape": 2, "position": 2}
    assert parse_attributes("a circle", ATTRIBUTES) == {"shape": 0}  # attributes not named are not judged


class FixedLogits(nn.Module):
    """A judge whose logits are given: features = logits, head = identity."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def features(self, x):
        return self.logits

    def head(self, f):
        return f


def test_attribute_judge_score_is_the_all_attributes_correct_rate_by_hand():
    prompts = ["a red circle at the top left", "a blue square at the bottom right", "a green triangle at the top right"]
    # predicted (colour, shape, position): all right; shape wrong; all right
    picks = [(0, 0, 0), (2, 0, 3), (1, 2, 1)]
    logits = torch.zeros(3, 10)
    for i, (c, s, p) in enumerate(picks):
        logits[i, c], logits[i, 3 + s], logits[i, 6 + p] = 5.0, 5.0, 5.0
    ref = {p: torch.zeros(4, 3, 32, 32) for p in prompts}
    judge = AttributeJudge(FixedLogits(logits), ATTRIBUTES, ref)
    judge.real_stats = (logits.double().mean(0), torch.cov(logits.double().T))
    m = judge(torch.zeros(3, 3, 32, 32), prompts)
    assert m["score"] == pytest.approx(2 / 3)
    assert m["acc/color"] == 1.0 and m["acc/shape"] == pytest.approx(2 / 3) and m["acc/position"] == 1.0
    assert m["fd"] == pytest.approx(0.0, abs=1e-4)  # identical feature statistics


def test_word_level_tokenizers_make_each_word_one_token():
    clip, t5 = char_clip_tokenizer(12, WORDS), char_t5_tokenizer(12, WORDS)
    text = "a red circle at the bottom right"
    assert clip.tokenize(text) == [w + "</w>" for w in text.split()]
    assert t5.tokenize(text) == ["▁" + w for w in text.split()]
    assert clip.tokenize("xyz") == ["x", "y", "z</w>"]  # any other text still tokenizes
