"""Lightning OPD for text: write a teacher's top-k log-probs on fixed rollouts, train from them.

`write_teacher_cache(cfg)` (`uopd cache-teacher CONFIG`) samples `rollout.num_samples`
completions for the first `teacher.cache.prompts` training prompts (from the teacher by default,
Lightning's teacher consistency, or from the student), lays every rollout out on one grid
(`[prompt left-padded to P | completion right-padded to M]`), scores it with the teacher and keeps
the top-k log-probs per position. `teacher.kind: cache` then trains on those rollouts with no
teacher model loaded, after checking the manifest's fingerprints against the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import torch
from torch import Tensor

from unified_opd.cache import CACHE_WRITERS, check_fingerprints, digest_files, digest_json, load_shards, read_manifest, write_cache
from unified_opd.data_sources import is_hub_dataset
from unified_opd.distributions import Categorical
from unified_opd.errors import ConfigError
from unified_opd.interfaces import Teacher
from unified_opd.rollout import Rollout
from unified_opd.teacher_kinds import TEACHERS, BuiltTeacher, TeacherContext, TeacherKind
from unified_opd.zoo import resolve

from unified_opd.domains.lm import LMTeacher
from unified_opd.domains.lm import Sampling, check_same_vocabulary, load_causal_lm

from .generation import encode_prompts, format_prompts, generate_rollout
from .records import load_split

FIELD = "teacher.cache.dir"


def _model_files(path: str) -> List[Path]:
    files = [p for p in Path(path).iterdir() if p.suffix == ".safetensors" or p.name == "config.json"]
    if not files:
        raise ConfigError(f"{path}: no safetensors weights to fingerprint")
    return files


def data_digest(data_cfg) -> str:
    """SHA-256 of `data.path`: a file's bytes, every file of a directory, or a Hub dataset's name, config and split."""
    if is_hub_dataset(data_cfg.path):
        return digest_json({"hub": data_cfg.path, "name": data_cfg.name, "split": data_cfg.split})
    local = Path(resolve(data_cfg.path, "data.path"))
    return digest_files(sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local])


def fingerprints(cfg, tokenizer) -> Dict[str, str]:
    """SHA-256 of the teacher's weights, the tokenizer's vocabulary, and the data plus every
    option that changes the cached rollouts (and the student's weights when it samples them).
    The sampling seed is recorded in the manifest but not hashed: runs of any seed share a cache."""
    c, r = cfg.teacher.cache, cfg.rollout
    teacher_dir = resolve(_require(cfg.teacher.path, "teacher.path"), "teacher.path")
    data = {
        "file": data_digest(cfg.data),
        "prompts": c.prompts,
        "rollouts": c.rollouts,
        "top_k": c.top_k,
        "sampling": [r.num_samples, r.max_new_tokens, r.temperature, r.top_p, r.top_k],
        "format": [cfg.data.prompt_field, cfg.data.answer_field, cfg.data.chat_template, cfg.data.system_prompt],
    }
    if r.stop:  # only when set, so caches written before `rollout.stop` existed keep their fingerprint
        data["stop"] = list(r.stop)
    if c.rollouts == "student":
        data["student"] = digest_files(_model_files(resolve(cfg.student.path, "student.path")))
    return {
        "teacher": digest_files(_model_files(teacher_dir)),
        "tokenizer": digest_json(tokenizer.get_vocab()),
        "data": digest_json(data),
    }


def _require(value, field: str):
    if not value:
        raise ConfigError(f"{field}: required to write or read a teacher cache")
    return value


def relayout(seq: Tensor, attn: Tensor, loss_mask: Tensor, prompt_len: int, P: int, M: int, pad_id: int):
    """Move one generated batch onto the cache grid: left-pad the prompt part to P tokens and
    right-pad the completion part to M tokens (padding has attention 0 and loss_mask 0)."""
    b, n = seq.shape
    left, right = P - prompt_len, M - (n - prompt_len)
    z = lambda k, like: torch.zeros(b, k, dtype=like.dtype, device=like.device)  # noqa: E731
    seq = torch.cat([torch.full((b, left), pad_id, dtype=seq.dtype, device=seq.device), seq, torch.full((b, right), pad_id, dtype=seq.dtype, device=seq.device)], 1)
    attn = torch.cat([z(left, attn), attn, z(right, attn)], 1)
    loss_mask = torch.cat([z(left, loss_mask), loss_mask, z(right, loss_mask)], 1)
    return seq, attn, loss_mask


@torch.no_grad()
def write_teacher_cache(cfg) -> Path:
    c = cfg.teacher.cache
    if c.rollouts not in ("teacher", "student"):
        raise ConfigError(f"teacher.cache.rollouts: expected teacher or student, got {c.rollouts!r}")
    directory = _require(c.dir, FIELD)
    if c.top_k < 1 or c.prompts < 1 or c.batch_size < 1:
        raise ConfigError("teacher.cache: top_k, prompts and batch_size must be positive")
    torch.manual_seed(cfg.trainer.seed)
    s, t = cfg.student, cfg.teacher
    s_lm, tok = load_causal_lm(s.path, s.dtype, s.trust_remote_code, "student", s.revision)
    t_lm, t_tok = load_causal_lm(_require(t.path, "teacher.path"), t.dtype, t.trust_remote_code, "teacher", t.revision)
    check_same_vocabulary(tok, t_tok, s_lm, t_lm)
    teacher = LMTeacher(t_lm, lazy=False)
    gen_lm = t_lm if c.rollouts == "teacher" else s_lm
    records = load_split(cfg.data)[: c.prompts]
    r = cfg.rollout
    sampling = Sampling(num_samples=r.num_samples, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, stop=tuple(r.stop))
    P = encode_prompts(tok, format_prompts(tok, records, cfg.data), 0)["input_ids"].shape[1]
    M = r.max_new_tokens

    def shards() -> Iterator[Dict[str, Tensor]]:
        for start in range(0, len(records), c.batch_size):
            batch = records[start : start + c.batch_size]
            roll = generate_rollout(gen_lm, tok, batch, cfg.data, sampling)
            v = roll.student_view
            seq, attn, loss_mask = relayout(v["input_ids"], v["attention_mask"], roll.loss_mask, v["prompt_len"], P, M, tok.pad_token_id)
            grid = Rollout(seq[:, 1:], loss_mask, torch.zeros_like(loss_mask), {"input_ids": seq, "attention_mask": attn, "prompt_len": P})
            top = teacher.distribution(grid).log_probs().topk(min(c.top_k, t_lm.get_output_embeddings().weight.shape[0]), -1)
            n = seq.shape[0]
            outcome = roll.outcome.float() if roll.outcome is not None else torch.full((n,), float("nan"))
            yield {
                "input_ids": seq,
                "attention_mask": attn,
                "loss_mask": loss_mask,
                "topk_logprobs": top.values.float(),
                "topk_indices": top.indices.int(),
                "outcome": outcome,
                "record_index": (start + roll.group_ids).int(),
            }

    manifest = {"prompt_len": P, "length": P + M, "vocab_size": int(t_lm.get_output_embeddings().weight.shape[0]), "rows": len(records) * r.num_samples,
                "top_k": c.top_k, "rollouts": c.rollouts, "sampling_seed": cfg.trainer.seed, "fingerprints": fingerprints(cfg, tok)}
    return write_cache(directory, shards(), manifest)


CACHE_WRITERS.register("text", write_teacher_cache)


class CachedRollouts:
    """The fixed rollouts of a cache, dealt out by prompt: a record carries `_cache_rows`, the rows
    of its `rollout.num_samples` samples, so `rollout.batch_size` counts prompts as it does online
    and a prompt's samples stay in one batch (`group_ids`).

    The cache grid is padded to the longest prompt and completion of the whole cache; a batch is
    cut to the columns some of its rows attend to. That changes no output: positions come from
    the attention mask and masked keys are ignored (left cut), and attention is causal (right cut).
    """

    def __init__(self, tensors: Dict[str, Tensor], prompt_len: int, device: torch.device):
        self.t = {k: v.to(device) for k, v in tensors.items()}
        self.prompt_len = prompt_len

    def __call__(self, batch: Sequence[Dict[str, Any]]) -> Rollout:
        rows = torch.tensor([row for r in batch for row in r["_cache_rows"]], device=self.t["input_ids"].device)
        attn = self.t["attention_mask"][rows]
        used = attn.any(0).nonzero()
        lo, hi = int(used[0]), int(used[-1]) + 1
        seq = self.t["input_ids"][rows, lo:hi].long()
        loss_mask = self.t["loss_mask"][rows, lo : hi - 1].long()
        outcome = self.t["outcome"][rows]
        records = [r for r in batch for _ in r["_cache_rows"]]
        tasks = [str(r["task"]) for r in records] if all("task" in r for r in records) else None
        return Rollout(
            actions=seq[:, 1:],
            loss_mask=loss_mask,
            step_ids=torch.zeros_like(loss_mask),
            student_view={"input_ids": seq, "attention_mask": attn[:, lo:hi].long(), "prompt_len": self.prompt_len - lo},
            outcome=None if bool(outcome.isnan().any()) else outcome,
            task=tasks,
            group_ids=self.t["record_index"][rows].long(),
            meta={"records": records, "cache_rows": rows, "cache_positions": slice(lo, hi - 1)},
        )


class CacheTeacher(Teacher):
    """The cached top-k log-probs of the rollout's rows and positions, as a sparse `Categorical.from_topk`."""

    def __init__(self, tensors: Dict[str, Tensor], vocab_size: int, device: torch.device):
        self.logprobs = tensors["topk_logprobs"].to(device)
        self.indices = tensors["topk_indices"].to(device).long()
        self.vocab_size = vocab_size

    def distribution(self, rollout: Rollout) -> Categorical:
        rows, cols = rollout.meta["cache_rows"], rollout.meta["cache_positions"]
        return Categorical.from_topk(self.logprobs[rows, cols], self.indices[rows, cols], self.vocab_size)


def _cache(ctx: TeacherContext) -> BuiltTeacher:
    cfg = ctx.cfg
    directory = _require(cfg.teacher.cache.dir, FIELD)
    manifest = read_manifest(directory, FIELD)
    check_fingerprints(manifest, fingerprints(cfg, ctx.policy.tokenizer), FIELD)
    tensors = load_shards(directory, manifest)
    records = load_split(cfg.data)
    by_prompt: Dict[int, List[int]] = {}
    for row, i in enumerate(tensors["record_index"].tolist()):
        by_prompt.setdefault(i, []).append(row)
    rows = [{**records[i], "_cache_rows": r} for i, r in by_prompt.items()]
    device = ctx.source.device
    ctx.policy.replay = CachedRollouts(tensors, manifest["prompt_len"], device)
    return BuiltTeacher(CacheTeacher(tensors, manifest["vocab_size"], device), None, records=rows)


TEACHERS.register("cache", TeacherKind(_cache, domains=("text",)))
