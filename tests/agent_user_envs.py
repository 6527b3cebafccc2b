"""A user's own gymnasium text env, registered when this module is imported (as a user's package
would be): `uopd train ... env.id=agent_user_envs:UserEcho-v0` or `env.id=agent_user_envs/Echo-v0`.
Tests must not import it themselves: that it gets imported is what they check."""

from __future__ import annotations

import gymnasium


class Echo(gymnasium.Env):
    """Asks for a word; answering with it succeeds, anything else gets the question again."""

    observation_space = gymnasium.spaces.Text(64)
    action_space = gymnasium.spaces.Text(64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.word = ("north", "south", "east")[int(self.np_random.integers(3))]
        return f"say {self.word}", {}

    def step(self, action):
        ok = action.strip() == self.word
        return ("well done" if ok else f"say {self.word}"), float(ok), ok, False, {"success": ok}


for _id in ("UserEcho-v0", "agent_user_envs/Echo-v0"):
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point=Echo, max_episode_steps=3)
