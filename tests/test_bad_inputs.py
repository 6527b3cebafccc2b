"""The bad-input catalogue: each case is one clear line naming the field on stderr, exit code 2,
no traceback, and no file in the output directory changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import save_tiny_lm, text_overrides
from unified_opd.cli import main


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tiny_text, tmp_path_factory):
    """An output directory holding a finished run (checkpoints + final), to check nothing is clobbered."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "configs/text/opd_arith.yaml", *text_overrides(tiny_text, out, **{"trainer.max_steps": 2})]) == 0
    return out


def _files(tmp_path: Path, tiny_text: Path) -> dict:
    """Bad files, made on demand by name."""
    def write(name, text):
        p = tmp_path / name
        p.write_text(text)
        return p

    return {
        "empty": lambda: write("empty.jsonl", ""),
        "bad_json": lambda: write("bad.jsonl", '{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", \n'),
        "no_prompt": lambda: write("noprompt.jsonl", '{"prompt": "1+1="}\n{"question": "2+2="}\n'),
        "not_object": lambda: write("list.jsonl", "[1, 2]\n"),
        "bad_yaml": lambda: write("bad.yaml", "trainer: [unclosed\n"),
        "list_yaml": lambda: write("list.yaml", "- a\n- b\n"),
        "long_prompt": lambda: write("long.jsonl", json.dumps({"prompt": "1+" * 80 + "1=", "answer": "81"}) + "\n"),
        "odd_vocab": lambda: save_tiny_lm(tmp_path / "odd", vocab_extra=5),
        "not_a_model": lambda: (tmp_path / "empty_model").mkdir() or tmp_path / "empty_model",
    }


CASES = [
    # (id, overrides or argv builder, expected text in the error line)
    ("unknown key", {"trainer.max_stepz": 3}, "trainer.max_stepz: unknown config key"),
    ("unknown section", {"optimizer.lr": 3}, "optimizer: unknown config key"),
    ("wrong type int", {"trainer.max_steps": "many"}, "trainer.max_steps: expected int"),
    ("wrong type float", {"trainer.lr": "fast"}, "trainer.lr: expected float"),
    ("wrong type bool", {"trainer.cpu": "maybe"}, "trainer.cpu"),
    ("missing required key", {"student.path": None}, "student.path: required value is missing"),
    ("unknown divergence", {"divergence.name": "reverse_k"}, "did you mean 'reverse_kl'"),
    ("unknown weight", {"objective.weights": "[unifrom]"}, "did you mean 'uniform'"),
    ("unknown verifier", {"data.verifier": "exact"}, "data.verifier"),
    ("unknown estimator", {"objective.estimator": "mc"}, "objective.estimator"),
    ("sampled estimator with jsd", {"objective.estimator": "sampled", "divergence.name": "jsd"}, "objective.estimator"),
    ("jsd beta out of range", {"divergence.name": "jsd", "divergence.beta": 2.0}, "divergence.beta"),
    ("bad lr schedule", {"trainer.lr_schedule": "exp"}, "trainer.lr_schedule"),
    ("lambda without reference", {"objective.lam": 1.5, "divergence.name": "forward_kl"}, "reference"),
    ("zero batch size", {"rollout.batch_size": 0}, "rollout.batch_size"),
    ("negative temperature", {"rollout.temperature": -1.0}, "rollout.temperature"),
    ("bad dtype", {"student.dtype": "float8"}, "student.dtype"),
    ("bad chat template mode", {"data.chat_template": "sometimes"}, "data.chat_template"),
    ("missing model dir", {"student.path": "/nonexistent/student"}, "student.path: path not found"),
    ("missing teacher dir", {"teacher.path": "/nonexistent/teacher"}, "teacher.path: path not found"),
    ("missing data file", {"data.path": "/nonexistent/train.jsonl"}, "data.path: path not found"),
    ("unknown zoo entry", {"teacher.path": "zoo:arithmetic/teacher"}, "did you mean 'arith'"),
    ("directory without a model", {"student.path": "@not_a_model"}, "student.path: cannot load"),
    ("empty data file", {"data.path": "@empty"}, "holds no records"),
    ("invalid JSONL line", {"data.path": "@bad_json"}, "line 2 is not valid JSON"),
    ("record without prompt", {"data.path": "@no_prompt"}, "line 2 has no 'prompt' field"),
    ("record not an object", {"data.path": "@not_object"}, "line 1 must be a JSON object"),
    ("tokenizer mismatch", {"teacher.path": "@odd_vocab"}, "teacher.path: vocabulary size"),
    ("prompt longer than context", {"data.path": "@long_prompt"}, "model's context is"),
    ("resume path not a checkpoint", {"trainer.resume": "/nonexistent/ckpt"}, "trainer.resume"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tiny_text, tmp_path, finished_run, capsys):
    _, extra, needle = case
    files = _files(tmp_path, tiny_text)
    extra = {k: (files[v[1:]]() if isinstance(v, str) and v.startswith("@") else v) for k, v in extra.items()}
    out = tmp_path / "out"
    config = "configs/text/opd_arith.yaml"
    overrides = text_overrides(tiny_text, out, **extra)
    if None in extra.values():  # leave the key out entirely, from a config that lacks it too
        dropped = {k for k, v in extra.items() if v is None}
        overrides = [o for o in overrides if o.split("=", 1)[0] not in dropped]
        config = str(_config_without_student(tmp_path))
    argv = ["train", config, *overrides]
    before = _snapshot(finished_run)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert lines and needle in lines[-1], err
    assert lines[-1].startswith("uopd: error: ")
    assert _snapshot(finished_run) == before


def _config_without_student(tmp_path: Path) -> Path:
    p = tmp_path / "no_student.yaml"
    p.write_text("domain: text\nteacher:\n  path: x\ndata:\n  path: y\n")
    return p


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "configs/text/opd_arith.yaml", "trainer.max_steps"], "expected dotted.key=value"),
        (["train", "@bad_yaml"], "is not valid YAML"),
        (["train", "@list_yaml"], "must hold a mapping"),
        (["train", "configs/text/nope.yaml"], "config: file not found"),
    ],
)
def test_bad_config_files(argv, needle, tmp_path, tiny_text, capsys):
    files = _files(tmp_path, tiny_text)
    argv = [str(files[a[1:]]()) if a.startswith("@") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_output_dir_of_a_finished_run_is_refused(tiny_text, finished_run, capsys):
    before = _snapshot(finished_run)
    argv = ["train", "configs/text/opd_arith.yaml", *text_overrides(tiny_text, finished_run, **{"trainer.resume": "never"})]
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _snapshot(finished_run) == before
