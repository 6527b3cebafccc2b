"""Batched multi-turn episodes: a causal LM acting in a batch of gymnasium text environments.

One env instance per episode, stepped side by side (a hand-rolled vector env: string spaces
and per-episode ends do not fit gymnasium's autoresetting vector API). Each turn, the context
of every running episode is left-padded into one batch and the model samples its actions with
the KV-cache sampler (`lm.sample`); each action is decoded, sent to its env, and the env's answer is appended as
context. An episode ends when the env terminates or truncates, at the agent's turn limit, or
when its transcript would outgrow the token cap (`context overflow`, counted as failed). An env
that raises or returns a malformed step ends its episode as failed with a message; it never
stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gymnasium
import torch

from unified_opd.domains.lm import Sampling, sample, stop_ids

from .transcript import Transcript

OVERFLOW = "context overflow"


@dataclass
class Limits:
    max_turns: int  # agent turns per episode (0 = only the env's own truncation)
    max_action_tokens: int  # tokens per action
    max_tokens: int  # transcript length cap (the models' context)


@dataclass
class Episode:
    seed: int
    transcript: Transcript = field(default_factory=Transcript)
    history: List[Tuple[str, str]] = field(default_factory=list)
    pending_obs: str = ""  # the observation the next action answers
    env: Any = None
    turns: int = 0
    total_return: float = 0.0
    success: bool = False
    done: bool = False
    error: Optional[str] = None  # why the episode was cut short (overflow, env failure)

    def fail(self, message: str) -> None:
        self.error, self.done, self.success = message, True, False


class EnvFailure(Exception):
    """The env raised or returned something that is not a gymnasium step."""


def checked_step(env: gymnasium.Env, action: str) -> Tuple[str, float, bool, bool, dict]:
    """`env.step(action)`, turning any exception or malformed result into `EnvFailure`."""
    try:
        result = env.step(action)
    except Exception as e:  # an env bug must end one episode, not the run
        raise EnvFailure(f"env error: {type(e).__name__}: {e}") from e
    if not (isinstance(result, tuple) and len(result) == 5):
        raise EnvFailure("malformed step: expected (observation, reward, terminated, truncated, info)")
    obs, reward, terminated, truncated, info = result
    if not isinstance(obs, str):
        raise EnvFailure(f"malformed step: observation is {type(obs).__name__}, expected str")
    try:
        reward = float(reward)
    except (TypeError, ValueError) as e:
        raise EnvFailure(f"malformed step: reward {reward!r} is not a number") from e
    return obs, reward, bool(terminated), bool(truncated), info if isinstance(info, dict) else {}


def _start(ep: Episode, make_env: Callable, fmt, limits: Limits) -> None:
    try:
        ep.env = make_env()
        obs, _ = ep.env.reset(seed=ep.seed)
    except Exception as e:  # as in checked_step: a broken env fails its episode only
        ep.fail(f"env error at reset: {type(e).__name__}: {e}")
        return
    if not isinstance(obs, str):
        ep.fail(f"malformed reset: observation is {type(obs).__name__}, expected str")
        return
    _observe(ep, fmt, obs, limits)


def _observe(ep: Episode, fmt, obs: str, limits: Limits, stopped: bool = True) -> None:
    """Append the context before the next action, or end the episode if it cannot fit."""
    ids = fmt.context(ep.history, obs, stopped)
    if len(ep.transcript) + len(ids) + 1 > limits.max_tokens:
        ep.fail(f"{OVERFLOW}: the transcript would exceed {limits.max_tokens} tokens at turn {ep.turns}")
        return
    ep.transcript.add(ids, ep.turns, agent=False)
    ep.pending_obs = obs


def _act(ep: Episode, action_ids: List[int], text: str, limits: Limits, fmt, finished: bool) -> None:
    ep.transcript.add(action_ids, ep.turns, agent=True)
    if not finished and len(ep.transcript) >= limits.max_tokens:
        ep.fail(f"{OVERFLOW}: the action reached the {limits.max_tokens}-token limit at turn {ep.turns}")
        return
    try:
        obs, reward, terminated, truncated, info = checked_step(ep.env, text)
    except EnvFailure as e:
        ep.fail(str(e))
        return
    ep.history.append((ep.pending_obs, text))
    ep.turns += 1
    ep.total_return += reward
    ep.success = bool(info.get("success", False))
    if terminated or truncated or (limits.max_turns and ep.turns >= limits.max_turns):
        ep.done = True
        return
    _observe(ep, fmt, obs, limits, finished)


def _left_pad(seqs: Sequence[List[int]], pad_id: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (n - len(s)) + s for s in seqs], device=device)
    attn = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, attn


def _cut(generated: List[int], stops: Sequence[int], room: int) -> Tuple[List[int], bool]:
    """The action's tokens: up to and including the first stop token, at most `room`; finished
    iff a stop token was kept."""
    end = next((i for i, t in enumerate(generated) if t in stops), None)
    if end is not None:
        generated = generated[: end + 1]
    generated = generated[:room]
    return generated, bool(generated) and generated[-1] in stops


@torch.no_grad()
def run_episodes(
    lm, tok, fmt, make_env: Callable, seeds: Sequence[int], sampling: Sampling, limits: Limits, engine=None
) -> List[Episode]:
    """Play one episode per seed with `lm` choosing every action (sampled by `engine`, e.g. vLLM, when
    given); an action ends at the tokenizer's EOS or any EOS id of `lm`'s generation config (a chat
    model's end-of-turn token)."""
    episodes = [Episode(seed=int(s)) for s in seeds]
    for ep in episodes:
        _start(ep, make_env, fmt, limits)
    device = next(lm.parameters()).device
    pad, stops = tok.pad_token_id, stop_ids(tok, lm)
    while True:
        active = [ep for ep in episodes if not ep.done]
        if not active:
            break
        rooms = [limits.max_tokens - len(ep.transcript) for ep in active]
        ids, attn = _left_pad([ep.transcript.ids for ep in active], pad, device)
        new = min(limits.max_action_tokens, max(rooms))
        if engine is None:
            out = sample(
                lm, ids, attn, new, stops, pad,
                temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p, greedy=sampling.greedy,
            )
        else:
            out = engine.sample(ids, attn, new, stops, pad, sampling)[0]
        out = out[:, ids.shape[1] :]
        for ep, row, room in zip(active, out.tolist(), rooms):
            action_ids, finished = _cut(row, stops, min(room, limits.max_action_tokens))
            text = tok.decode(action_ids, skip_special_tokens=True).strip()
            _act(ep, action_ids, text, limits, fmt, finished)
    for ep in episodes:
        if ep.env is not None:
            ep.env.close()
            ep.env = None
    return episodes


def summarise(episodes: Sequence[Episode], prefix: str = "") -> Dict[str, float]:
    """Success rate, mean return, mean turns, and the share of episodes cut short (and why)."""
    n = max(1, len(episodes))
    overflow = sum(1 for ep in episodes if ep.error and ep.error.startswith(OVERFLOW))
    failed = sum(1 for ep in episodes if ep.error) - overflow
    return {
        f"{prefix}success_rate": sum(ep.success for ep in episodes) / n,
        f"{prefix}mean_return": sum(ep.total_return for ep in episodes) / n,
        f"{prefix}mean_turns": sum(ep.turns for ep in episodes) / n,
        f"{prefix}context_overflow": overflow / n,
        f"{prefix}env_failures": failed / n,
    }


def outcome(ep: Episode, kind: str) -> float:
    """The rollout's outcome: episode success (1/0) or its return."""
    return float(ep.success) if kind == "success" else ep.total_return
