"""A text user's own data on a tiny Qwen3-architecture pair with a ChatML tokenizer: every file
format gives the same records and trains; chat `messages` go through the chat template and the
student's turn stops at `<|im_end|>` (from `generation_config`); `rollout.stop` strings cut a
completion; an offline Hub dataset name is a one-line error; the log-probs trained on are a plain
HF forward's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from datasets import Dataset, DatasetDict
from omegaconf import OmegaConf

from chat_fixtures import CHAT_RECORDS, PROMPT_RECORDS, build_chat_pair, write_jsonl
from test_lm import check_matches_plain_forward
from unified_opd.config import load_config
from unified_opd.data_sources import read_records
from unified_opd.domain import schema_for
from unified_opd.domains.lm import Sampling, load_causal_lm, stop_ids
from unified_opd.domains.text.config import DataConfig
from unified_opd.domains.text.generation import format_prompts, generate_rollout
from unified_opd.domains.text.policy import TextPolicy
from unified_opd.trainer import Trainer

REQUIRED = (("prompt", "messages"),)


@pytest.fixture(scope="module")
def chat_pair(tmp_path_factory):
    return build_chat_pair(tmp_path_factory.mktemp("chat_pair"))


def write_format(root, fmt: str, records) -> str:
    """`records` saved as `fmt`; returns the data.path naming them."""
    if fmt == "jsonl":
        return str(write_jsonl(root / "d.jsonl", records))
    if fmt == "json_array":
        (root / "d.json").write_text(json.dumps(records, indent=1))
        return str(root / "d.json")
    if fmt == "json_lines":
        return str(write_jsonl(root / "d.json", records))
    if fmt == "parquet":
        Dataset.from_list(records).to_parquet(root / "d.parquet")
        return str(root / "d.parquet")
    if fmt == "csv":
        Dataset.from_list(records).to_csv(root / "d.csv", index=False)
        return str(root / "d.csv")
    if fmt == "save_to_disk":
        DatasetDict({"train": Dataset.from_list(records), "test": Dataset.from_list(records[:4])}).save_to_disk(root / "d")
        return str(root / "d")
    raise AssertionError(fmt)


FORMATS = ["jsonl", "json_array", "json_lines", "parquet", "csv", "save_to_disk"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_the_same_records_in_order(tmp_path, fmt):
    assert read_records(write_format(tmp_path, fmt, PROMPT_RECORDS), REQUIRED) == PROMPT_RECORDS


@pytest.mark.parametrize("fmt", ["jsonl", "json_array", "parquet", "save_to_disk"])
def test_chat_records_read_the_same_in_every_structured_format(tmp_path, fmt):
    assert read_records(write_format(tmp_path, fmt, CHAT_RECORDS), REQUIRED) == CHAT_RECORDS


def test_save_to_disk_split_is_chosen_and_a_missing_one_named(tmp_path):
    path = write_format(tmp_path, "save_to_disk", PROMPT_RECORDS)
    assert read_records(path, REQUIRED, split="test") == PROMPT_RECORDS[:4]
    with pytest.raises(Exception, match=r"data.path: .* has no split 'validation' \(it has \['test', 'train'\]\)"):
        read_records(path, REQUIRED, split="validation")


def overrides(root, out, **extra):
    base = {
        "student.path": root / "student", "teacher.path": root / "teacher", "data.path": root / "chat.jsonl",
        "rollout.batch_size": 8, "rollout.num_samples": 2, "rollout.max_new_tokens": 8, "rollout.temperature": 1.0,
        "trainer.max_steps": 3, "trainer.lr": 1e-2, "trainer.output_dir": out, "trainer.save_every": 0,
        "eval.size": 8, "eval.batch_size": 8, "eval.teacher": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def train(root, out, **extra):
    return Trainer(load_config(None, overrides(root, out, **extra), schema_for)).train()


def kl_of(summary, when: str) -> float:
    return summary[when]["reverse_kl"]


@pytest.fixture(scope="module")
def jsonl_runs(chat_pair, tmp_path_factory):
    """The reference runs: the chat and the prompt records as JSONL, 12 steps each."""
    root = tmp_path_factory.mktemp("jsonl_runs")
    return {
        name: train(chat_pair, root / name, **{"data.path": chat_pair / f"{name}.jsonl", "trainer.max_steps": 12})
        for name in ("chat", "prompts")
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_distils_the_student_toward_its_teacher_as_jsonl_does(chat_pair, jsonl_runs, tmp_path, fmt):
    name = "prompts" if fmt == "csv" else "chat"  # CSV has no nested columns
    path = write_format(tmp_path, fmt, CHAT_RECORDS if name == "chat" else PROMPT_RECORDS)
    s = train(chat_pair, tmp_path / "run", **{"data.path": path, "trainer.max_steps": 12})
    assert kl_of(s, "after") < kl_of(s, "before"), s
    # same records in the same order: the very run the JSONL file gives
    assert (s["before"], s["after"]) == (jsonl_runs[name]["before"], jsonl_runs[name]["after"])


def test_chat_jsonl_distils_and_kl_falls_clearly(chat_pair, tmp_path):
    s = train(chat_pair, tmp_path / "run", **{"trainer.max_steps": 30})
    assert kl_of(s, "after") < 0.7 * kl_of(s, "before"), s


def test_chat_prompts_use_the_template_and_end_with_the_assistant_turn(chat_pair):
    _, tok = load_causal_lm(str(chat_pair / "student"), "float32", False, "student")
    data_cfg = OmegaConf.structured(DataConfig(path="x"))
    prompt, plain = format_prompts(tok, [CHAT_RECORDS[0], PROMPT_RECORDS[0]], data_cfg)
    assert prompt == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhat is 0 plus 0?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert plain == "<|im_start|>user\nWhat is 0 plus 0?<|im_end|>\n<|im_start|>assistant\n"


def test_stop_ids_read_every_eos_of_the_generation_config(chat_pair):
    lm, tok = load_causal_lm(str(chat_pair / "student"), "float32", False, "student")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id != im_end and set(stop_ids(tok, lm)) == {tok.eos_token_id, im_end}


def test_uopd_train_on_chat_messages_stops_each_turn_at_im_end(chat_pair, tmp_path, monkeypatch):
    rollouts = []
    original = TextPolicy.rollout

    def recording(self, batch, sampling=None):
        r = original(self, batch, sampling)
        rollouts.append(r)
        return r

    monkeypatch.setattr(TextPolicy, "rollout", recording)
    train(chat_pair, tmp_path / "run", **{"rollout.max_new_tokens": 24})
    tok = load_causal_lm(str(chat_pair / "student"), "float32", False, "student")[1]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    ended = 0
    for r in rollouts:
        p = r.student_view["prompt_len"]
        gen, mask = r.student_view["input_ids"][:, p:], r.loss_mask[:, p - 1 :]
        for row in range(gen.shape[0]):
            kept = gen[row][mask[row].bool()].tolist()
            if im_end in kept:
                ended += 1
                assert kept.index(im_end) == len(kept) - 1  # the turn ends at <|im_end|>, nothing trained after
                assert (gen[row][len(kept) :] == tok.pad_token_id).all()  # the sampler stopped that row there
            else:
                assert len(kept) == gen.shape[1] == 24  # only the token limit ends a turn otherwise
    assert ended > 0.8 * sum(r.actions.shape[0] for r in rollouts)
    assert all("<|im_end|>" not in c for r in rollouts for c in r.meta["completions"])


def test_stop_strings_cut_the_completion_and_mask_the_rest(chat_pair):
    lm, tok = load_causal_lm(str(chat_pair / "student"), "float32", False, "student")
    data_cfg = OmegaConf.structured(DataConfig(path="x"))
    torch.manual_seed(0)
    plain = generate_rollout(lm, tok, CHAT_RECORDS[:8], data_cfg, Sampling(num_samples=2, max_new_tokens=24))
    stops = ("e", "a", "o", "t")
    torch.manual_seed(0)
    cut = generate_rollout(lm, tok, CHAT_RECORDS[:8], data_cfg, Sampling(num_samples=2, max_new_tokens=24, stop=stops))
    p = cut.student_view["prompt_len"]
    assert cut.student_view["input_ids"].shape[1] <= plain.student_view["input_ids"].shape[1]
    n_cut = 0
    for row, (full, text) in enumerate(zip(plain.meta["completions"], cut.meta["completions"])):
        found = [full.index(s) + 1 for s in stops if s in full]
        if not found:
            assert text == full
            continue
        n_cut += 1
        assert text == full[: min(found)]
        gen = cut.student_view["input_ids"][row, p:]
        kept = gen[cut.loss_mask[row, p - 1 :].bool()].tolist()
        # the same draws as without stops up to the cut (one random number per row and step), then padding
        assert kept == plain.student_view["input_ids"][row, p : p + len(kept)].tolist()
        assert (gen[len(kept) :] == tok.pad_token_id).all()
        assert any(s in tok.decode(kept, skip_special_tokens=True) for s in stops)
        # cut right after the token that completes it
        assert not any(s in tok.decode(kept[:-1], skip_special_tokens=True) for s in stops)
    assert n_cut >= 4
    assert cut.loss_mask.sum() < plain.loss_mask.sum()


@pytest.mark.parametrize("lazy", [True, False])
def test_qwen3_chat_log_probs_equal_a_plain_forward(chat_pair, lazy):
    lm, tok = load_causal_lm(str(chat_pair / "student"), "float32", False, "student")
    data_cfg = OmegaConf.structured(DataConfig(path="x"))
    policy = TextPolicy(lm, tok, data_cfg, Sampling(num_samples=2, max_new_tokens=12), lazy)
    torch.manual_seed(0)
    rollout = policy.rollout(CHAT_RECORDS[:3] + PROMPT_RECORDS[:3])
    assert (rollout.student_view["attention_mask"] == 0).any()
    check_matches_plain_forward(policy, rollout)


def test_offline_hub_dataset_is_a_one_line_error_through_the_cli(chat_pair, tmp_path):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    config = tmp_path / "text.yaml"
    config.write_text("domain: text\n")
    argv = ["train", str(config), *overrides(chat_pair, tmp_path / "run", **{"data.path": "openai/gsm8k", "data.name": "main"})]
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "unified_opd.cli", *argv], capture_output=True, text=True, env=env)
    assert time.monotonic() - start < 10
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and "data.path: cannot load Hub dataset 'openai/gsm8k'" in lines[0], p.stderr
    assert "save_to_disk" in lines[0] and not (tmp_path / "run").exists()
