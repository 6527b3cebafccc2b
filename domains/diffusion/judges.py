"""Judges of generated images: `judge(images, conditions, prefix) -> metrics`.

* `DigitJudge` (class conditions): the digit classifier's class-conditional accuracy `acc`
  (overall and per expert's classes) and the Fréchet distance `fd` of its features to the real
  digits.
* `AttributeJudge` (prompts; GenEval in miniature): one classifier whose logits are split into
  attribute groups (colour, shape, position); a sample follows its prompt when every attribute
  named in the prompt is the classifier's argmax. `score` is that rate (GenEval's per-image
  all-correct rule), `acc/<attribute>` each attribute's accuracy, and `fd` the Fréchet distance
  of its features to rendered references of the same prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from unified_opd.errors import UserError

from .metrics import feature_stats, frechet_distance

ATTRIBUTES_FILE = "attributes.json"
REFERENCE_FILE = "reference.safetensors"


def group_name(classes: Sequence[int]) -> str:
    """`classes_0-4` for a contiguous range, `classes_1_3_7` otherwise."""
    c = sorted(classes)
    if c == list(range(c[0], c[-1] + 1)) and len(c) > 1:
        return f"classes_{c[0]}-{c[-1]}"
    return "classes_" + "_".join(map(str, c))


def _fd(features: Tensor, real_stats) -> float:
    return frechet_distance(*feature_stats(features.cpu()), *real_stats)


class DigitJudge:
    def __init__(self, classifier, real_images: Tensor, groups: List[List[int]], classes: Sequence[int]):
        self.classifier = classifier
        self.groups = [g for g in groups if set(g) & set(classes)]
        with torch.no_grad():
            self.real_stats = feature_stats(classifier.features(real_images))

    @torch.no_grad()
    def __call__(self, images: Tensor, labels: Tensor, prefix: str = "") -> Dict[str, float]:
        clf = self.classifier.to(images.device)
        feats = clf.features(images)
        correct = (clf.head(feats).argmax(-1) == labels).float()
        out = {f"{prefix}acc": float(correct.mean())}
        for g in self.groups:
            m = torch.isin(labels, torch.tensor(g, device=labels.device))
            out[f"{prefix}acc/{group_name(g)}"] = float(correct[m].mean())
        out[f"{prefix}fd"] = _fd(feats, self.real_stats)
        return out


def parse_attributes(prompt: str, attributes: Dict[str, List[str]]) -> Dict[str, int]:
    """{attribute: index of the value named in the prompt}; the longest matching phrase wins
    ("top left" over "left"); attributes the prompt does not name are left out."""
    text = f" {prompt.lower()} "
    out = {}
    for name, values in attributes.items():
        hits = [(len(v), i) for i, v in enumerate(values) if f" {v} " in text]
        if hits:
            out[name] = max(hits)[1]
    return out


class AttributeJudge:
    """A classifier with `sum(len(values))` logits, grouped by attribute in `attributes` order."""

    def __init__(self, classifier, attributes: Dict[str, List[str]], reference: Dict[str, Tensor]):
        self.classifier = classifier
        self.attributes = {k: list(v) for k, v in attributes.items()}
        self.reference = reference  # prompt -> rendered reference images [n, C, H, W]
        self.real_stats = None

    def logits_by_attribute(self, logits: Tensor) -> Dict[str, Tensor]:
        out, start = {}, 0
        for name, values in self.attributes.items():
            out[name] = logits[:, start : start + len(values)]
            start += len(values)
        return out

    def _real_stats(self, prompts: Sequence[str]):
        if self.real_stats is None:
            missing = sorted(set(prompts) - set(self.reference))
            if missing:
                raise UserError(f"eval.prompts: the judge has no reference images for {missing[:3]}")
            real = torch.cat([self.reference[p] for p in dict.fromkeys(prompts)])
            with torch.no_grad():
                self.real_stats = feature_stats(self.classifier.features(real))
        return self.real_stats

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: Sequence[str], prefix: str = "") -> Dict[str, float]:
        clf = self.classifier.to(images.device)
        feats = clf.features(images)
        groups = self.logits_by_attribute(clf.head(feats))
        targets = [parse_attributes(p, self.attributes) for p in prompts]
        ok = torch.ones(len(prompts), dtype=torch.bool)
        out = {}
        for name, logits in groups.items():
            named = torch.tensor([name in t for t in targets])
            want = torch.tensor([t.get(name, -1) for t in targets])
            hit = logits.argmax(-1).cpu() == want
            ok &= hit | ~named
            if named.any():
                out[f"{prefix}acc/{name}"] = float(hit[named].float().mean())
        out[f"{prefix}score"] = float(ok.float().mean())
        out[f"{prefix}fd"] = _fd(feats, self._real_stats(prompts))
        return out


def save_attribute_judge(path: Path, attributes: Dict[str, List[str]], reference: Dict[str, Tensor]) -> None:
    """Next to the classifier: the attribute table and the reference images (uint8) per prompt."""
    path = Path(path)
    prompts = list(reference)
    (path / ATTRIBUTES_FILE).write_text(json.dumps({"attributes": attributes, "prompts": prompts}, indent=1))
    stacked = torch.stack([((reference[p].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) for p in prompts])
    save_file({"reference": stacked.contiguous()}, str(path / REFERENCE_FILE))


def load_attribute_judge(path: str, field: str, classifier) -> AttributeJudge:
    f = Path(path) / ATTRIBUTES_FILE
    if not f.is_file() or not (Path(path) / REFERENCE_FILE).is_file():
        raise UserError(f"{field}: {path} is not a prompt-following judge ({ATTRIBUTES_FILE} + {REFERENCE_FILE})")
    table = json.loads(f.read_text())
    images = load_file(str(Path(path) / REFERENCE_FILE))["reference"].float() / 127.5 - 1
    return AttributeJudge(classifier, table["attributes"], dict(zip(table["prompts"], images)))
