"""Multi-turn transcripts: how observations and actions become one token sequence.

Plain format (tokenizers without a chat template, e.g. the zoo's word-level tokenizer)::

    <s>{obs_0}\n> {action_0}</s>\n{obs_1}\n> {action_1}</s> ...

Chat format (tokenizers with a chat template): the episode is a conversation, the env's
observations are `user` messages and the agent's actions `assistant` messages (an optional
`system` message first); the context before each action is the template's rendering of the
new user turn plus the generation prompt. An env that declares OpenAI function tools
(`unified_opd.envs.tool_calls`) has them rendered by the template (`tools=`), and an
observation answering an action that called one of them is a `tool` message. The assistant
message is the agent's text as sampled (a call in the function-call JSON shape is kept as the
text the agent wrote, not re-rendered from `tool_calls`, so the trained tokens are the sampled ones).

Either way a transcript is a list of segments: **context** (environment text and template
glue, never trained on) and **action** tokens exactly as the agent sampled them, up to and
including its EOS. `pack` turns a batch of transcripts into a `Rollout` aligned like the text
domain: position p predicts token p+1, so `loss_mask[p] = 1` iff token p+1 is an agent token,
and `step_ids[p]` is the turn of token p+1 (its observation and its action; -1 on padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch

from unified_opd.domains.lm import uses_chat_template
from unified_opd.envs.tool_calls import parse_function_call, tool_names
from unified_opd.errors import UserError
from unified_opd.rollout import Rollout

PAD_STEP = -1  # step id of padding positions (never selected: their loss_mask is 0)


@dataclass
class Transcript:
    """One episode's token ids, with per-token agent flags and turn indices."""

    ids: List[int] = field(default_factory=list)
    agent: List[bool] = field(default_factory=list)
    turn: List[int] = field(default_factory=list)

    def add(self, ids: Sequence[int], turn: int, agent: bool) -> None:
        self.ids.extend(int(i) for i in ids)
        self.agent.extend([agent] * len(ids))
        self.turn.extend([turn] * len(ids))

    def __len__(self) -> int:
        return len(self.ids)


class PlainFormat:
    """`<s>obs\\n> action</s>\\nobs\\n> ...` (see module docstring)."""

    PROMPT = "\n> "

    def __init__(self, tok):
        self.tok = tok

    def context(self, history: Sequence[Tuple[str, str]], obs: str, stopped: bool = True) -> List[int]:
        """Tokens between the previous action's EOS (or the start) and the next action; `stopped`
        (see `ChatFormat.context`) changes nothing here: the plain format adds no end-of-turn text."""
        text = ("" if not history else "\n") + obs + self.PROMPT
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        bos = self.tok.bos_token_id
        return ([bos] if not history and bos is not None else []) + ids


class ChatFormat:
    """Observations as user (or tool) turns, actions as assistant turns, rendered by the tokenizer's
    template. `stop_tokens`: the texts of the tokens that end an agent turn (default the EOS)."""

    def __init__(self, tok, system_prompt: Optional[str] = None, stop_tokens: Optional[Sequence[str]] = None, tools=None):
        self.tok = tok
        self.system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        stops = [tok.eos_token] if stop_tokens is None else stop_tokens
        self.stop_tokens = sorted({s for s in stops if s}, key=len, reverse=True)
        self.tools = list(tools) if tools else None
        self.tool_names = tool_names(self.tools)

    def _render(self, messages: list, generation_prompt: bool) -> str:
        return self.tok.apply_chat_template(
            messages, tools=self.tools, tokenize=False, add_generation_prompt=generation_prompt
        )

    def messages(self, history: Sequence[Tuple[str, str]], obs: str) -> List[dict]:
        """The conversation up to `obs`; an observation after a call of a declared tool is a tool turn."""
        messages, role = list(self.system), "user"
        for o, a in history:
            messages += [{"role": role, "content": o}, {"role": "assistant", "content": a}]
            role = "tool" if parse_function_call(a, self.tool_names) else "user"
        return messages + [{"role": role, "content": obs}]

    def context(self, history: Sequence[Tuple[str, str]], obs: str, stopped: bool = True) -> List[int]:
        """`stopped`: the last action ended with a stop token (else it ran out of tokens, and the
        template's end-of-turn text is context)."""
        messages = self.messages(history, obs)
        current = self._render(messages, True)
        if not history:
            return self.tok(current, add_special_tokens=False)["input_ids"]
        previous = self._render(messages[:-1], False)
        last = history[-1][1]
        end = previous.rfind(last) + len(last) if last else len(previous)
        if not current.startswith(previous) or end < len(last):
            raise UserError(
                "rollout.chat_template: the tokenizer's chat template does not render turns as a growing prefix; "
                "use rollout.chat_template=never"
            )
        # the agent's own tokens stop at its EOS; whatever the template prints after that
        # (e.g. a newline after <|im_end|>) is context and opens the next segment
        tail = previous[end:]
        stop = next((s for s in self.stop_tokens if tail.startswith(s)), "") if stopped else ""
        tail = tail[len(stop) :]
        return self.tok(tail + current[len(previous) :], add_special_tokens=False)["input_ids"]


def make_format(tok, mode: str, system_prompt: Optional[str], stop_tokens: Optional[Sequence[str]] = None, tools=None):
    """`auto` uses the chat template when the tokenizer has one; `always` requires it. Tools are
    shown only through a chat template (the plain format has no place for them)."""
    if uses_chat_template(tok, mode, "rollout.chat_template"):
        return ChatFormat(tok, system_prompt, stop_tokens, tools)
    return PlainFormat(tok)


def pack(transcripts: Sequence[Transcript], pad_id: int, device=None) -> dict:
    """Right-pad transcripts to `[B, L]` and align agent flags/turns to next-token positions."""
    length = max(2, max(len(t) for t in transcripts))
    b = len(transcripts)
    ids = torch.full((b, length), pad_id, dtype=torch.long)
    attn = torch.zeros((b, length), dtype=torch.long)
    agent = torch.zeros((b, length), dtype=torch.long)
    turn = torch.full((b, length), PAD_STEP, dtype=torch.long)
    for i, t in enumerate(transcripts):
        n = len(t)
        ids[i, :n] = torch.tensor(t.ids, dtype=torch.long)
        attn[i, :n] = 1
        agent[i, :n] = torch.tensor(t.agent, dtype=torch.long)
        turn[i, :n] = torch.tensor(t.turn, dtype=torch.long)
    out = {
        "input_ids": ids,
        "attention_mask": attn,
        "loss_mask": agent[:, 1:],
        "step_ids": turn[:, 1:],
    }
    return {k: v.to(device) if device is not None else v for k, v in out.items()}


def to_rollout(transcripts: Sequence[Transcript], pad_id: int, device=None, **fields) -> Rollout:
    """A `Rollout` over the whole transcripts; the view is scored in one forward pass."""
    p = pack(transcripts, pad_id, device)
    view = {"input_ids": p["input_ids"], "attention_mask": p["attention_mask"], "prompt_len": 0}
    return Rollout(
        actions=p["input_ids"][:, 1:],
        loss_mask=p["loss_mask"],
        step_ids=p["step_ids"],
        student_view=view,
        **fields,
    )
