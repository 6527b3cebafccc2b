"""The bad-input catalogue: each case is one clear line naming the field on stderr, exit code 2,
no traceback, and no file in the output directory changed.

Every case's output directory is a copy of a finished run (checkpoints, final model, metrics),
so "nothing changed" also covers the resume that `trainer.resume=auto` would start there.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import json
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List

import gymnasium
import pytest

from conftest import save_tiny_lm, text_overrides
from test_diffusion_e2e import models  # noqa: F401  (fixture: tiny diffusers student and experts)
from test_diffusion_e2e import overrides as diffusion_overrides
from unified_opd.cli import main

TEXT_CONFIG = "configs/text/opd_arith.yaml"
BROKEN_ENV = "uopd-test/Broken-v0"


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tiny_text, tmp_path_factory):
    """An output directory holding a finished run (checkpoints + final), to check nothing is clobbered."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", TEXT_CONFIG, *text_overrides(tiny_text, out, **{"trainer.max_steps": 2})]) == 0
    return out


@dataclass
class Case:
    """What a case's argv builder may use: the tiny text models, its output directory, a scratch dir."""

    root: Path
    out: Path
    tmp: Path
    request: Any

    def write(self, name: str, text: str) -> Path:
        p = self.tmp / name
        p.write_text(text)
        return p

    def file(self, name: str) -> Path:
        return FILES[name](self)

    def config(self, domain: str) -> str:
        return str(self.write(f"{domain}.yaml", f"domain: {domain}\n"))


EXECUTED = "EXECUTED"  # a file that only code smuggled in with a model could create


