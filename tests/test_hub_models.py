"""Models by Hub id: `student.path` / `teacher.path` as `owner/name` go through the Hugging Face
cache at `student.revision` / `teacher.revision`; offline, a one-line error naming the id, exit 2,
fast, nothing written. A local directory that looks like `owner/name` still loads as a directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from chat_fixtures import build_chat_pair
from test_text_data import overrides
from unified_opd.domains.lm import loading
from unified_opd.errors import UserError
from unified_opd.hub import looks_like_hub_id


@pytest.fixture(scope="module")
def chat_pair(tmp_path_factory):
    return build_chat_pair(tmp_path_factory.mktemp("hub_pair"))


def _cli(argv, env, cwd=None):
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "unified_opd.cli", *argv], capture_output=True, text=True, env=env, cwd=cwd)
    return p, time.monotonic() - start


@pytest.mark.parametrize("field", ["student.path", "teacher.path"])
def test_offline_hub_model_is_a_one_line_error_through_the_cli(chat_pair, tmp_path, field):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    config = tmp_path / "text.yaml"
    config.write_text("domain: text\n")
    rev = field.replace(".path", ".revision")
    argv = ["train", str(config), *overrides(chat_pair, tmp_path / "run", **{field: "Qwen/Qwen3-0.6B", rev: "v1"})]
    p, took = _cli(argv, env)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2, p.stderr
    assert took < 10
    assert len(lines) == 1 and f"{field}: Hub model 'Qwen/Qwen3-0.6B' at revision 'v1' cannot be fetched" in lines[0], p.stderr
    assert "HF_HUB_OFFLINE" in lines[0] and f"set {field}=DIR" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_hub_id_is_passed_to_from_pretrained_with_its_revision(chat_pair, monkeypatch):
    monkeypatch.setattr(loading, "check_hub_model", lambda repo, revision, field: None)  # as if online
    seen = []

    def fake(auto_class, local, field, what, **kwargs):
        seen.append((local, kwargs.get("revision")))
        raise UserError("stop before any download")

    monkeypatch.setattr(loading, "load_pretrained", fake)
    with pytest.raises(UserError, match="stop before"):
        loading.load_causal_lm("owner/tiny-lm", "float32", False, "student", revision="abc123")
    assert seen == [("owner/tiny-lm", "abc123")]


def test_a_local_directory_named_like_a_hub_id_still_loads_as_before(chat_pair, monkeypatch):
    monkeypatch.chdir(chat_pair.parent)
    local = f"{chat_pair.name}/student"  # `owner/name`-shaped, but a directory here
    assert not looks_like_hub_id(local)
    model, tok = loading.load_causal_lm(local, "float32", False, "student")
    assert model.config.model_type == "qwen3" and tok.padding_side == "left"


def test_a_missing_local_path_is_still_path_not_found(tmp_path):
    with pytest.raises(UserError, match="student.path: path not found"):
        loading.load_causal_lm(str(tmp_path / "nope" / "model"), "float32", False, "student")
