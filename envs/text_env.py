"""Shared machinery of the text environments: string spaces, the turn limit and the info dict.

Every environment here observes and acts in short ASCII strings. A subclass implements
`_start()` (build the episode from `self.np_random`, return the first observation),
`_act(action)` (apply one stripped action string, return `(observation, reward, terminated)`)
and `expert_action()` (the optimal next action from the current state).

`info` always carries `turn` and `success` (True once the episode's goal is met), and carries
`expert_action` while the episode is still running, so that a data generator can record the
expert's choice at every state the student visits.
"""

from __future__ import annotations

import abc

import gymnasium as gym
from gymnasium import spaces

CHARSET = "".join(chr(c) for c in range(32, 127)) + "\n"
_ALLOWED = frozenset(CHARSET)


def text_space(max_length: int) -> spaces.Text:
    """A Text space over printable ASCII plus newline; empty strings are allowed."""
    return spaces.Text(max_length=max_length, min_length=0, charset=CHARSET)


def expert_action(env: gym.Env) -> str:
    """The scripted expert's next action for `env` (wrapped or not)."""
    return env.unwrapped.expert_action()


class TextEnv(gym.Env, abc.ABC):
    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        max_turns: int,
        invalid_penalty: float = 0.1,
        obs_max_length: int = 1024,
        action_max_length: int = 256,
        render_mode: str | None = None,
    ):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.max_turns = max_turns
        self.invalid_penalty = invalid_penalty
        self.render_mode = render_mode
        self.observation_space = text_space(obs_max_length)
        self.action_space = text_space(action_max_length)
        self._obs: str | None = None
        self._turn = 0
        self._done = True
        self._success = False

    @abc.abstractmethod
    def _start(self) -> str:
        """Set up a new episode (after `reset` has seeded `self.np_random`); the first observation."""

    @abc.abstractmethod
    def _act(self, action: str) -> tuple[str, float, bool]:
        """Apply one stripped action: (observation, reward, terminated)."""

    @abc.abstractmethod
    def expert_action(self) -> str:
        """The scripted expert's next action (the zoo teachers are trained on these)."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._turn = 0
        self._done = False
        self._success = False
        self._obs = self._fit(self._start())
        return self._obs, self._info()

    def step(self, action):
        if self._done:
            raise RuntimeError("episode is over (or never started): call reset() before step()")
        self._turn += 1
        obs, reward, terminated = self._act(str(action).strip())
        truncated = not terminated and self._turn >= self.max_turns
        self._done = terminated or truncated
        self._obs = self._fit(obs)
        return self._obs, float(reward), terminated, truncated, self._info()

    def render(self):
        if self.render_mode == "ansi":
            return self._obs
        return None

    def _info(self) -> dict:
        info = {"turn": self._turn, "success": self._success}
        if not self._done:
            info["expert_action"] = self.expert_action()
        return info

    def _fit(self, text: str) -> str:
        # Observations must stay inside the declared Text space whatever the game prints.
        text = "".join(c if c in _ALLOWED else " " for c in text)
        return text[: self.observation_space.max_length]
