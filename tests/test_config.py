"""Config loading: unknown keys, wrong types, missing values and bad overrides name the key."""

from __future__ import annotations

import pytest

from unified_opd.config import load_config
from unified_opd.domain import schema_for
from unified_opd.errors import ConfigError

BASE = ["student.path=s", "teacher.path=t", "data.path=d"]


def test_shipped_configs_load():
    for path in ("configs/text/opd_arith.yaml", "configs/text/full_vocab_arith.yaml"):
        cfg = load_config(path, [], schema_for)
        assert cfg.student.path.startswith("zoo:")
    cfg = load_config("configs/text/opd_arith.yaml", ["divergence.name=jsd", "trainer.max_steps=7"], schema_for)
    assert cfg.divergence.name == "jsd" and cfg.trainer.max_steps == 7


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_stepz=3"], r"trainer\.max_stepz: unknown config key"),
        (["trainer.max_steps=lots"], r"trainer\.max_steps: expected int, got 'lots'"),
        (["rollout.temperature=hot"], r"rollout\.temperature: expected float"),
        (["trainer.max_steps"], r"expected dotted\.key=value"),
        (["studnt.path=x"], r"studnt: unknown config key"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, BASE + overrides, schema_for)


def test_missing_required_value():
    with pytest.raises(ConfigError, match=r"student\.path: required value is missing"):
        load_config(None, ["teacher.path=t", "data.path=d"], schema_for)


def test_unknown_domain_suggests():
    with pytest.raises(ConfigError, match="did you mean 'text'"):
        load_config(None, ["domain=txt"], schema_for)


def test_yaml_unknown_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("student:\n  path: a\n  lr: 3\n")
    with pytest.raises(ConfigError, match=r"student\.lr: unknown config key"):
        load_config(str(p), [], schema_for)


def test_defaults_are_merged_first_and_the_file_overrides_them(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "common.yaml").write_text(
        "student: {path: s}\nteacher: {path: t}\ndata: {path: d}\ntrainer: {max_steps: 5, lr: 0.5, betas: [0.1, 0.2]}\n"
    )
    (tmp_path / "seed.yaml").write_text("defaults: [base/common.yaml]\ntrainer: {seed: 3}\n")
    (tmp_path / "recipe.yaml").write_text("defaults: [seed.yaml]\ntrainer: {max_steps: 9, betas: [0.3, 0.4]}\n")
    cfg = load_config(str(tmp_path / "recipe.yaml"), ["trainer.lr=0.25"], schema_for)
    assert (cfg.trainer.max_steps, cfg.trainer.seed, cfg.trainer.lr) == (9, 3, 0.25)
    assert list(cfg.trainer.betas) == [0.3, 0.4]  # a list replaces the base's list
    assert cfg.student.path == "s" and "defaults" not in cfg


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.yaml": "defaults: [missing.yaml]\n"}, r"a\.yaml: defaults: file not found: .*missing\.yaml"),
        ({"a.yaml": "defaults: [b.yaml]\n", "b.yaml": "defaults: [a.yaml]\n"}, r"defaults form a cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"),
        ({"a.yaml": "defaults: {x: 1}\n"}, r"defaults: expected a list of YAML file paths"),
    ],
)
def test_bad_defaults_name_the_file(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(tmp_path / "a.yaml"), [], schema_for)


def test_every_text_recipe_holds_only_what_differs_from_its_base():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "configs" / "text"
    base = yaml.safe_load((root / "base" / "arith.yaml").read_text())
    # kept on purpose: every recipe names its estimator; the router's lr carries a measured comment
    repeated_on_purpose = {("objective", "estimator"), ("multi_router_arith", "trainer", "lr")}
    for recipe in sorted(root.glob("*.yaml")):
        raw = yaml.safe_load(recipe.read_text())
        assert raw["defaults"] == ["base/arith.yaml"], recipe.name
        for section, values in raw.items():
            for key, value in values.items() if isinstance(values, dict) else ():
                if {(section, key), (recipe.stem, section, key)} & repeated_on_purpose:
                    continue
                assert base.get(section, {}).get(key, object()) != value, (recipe.name, section, key)


# kept on purpose: every text recipe names its estimator; the router's lr carries a measured comment
REPEATED_ON_PURPOSE = {("objective", "estimator"), ("multi_router_arith", "trainer", "lr")}


@pytest.mark.parametrize("domain", ["text", "vision", "agent", "diffusion"])
def test_every_recipe_and_base_holds_only_what_differs_from_its_defaults(domain):
    from pathlib import Path

    import yaml
    from omegaconf import OmegaConf

    from unified_opd.config import read_yaml

    root = Path(__file__).resolve().parents[1] / "configs" / domain
    recipes = sorted(root.glob("*.yaml"))
    assert recipes, root
    for path in recipes + sorted(root.glob("base/*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if path.parent == root:  # a recipe: built on one or more of the folder's bases
            assert raw.get("defaults") and all(d.startswith("base/") for d in raw["defaults"]), path.name
        bases = [OmegaConf.to_container(read_yaml(str(path.parent / d))) for d in raw.get("defaults", [])]
        base = OmegaConf.to_container(OmegaConf.merge({}, *bases))
        for section, values in raw.items():
            if section == "defaults":
                continue
            items = values.items() if isinstance(values, dict) else [(None, values)]
            for key, value in items:
                if {(section, key), (path.stem, section, key)} & REPEATED_ON_PURPOSE:
                    continue
                inherited = base.get(section, {}).get(key, object()) if key else base.get(section, object())
                assert inherited != value, (path.name, section, key)
