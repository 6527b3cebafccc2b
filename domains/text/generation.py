"""Text rollouts: prompts -> sampled completions -> a `Rollout` aligned for next-token scoring.

Sequences are `[left-padded prompt | completion]`. Position p of the rollout is the prediction
of token p+1, so `actions = sequence[:, 1:]` and `loss_mask` is 1 exactly on the completion
tokens up to and including the first EOS (prompt, padding and post-EOS positions are 0).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from torch import nn

from unified_opd.data import verify
from unified_opd.domains.lm import (
    Sampling, completion_mask, cut_text, max_context, sample, stop_ids, stop_string_check, stop_string_mask,
    uses_chat_template,
)
from unified_opd.errors import UserError
from unified_opd.rollout import Rollout


def format_prompts(tok, records: Sequence[Dict[str, Any]], data_cfg) -> List[str]:
    """Each record's prompt text: a `prompt` string through the chat template when the tokenizer
    has one (data.chat_template=auto) or always; chat `messages` always through the template,
    with the completion generated after the last turn."""
    use_template = uses_chat_template(tok, data_cfg.chat_template, "data.chat_template")
    field, system = data_cfg.prompt_field, data_cfg.system_prompt  # one config lookup, not one per record
    messages_field = data_cfg.messages_field
    prompts = []
    for i, r in enumerate(records):
        if messages_field in r and field not in r:
            msgs = chat_turns(r[messages_field], i, messages_field)
            if not use_template:
                raise UserError(
                    f"data.{messages_field}: record {i} is a chat record, which needs the student tokenizer's "
                    f"chat template (it has none, or data.chat_template is 'never')"
                )
        else:
            text = r.get(field)
            if not isinstance(text, str):
                raise UserError(f"data.prompt_field: record {i} has no string field {field!r}")
            if not use_template:
                prompts.append(text)
                continue
            msgs = [{"role": "user", "content": text}]
        if system and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": system}] + msgs
        prompts.append(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    return prompts


CHAT_ROLES = ("system", "user", "assistant")


def chat_turns(messages: Any, i: int, field: str) -> List[Dict[str, str]]:
    """`messages` checked: a non-empty list of {role, content} with a known role and string content."""
    if not isinstance(messages, list) or not messages:
        raise UserError(f"data.{field}: record {i}'s {field!r} must be a non-empty list of {{role, content}} turns")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in CHAT_ROLES or not isinstance(m.get("content"), str):
            raise UserError(
                f"data.{field}: record {i} turn {j} must be {{role: system|user|assistant, content: string}}, got {m!r}"
            )
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def encode_prompts(tok, prompts: List[str], max_context: int, field: str = "data.path") -> Dict[str, torch.Tensor]:
    enc = tok(prompts, return_tensors="pt", padding=True)
    if max_context and enc["input_ids"].shape[1] >= max_context:
        raise UserError(
            f"{field}: a prompt is {enc['input_ids'].shape[1]} tokens, but the model's context is {max_context}"
        )
    return enc


def check_prompts_fit(tok, records: Sequence[Dict[str, Any]], data_cfg, max_context: int, field: str) -> None:
    """Checked when the run is built: a long prompt deep in the data would otherwise stop the run
    at its first batch, after it has written into (or resumed) its output directory."""
    if not max_context:
        return
    for i, ids in enumerate(tok(format_prompts(tok, records, data_cfg))["input_ids"]):
        if len(ids) >= max_context:
            raise UserError(f"{field}: record {i}'s prompt is {len(ids)} tokens, but the model's context is {max_context}")


@torch.no_grad()
def generate_rollout(
    lm: nn.Module, tok, records: Sequence[Dict[str, Any]], data_cfg, sampling: Sampling, engine=None
) -> Rollout:
    """Sample completions (`sampler.sample`, KV cache; or `engine.sample`, e.g. vLLM, which also
    gives its log-probs of the sampled tokens) and package them as a `Rollout`."""
    prompts = format_prompts(tok, records, data_cfg)
    device = next(lm.parameters()).device
    ctx = max_context(lm)
    enc = {k: v.to(device) for k, v in encode_prompts(tok, prompts, ctx).items()}
    prompt_len = enc["input_ids"].shape[1]
    max_new = sampling.max_new_tokens if not ctx else min(sampling.max_new_tokens, ctx - prompt_len)
    n = sampling.num_samples
    eos = stop_ids(tok, lm)
    ids, mask = enc["input_ids"].repeat_interleave(n, 0), enc["attention_mask"].repeat_interleave(n, 0)
    engine_meta = {}
    if engine is None:
        seq = sample(
            lm, ids, mask, max_new, eos, tok.pad_token_id,
            temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p, greedy=sampling.greedy,
            stopped=stop_string_check(tok, sampling.stop),
        )
    else:
        seq, engine_logp = engine.sample(ids, mask, max_new, eos, tok.pad_token_id, sampling)
    gen = seq[:, prompt_len:]
    gen_mask = stop_string_mask(tok, gen, completion_mask(gen, eos), sampling.stop)
    attn = torch.cat([enc["attention_mask"].repeat_interleave(n, 0), gen_mask], 1)
    loss_mask = torch.cat([torch.zeros(seq.shape[0], prompt_len - 1, dtype=torch.long, device=device), gen_mask], 1)
    if engine is not None:
        engine_meta = {"engine_logprobs": engine_logp * loss_mask, "is_cap": engine.is_cap}
    completions = tok.batch_decode(gen * gen_mask + tok.pad_token_id * (1 - gen_mask), skip_special_tokens=True)
    completions = [cut_text(c, sampling.stop) for c in completions]
    answer_field = data_cfg.answer_field
    answers = [r.get(answer_field) for r in records for _ in range(n)]
    scores = verify(data_cfg.verifier, completions, answers)
    outcome = None if any(s is None for s in scores) else torch.tensor(scores, device=device)
    tasks = [str(r["task"]) for r in records for _ in range(n)] if all("task" in r for r in records) else None
    return Rollout(
        actions=seq[:, 1:],
        loss_mask=loss_mask,
        step_ids=torch.zeros_like(loss_mask),
        student_view={"input_ids": seq, "attention_mask": attn, "prompt_len": prompt_len},
        outcome=outcome,
        task=tasks,
        group_ids=torch.arange(len(records), device=device).repeat_interleave(n),
        meta={"completions": completions, "records": [r for r in records for _ in range(n)], **engine_meta},
    )
