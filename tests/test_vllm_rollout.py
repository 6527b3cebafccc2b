"""Student rollouts on vLLM (`rollout.engine: vllm`): the config errors (default suite), and,
where vllm is installed (marker `vllm`), weight sync, the rollout layout against our sampler,
seeded repeatability and an OPD run that trains on engine rollouts."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from conftest import save_tiny_lm, text_overrides
from unified_opd.cli import main
from unified_opd.domains.lm import vllm_engine

TEXT_CONFIG = "configs/text/opd_arith.yaml"
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _train_cli(tmp_path, monkeypatch, *overrides):
    home = tmp_path / "home"
    monkeypatch.setenv("UOPD_HOME", str(home))
    return main(["train", TEXT_CONFIG, f"trainer.output_dir={tmp_path / 'out'}", *overrides]), home


def test_engine_vllm_without_vllm_is_one_line_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(vllm_engine.importlib.util, "find_spec", lambda name: None if name == "vllm" else importlib.util.find_spec(name))
    code, home = _train_cli(tmp_path, monkeypatch, "rollout.engine=vllm")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("uopd: error: rollout.engine: 'vllm' needs the vllm package"), err
    assert "unified_opd[vllm]" in err[0]
    assert not home.exists() and not (tmp_path / "out").exists()  # no zoo build, no output directory


@pytest.mark.parametrize(
    "override, field",
    [
        ("rollout.engine=sglang", "rollout.engine"),
        ("rollout.sync_every=0", "rollout.sync_every"),
        ("rollout.is_correction=tis", "rollout.is_correction"),  # tis needs engine=vllm
        ("rollout.is_cap=0.5", "rollout.is_cap"),
        ("rollout.vllm.sleep_level=3", "rollout.vllm.sleep_level"),
        ("rollout.vllm.gpu_memory_utilization=1.5", "rollout.vllm.gpu_memory_utilization"),
    ],
)
def test_bad_engine_settings_name_the_field(tmp_path, capsys, monkeypatch, override, field):
    code, home = _train_cli(tmp_path, monkeypatch, override)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"uopd: error: {field}:"), err
    assert not home.exists()


def test_tis_on_an_analytic_loss_is_a_config_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(vllm_engine.importlib.util, "find_spec", lambda name: object())
    code, _ = _train_cli(tmp_path, monkeypatch, "rollout.engine=vllm", "rollout.is_correction=tis", "divergence.name=jsd")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("uopd: error: rollout.is_correction: 'tis' reweights the sampled-token loss"), err


# ---- with vLLM ---------------------------------------------------------------------------------

# vLLM's CPU attention kernels need head_dim >= 32: hidden 128 over 2 heads
STUDENT = dict(hidden=128, layers=1, seed=0)
# Both sides are float32 with the same weights; they differ only in kernels (vLLM's fused RMSNorm,
# its attention, matmul blocking). Each is a float32 reduction over <= 384 terms of O(1) values:
# rounding of ~1e-7 relative per term, ~1e-6 after the layers. 1e-4 leaves a margin for the
# log-softmax over the vocabulary, while one unsynced or misnamed weight moves log-probs by > 1e-2.
LOGPROB_TOL = 1e-4


@pytest.fixture(scope="module")
def engine_and_model(tmp_path_factory):
    if not HAS_VLLM:
        pytest.skip("needs vllm")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unified_opd.domains.lm.vllm_engine import VLLMEngine, VLLMSettings

    path = save_tiny_lm(tmp_path_factory.mktemp("vllm_student") / "student", **STUDENT)
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    settings = VLLMSettings(gpu_memory_utilization=0.05, enforce_eager=True)
    return VLLMEngine(str(path), "float32", settings, sync_every=1, is_cap=2.0, context=64), lm, tok


def _engine_prompt_logprobs(engine, ids):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    out = engine.llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
    return torch.tensor([d[t].logprob for t, d in zip(ids[1:], out.prompt_logprobs[1:])])


def _hf_logprobs(lm, ids):
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)


@pytest.mark.vllm
def test_engine_logprobs_equal_the_trained_model_after_a_sync(engine_and_model):
    engine, lm, tok = engine_and_model
    ids = tok("12+34=64")["input_ids"]
    torch.manual_seed(3)
    with torch.no_grad():  # an optimiser step's worth of change, on every weight
        for p in lm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = (_engine_prompt_logprobs(engine, ids) - _hf_logprobs(lm, ids)).abs().max()
    engine.sync(lm)
    after = (_engine_prompt_logprobs(engine, ids) - _hf_logprobs(lm, ids)).abs().max()
    assert before > 1e-2, "the perturbation must be visible, or the test shows nothing"
    assert after < LOGPROB_TOL, f"max |Δ log p| = {after:.2e} after the sync"


def _rollouts(engine, lm, tok, sampling):
    from types import SimpleNamespace

    from unified_opd.domains.text.generation import generate_rollout

    records = [{"prompt": p, "answer": "1"} for p in ("12+34=", "7+8=", "99+1=", "5+55=")]
    data_cfg = SimpleNamespace(prompt_field="prompt", messages_field="messages", answer_field="answer", verifier="exact_match",
                               chat_template="never", system_prompt=None)
    ours = generate_rollout(lm, tok, records, data_cfg, sampling)
    theirs = generate_rollout(lm, tok, records, data_cfg, sampling, engine)
    return ours, theirs


@pytest.mark.vllm
@pytest.mark.parametrize("stop", [(), ("1",)])
def test_greedy_engine_rollout_is_our_samplers(engine_and_model, stop):
    from unified_opd.domains.lm import Sampling

    engine, lm, tok = engine_and_model
    ours, theirs = _rollouts(engine, lm, tok, Sampling(num_samples=2, max_new_tokens=6, greedy=True, stop=stop))
    assert torch.equal(ours.actions, theirs.actions)
    assert torch.equal(ours.loss_mask, theirs.loss_mask)
    assert torch.equal(ours.student_view["attention_mask"], theirs.student_view["attention_mask"])
    assert ours.meta["completions"] == theirs.meta["completions"]
    # the engine's log-probs of its tokens are the trained model's (same tolerance as above)
    hf = lm(input_ids=theirs.student_view["input_ids"], attention_mask=theirs.student_view["attention_mask"]).logits
    hf_logp = hf[:, :-1].float().log_softmax(-1).gather(-1, theirs.actions[..., None]).squeeze(-1)
    m = theirs.loss_mask.bool()
    assert (theirs.meta["engine_logprobs"][m] - hf_logp[m]).abs().max() < LOGPROB_TOL
    assert theirs.meta["is_cap"] == 2.0


@pytest.mark.vllm
def test_sampled_engine_rollouts_repeat_under_the_same_torch_seed(engine_and_model):
    from unified_opd.domains.lm import Sampling

    engine, lm, tok = engine_and_model
    sampling = Sampling(num_samples=4, max_new_tokens=6, temperature=1.0, top_k=5, top_p=0.9)
    torch.manual_seed(0)
    a = _rollouts(engine, lm, tok, sampling)[1]
    torch.manual_seed(0)
    b = _rollouts(engine, lm, tok, sampling)[1]
    torch.manual_seed(1)
    c = _rollouts(engine, lm, tok, sampling)[1]
    assert torch.equal(a.actions, b.actions)
    assert not torch.equal(a.actions, c.actions)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="needs vllm (the extra `vllm`)")
@pytest.mark.vllm
def test_opd_with_engine_vllm_trains(tiny_text, tmp_path):
    from unified_opd.config import load_config
    from unified_opd.domain import schema_for
    from unified_opd.trainer import Trainer

    student = save_tiny_lm(tmp_path / "student", **STUDENT)
    overrides = text_overrides(
        tiny_text, tmp_path / "run", **{
            "student.path": student, "trainer.max_steps": 40, "trainer.save_every": 0, "rollout.engine": "vllm",
            "rollout.is_correction": "tis", "rollout.vllm.gpu_memory_utilization": 0.05, "rollout.vllm.enforce_eager": True,
        },
    )
    s = Trainer(load_config(None, overrides, schema_for)).train()
    assert s["after"]["reverse_kl"] < 0.8 * s["before"]["reverse_kl"], s
    lines = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    ratios = [x["is_ratio_mean"] for x in lines if "is_ratio_mean" in x]
    assert len(ratios) == 40 and all(abs(r - 1.0) < 1e-3 for r in ratios), ratios[:5]
