"""`uopd/TextWorld-v0`: TextWorld challenge games (tw-simple, tw-coin_collector, ...) as text envs.

Requires the optional `textworld` package (`pip install unified_opd[textworld]`); it is imported
only when this environment is constructed.

Kwargs: `challenge` (default "tw-coin_collector"), `settings` (merged over the challenge's
defaults: `{"level": 1}` for coin_collector/treasure_hunter, `{"rewards": "dense", "goal":
"detailed", "test": False}` for tw-simple; other challenges need their full settings),
`n_games` (size of the game pool; a reset draws one from it with the reset seed),
`game_seed` (pool game i is generated with seed `game_seed + i`) and `cache_dir` (compiled
games; default `$UOPD_TEXTWORLD_CACHE` or `~/.cache/unified_opd/textworld`).

Observation: the game's feedback with the ASCII banner, prompt and status bar removed and
whitespace collapsed, then, while the game runs, the admissible commands::

    -= Kitchenette =- You are now in the kitchenette. ... try going north.
    actions: go north | inventory | look

Actions: any one of the listed admissible commands (matched ignoring case and extra spaces).
Anything else gets `invalid action. actions: ...` and costs `invalid_penalty`, without being
sent to the game (so `quit`/`restart` dialogues cannot happen).

Reward: the game's score gain divided by its maximum score (a won game sums to 1);
`success` is TextWorld's `won`. The episode terminates when the game is won or lost.

Expert: `env.unwrapped.expert_action()` -- the first of TextWorld's `policy_commands` (its
shortest winning plan from the current state), or `look` when the game can no longer be won.
"""

from __future__ import annotations

import re

from .text_env import TextEnv
from .textworld_games import DEFAULT_SETTINGS, default_cache_dir, game_file, quiet_jericho, require_textworld

_LETTERS = re.compile(r"[A-Za-z]{3}")


def clean_feedback(text: str) -> str:
    """One line of game text: no banner art, prompt or status bar, single spaces."""
    # The game over text ends with an Inform "restart/restore/quit" menu the agent cannot use.
    text = text.split("\n>")[0].split("Would you like to RESTART")[0]
    lines = (line.strip() for line in text.splitlines())
    return " ".join(" ".join(line.split()) for line in lines if _LETTERS.search(line))


def _normalize(command: str) -> str:
    return " ".join(command.lower().split())


class TextWorldEnv(TextEnv):
    def __init__(
        self,
        challenge: str = "tw-coin_collector",
        settings: dict | None = None,
        n_games: int = 4,
        game_seed: int = 0,
        cache_dir: str | None = None,
        max_turns: int = 50,
        invalid_penalty: float = 0.1,
        render_mode: str | None = None,
    ):
        self._textworld = require_textworld()
        if n_games < 1:
            raise ValueError(f"n_games must be >= 1, got {n_games}")
        super().__init__(
            max_turns=max_turns,
            invalid_penalty=invalid_penalty,
            obs_max_length=4096,
            action_max_length=256,
            render_mode=render_mode,
        )
        self.challenge = challenge
        self.settings = {**DEFAULT_SETTINGS.get(challenge, {}), **(settings or {})}
        self.n_games = n_games
        self.game_seed = game_seed
        self.cache_dir = cache_dir or default_cache_dir()
        self._games: dict[str, object] = {}
        self._state = None

    def _start(self) -> str:
        index = int(self.np_random.integers(self.n_games))
        path = game_file(self.challenge, self.settings, self.game_seed + index, self.cache_dir)
        with quiet_jericho():
            if path not in self._games:
                infos = self._textworld.EnvInfos(
                    admissible_commands=True, policy_commands=True, won=True, lost=True, score=True, max_score=True
                )
                self._games[path] = self._textworld.start(path, request_infos=infos)
            self._game = self._games[path]
            self._state = self._game.reset()
        return self._describe(clean_feedback(self._state.feedback))

    def _describe(self, text: str) -> str:
        return f"{text}\nactions: {' | '.join(self._state.admissible_commands)}"

    def _act(self, action: str) -> tuple[str, float, bool]:
        commands = {_normalize(c): c for c in self._state.admissible_commands}
        if _normalize(action) not in commands:
            return self._describe("invalid action."), -self.invalid_penalty, False
        before = self._state.score
        with quiet_jericho():
            self._state, _, done = self._game.step(commands[_normalize(action)])
        reward = (self._state.score - before) / max(self._state.max_score, 1)
        self._success = bool(self._state.won)
        feedback = clean_feedback(self._state.feedback)
        return (feedback if done else self._describe(feedback)), reward, bool(done)

    def expert_action(self) -> str:
        policy = self._state.policy_commands
        return policy[0] if policy else "look"

    def close(self):
        for game in self._games.values():
            game.close()
        self._games.clear()
        super().close()