class _Touch:
    """Unpickling this creates the EXECUTED file: what any pickled payload could do instead."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickled_model(c: Case) -> Path:
    d = save_tiny_lm(c.tmp / "pickled")
    (d / "model.safetensors").unlink()
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weights": _Touch(c.tmp / EXECUTED)}, f)
    return d


def remote_code_model(c: Case) -> Path:
    d = save_tiny_lm(c.tmp / "remote")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "uopd_remote"
    cfg["auto_map"] = {"AutoConfig": "modeling_remote.RemoteConfig", "AutoModelForCausalLM": "modeling_remote.RemoteModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "modeling_remote.py").write_text(f"open({str(c.tmp / EXECUTED)!r}, 'w').close()\n")
    return d


FILES = {
    "empty": lambda c: c.write("empty.jsonl", ""),
    "bad_json": lambda c: c.write("bad.jsonl", '{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", \n'),
    "no_prompt": lambda c: c.write("noprompt.jsonl", '{"prompt": "1+1="}\n{"question": "2+2="}\n'),
    "not_object": lambda c: c.write("list.jsonl", "[1, 2]\n"),
    "prompt_and_messages": lambda c: c.write(
        "both.jsonl", '{"prompt": "1+1="}\n{"prompt": "2+2=", "messages": [{"role": "user", "content": "2+2="}]}\n'
    ),
    "bad_turn": lambda c: c.write("badturn.jsonl", '{"messages": [{"role": "user", "content": "1+1="}, {"role": "bot", "content": "2"}]}\n'),
    "chat_records": lambda c: c.write("chat.jsonl", '{"messages": [{"role": "user", "content": "1+1="}], "answer": "2"}\n'),
    "corrupt_parquet": lambda c: c.write("train.parquet", "PAR1 this is not a parquet file\n"),
    "bad_yaml": lambda c: c.write("bad.yaml", "trainer: [unclosed\n"),
    "list_yaml": lambda c: c.write("list.yaml", "- a\n- b\n"),
    # the long prompt is the last of many, so only a check of every record finds it up front
    "long_prompt": lambda c: c.write(
        "long.jsonl", '{"prompt": "1+1=", "answer": "2"}\n' * 50 + json.dumps({"prompt": "1+" * 80 + "1=", "answer": "81"}) + "\n"
    ),
    "odd_vocab": lambda c: save_tiny_lm(c.tmp / "odd", vocab_extra=5),
    "narrow_student": lambda c: save_tiny_lm(c.tmp / "narrow", hidden=16),
    "not_a_model": lambda c: (c.tmp / "empty_model").mkdir() or c.tmp / "empty_model",
    "pickled_model": pickled_model,
    "remote_code_model": remote_code_model,
}


def text(*raw: str, **extra) -> Callable[[Case], List[str]]:
    """`uopd train` on the text config; "@name" values are FILES, `raw` overrides are appended as given."""

    def argv(c: Case) -> List[str]:
        values = {k: c.file(v[1:]) if isinstance(v, str) and v.startswith("@") else v for k, v in extra.items()}
        return ["train", TEXT_CONFIG, *text_overrides(c.root, c.out, **values), *raw]

    return argv


def config_file(name: str) -> Callable[[Case], List[str]]:
    return lambda c: ["train", str(c.file(name)) if name in FILES else name, *text_overrides(c.root, c.out)]


def missing_student(c: Case) -> List[str]:
    # left out entirely, from a config that lacks it too
    config = c.write("no_student.yaml", "domain: text\nteacher:\n  path: x\ndata:\n  path: y\n")
    return ["train", str(config), *[o for o in text_overrides(c.root, c.out) if not o.startswith("student.path=")]]


def killed_run_without_resume(c: Case) -> List[str]:
    shutil.rmtree(c.out / "final")  # checkpoints only: a run that was stopped or killed
    return text(**{"trainer.resume": "never"})(c)


def corrupt_image(c: Case) -> List[str]:
    (c.tmp / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a PNG after all")
    data = c.write("images.jsonl", json.dumps({"image": "bad.png", "prompt": "What colour is the square?", "answer": "red"}) + "\n")
    return ["train", c.config("vision"), f"student.path={c.root / 'student'}", f"data.path={data}", f"trainer.output_dir={c.out}"]


def diffusion_shape_mismatch(c: Case) -> List[str]:
    m = c.request.getfixturevalue("models")
    big = f"teacher.experts=[{{path: {m / 'big'}, classes: [0, 1, 2, 3]}}]"
    # cpu_threads=0: keep this process's torch thread count
    return ["train", c.config("diffusion"), *diffusion_overrides(m, c.out, big, "cpu_threads=0")]


class _BrokenEnv(gymnasium.Env):
    def __init__(self):
        raise RuntimeError("cannot find the game files")


def env_that_raises(c: Case) -> List[str]:
    if BROKEN_ENV not in gymnasium.registry:
        gymnasium.register(BROKEN_ENV, entry_point=_BrokenEnv)
    paths = [f"student.path={c.root / 'student'}", f"teacher.path={c.root / 'teacher'}"]
    return ["train", c.config("agent"), *paths, f"env.id={BROKEN_ENV}", f"trainer.output_dir={c.out}"]


def non_text_env(c: Case) -> List[str]:
    paths = [f"student.path={c.root / 'student'}", f"teacher.path={c.root / 'teacher'}"]
    return ["train", c.config("agent"), *paths, "env.id=CartPole-v1", f"trainer.output_dir={c.out}"]


CASES = [
    # configs
    ("unknown key", text(**{"trainer.max_stepz": 3}), "trainer.max_stepz: unknown config key"),
    ("unknown section", text(**{"optimizer.lr": 3}), "optimizer: unknown config key"),
    ("wrong type int", text(**{"trainer.max_steps": "many"}), "trainer.max_steps: expected int"),
    ("wrong type float", text(**{"trainer.lr": "fast"}), "trainer.lr: expected float"),
    ("wrong type bool", text(**{"trainer.cpu": "maybe"}), "trainer.cpu"),
    ("missing required key", missing_student, "student.path: required value is missing"),
    ("bad override syntax", text("trainer.max_steps"), "expected dotted.key=value"),
    ("config not valid YAML", config_file("bad_yaml"), "is not valid YAML"),
    ("config not a mapping", config_file("list_yaml"), "must hold a mapping"),
    ("config file missing", config_file("configs/text/nope.yaml"), "config: file not found"),
    ("unknown divergence", text(**{"divergence.name": "reverse_k"}), "did you mean 'reverse_kl'"),
    ("unknown weight", text(**{"objective.weights": "[unifrom]"}), "did you mean 'uniform'"),
    ("unknown verifier", text(**{"data.verifier": "exact"}), "data.verifier"),
    ("unknown estimator", text(**{"objective.estimator": "mc"}), "objective.estimator"),
    ("sampled estimator with jsd", text(**{"objective.estimator": "sampled", "divergence.name": "jsd"}), "objective.estimator"),
    ("jsd beta out of range", text(**{"divergence.name": "jsd", "divergence.beta": 2.0}), "divergence.beta"),
    ("bad lr schedule", text(**{"trainer.lr_schedule": "exp"}), "trainer.lr_schedule"),
    ("lambda without reference", text(**{"objective.lam": 1.5, "divergence.name": "forward_kl"}), "objective.lam: λ != 1 needs a reference"),
    ("zero batch size", text(**{"rollout.batch_size": 0}), "rollout.batch_size"),
    ("negative temperature", text(**{"rollout.temperature": -1.0}), "rollout.temperature"),
    ("bad chat template mode", text(**{"data.chat_template": "sometimes"}), "data.chat_template"),
    ("negative learning rate", text(**{"trainer.lr": -1}), "trainer.lr: expected a number >= 0, got -1"),
    ("zero log interval", text(**{"trainer.log_every": 0}), "trainer.log_every: expected an integer >= 1"),
    ("betas out of range", text("trainer.betas=[0.9,1.5]"), "trainer.betas: expected two numbers in [0, 1)"),
    ("unknown mixed precision", text(**{"trainer.mixed_precision": "fp4"}), "trainer.mixed_precision: expected one of"),
    ("unknown tracker", text("trainer.report_to=[tensorbord]"), "trainer.report_to[0]: unknown tracker 'tensorbord'"),
    ("replaced tensorboard switch", text(**{"trainer.tensorboard": False}), "trainer.tensorboard was replaced by trainer.report_to"),
    ("push to the Hub offline", text(**{"trainer.push_to_hub": True}), "trainer.push_to_hub: "),
    ("bad Hub repository id", text(**{"trainer.push_to_hub": True, "trainer.hub_model_id": "a/b/c"}), "trainer.hub_model_id: expected"),
    ("own data with the zoo's eval set", text(**{"data.eval_path": "zoo:arith/eval.jsonl"}), "data.eval_path: zoo:arith/eval.jsonl is a zoo task's held-out set"),
    # paths
    ("missing model dir", text(**{"student.path": "/nonexistent/student"}), "student.path: path not found"),
    ("missing teacher dir", text(**{"teacher.path": "/nonexistent/teacher"}), "teacher.path: path not found"),
    ("missing data file", text(**{"data.path": "/nonexistent/train.jsonl"}), "data.path: path not found"),
    ("Hub model offline", text(**{"student.path": "Qwen/Qwen3-0.6B"}), "student.path: Hub model 'Qwen/Qwen3-0.6B'"),
    ("Hub teacher offline", text(**{"teacher.path": "Qwen/Qwen3-0.6B", "teacher.revision": "main"}), "teacher.path: Hub model 'Qwen/Qwen3-0.6B' at revision 'main'"),
    ("unknown zoo entry", text(**{"teacher.path": "zoo:arithmetic/teacher"}), "did you mean 'arith'"),
    ("directory without a model", text(**{"student.path": "@not_a_model"}), "student.path: cannot load"),
    ("resume path not a checkpoint", text(**{"trainer.resume": "/nonexistent/ckpt"}), "trainer.resume"),
    ("finished run without resume", text(**{"trainer.resume": "never"}), "trainer.output_dir: "),
    ("killed run without resume", killed_run_without_resume, "already holds a run"),
    ("another model's checkpoints", text(**{"student.path": "@narrow_student"}), "trainer.output_dir: checkpoint"),
    # data
    ("empty data file", text(**{"data.path": "@empty"}), "holds no records"),
    ("invalid JSONL line", text(**{"data.path": "@bad_json"}), "line 2 is not valid JSON"),
    ("record without prompt", text(**{"data.path": "@no_prompt"}), "line 2 has no 'prompt' field"),
    ("record not an object", text(**{"data.path": "@not_object"}), "line 1 must be a JSON object"),
    ("record with prompt and messages", text(**{"data.path": "@prompt_and_messages"}), "line 2 has both 'prompt' and 'messages'"),
    ("record with neither prompt nor messages", text(**{"data.path": "@no_prompt"}), "line 2 has no 'prompt' field (nor 'messages')"),
    ("chat turn with an unknown role", text(**{"data.path": "@bad_turn"}), "data.messages: record 0 turn 1 must be"),
    ("chat records without a chat template", text(**{"data.path": "@chat_records"}), "data.messages: record 0 is a chat record"),
    ("corrupt parquet file", text(**{"data.path": "@corrupt_parquet"}), "data.path: cannot read"),
    ("Hub dataset offline", text(**{"data.path": "openai/gsm8k", "data.name": "main"}), "data.path: Hub dataset 'openai/gsm8k'"),
    ("empty stop string", text("rollout.stop=['']"), "rollout.stop[0]: expected a non-empty string"),
    # models
    ("tokenizer mismatch", text(**{"teacher.path": "@odd_vocab"}), "teacher.path: vocabulary size"),
    ("prompt longer than context", text(**{"data.path": "@long_prompt"}), "data.path: record 50's prompt is"),
    ("unknown dtype", text(**{"student.dtype": "float8"}), "student.dtype"),
    ("non-floating dtype", text(**{"student.dtype": "int8"}), "student.dtype: expected one of"),
    ("pickled weights only", text(**{"student.path": "@pickled_model"}), "student.path: cannot load"),
    ("remote code not trusted", text(**{"teacher.path": "@remote_code_model"}), "teacher.path: cannot load"),
    # domain inputs
    ("corrupt image (vision)", corrupt_image, "field 'image': cannot read image"),
    ("latent shape mismatch (diffusion)", diffusion_shape_mismatch, "teacher.experts[0].path: the teacher's latents are"),
    ("env that raises (agent)", env_that_raises, f"env.id: {BROKEN_ENV} cannot be created: RuntimeError"),
    ("non-text env (agent)", non_text_env, "env.id: CartPole-v1 is not a text environment"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tiny_text, tmp_path, finished_run, request, capsys):
    _, build_argv, needle = case
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    argv = build_argv(Case(tiny_text, out, tmp_path, request))
    before = _snapshot(out)
    started = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("uopd: error: ") and needle in lines[-1], err
    assert [x for x in lines if x.startswith("uopd: error: ")] == lines[-1:], err
    assert _snapshot(out) == before
    assert not (tmp_path / EXECUTED).exists()
    # every check comes before any model load or zoo build
    assert seconds < 10, f"{seconds:.1f} s to the error"


def test_own_data_with_zoo_eval_set_fails_at_launch(tiny_text, tmp_path):
    """The issue's case from a shell: the arith config with only `data.path` overridden. Before,
    it built the arith zoo (minutes) and evaluated the user's model on arithmetic."""
    home, out = tmp_path / "home", tmp_path / "out"
    # what any launch pays before checking anything (interpreter, torch, transformers), measured
    # here so a busy machine does not fail the test: the checks themselves must take < 10 s more
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import unified_opd.trainer, unified_opd.domains.text"], check=True, timeout=120)
    imports = time.perf_counter() - started
    cmd = [sys.executable, "-m", "unified_opd.cli", "train", TEXT_CONFIG, f"data.path={tiny_text / 'train.jsonl'}", f"trainer.output_dir={out}"]
    started = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "UOPD_HOME": str(home)}, timeout=120)
    seconds = time.perf_counter() - started
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("uopd: error: data.eval_path: zoo:arith/eval.jsonl"), r.stderr
    assert seconds - imports < 10, f"{seconds:.1f} s from launch to the error ({imports:.1f} s of imports)"
    assert not home.exists() and not out.exists()
