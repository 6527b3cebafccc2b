"""The zoo cache: an entry is built once per version; a cache from another version, or an
interrupted build, is never served as the current entry."""

from __future__ import annotations

import pytest

from unified_opd import zoo
from unified_opd.cli import main

BUILDS = []


@zoo.register_zoo("cache_probe", version=1)
def _probe_builder(dest):
    BUILDS.append(_probe_builder.zoo_version)
    if _probe_builder.zoo_version < 0:
        raise RuntimeError("build failed")
    (dest / "model.txt").write_text(f"v{_probe_builder.zoo_version}")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("UOPD_HOME", str(tmp_path))
    monkeypatch.setattr(_probe_builder, "zoo_version", 1)
    BUILDS.clear()
    return tmp_path / "zoo"


def test_an_entry_is_built_once_per_version(home, capsys):
    dest = zoo.build("cache_probe")
    assert zoo.build("cache_probe") == dest and BUILDS == [1]
    assert zoo.cached_version(dest) == 1
    _probe_builder.zoo_version = 2
    zoo.build("cache_probe")
    assert BUILDS == [1, 2] and (dest / "model.txt").read_text() == "v2"
    message = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "the cache holds version 1, this code builds version 2; rebuilding" in message


def test_markers_from_before_versions_count_as_version_1(home):
    dest = home / "cache_probe"
    dest.mkdir(parents=True)
    (dest / zoo.DONE).write_text("ok\n")
    assert zoo.cached_version(dest) == 1
    zoo.build("cache_probe")
    assert BUILDS == []
    _probe_builder.zoo_version = 3
    zoo.resolve("zoo:cache_probe/model.txt", "teacher.path")
    assert BUILDS == [3]


def test_a_failed_rebuild_keeps_the_previous_cache(home):
    dest = zoo.build("cache_probe")
    _probe_builder.zoo_version = -1
    with pytest.raises(RuntimeError):
        zoo.build("cache_probe")
    assert (dest / "model.txt").read_text() == "v1" and zoo.cached_version(dest) == 1
    assert [p.name for p in home.iterdir()] == ["cache_probe"]


def test_zoo_list_reports_stale_entries(home, capsys):
    zoo.build("cache_probe")
    _probe_builder.zoo_version = 2
    assert main(["zoo", "list"]) == 0
    lines = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert lines["cache_probe"] == "stale (version 1, now 2)"
    assert lines["keydoor"] == "not built"
