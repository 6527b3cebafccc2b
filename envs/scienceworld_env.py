"""`uopd/ScienceWorld-v0`: ScienceWorld's science tasks (Wang et al. 2022) as a gymnasium text env.

Requires the optional `scienceworld` package (`pip install unified_opd[scienceworld]`), which runs
its simulator on Java (OpenJDK 17); it is imported only when this env is made.

Kwargs:

* `tasks`: one task name or a list (default `find-non-living-thing`); the 30 names are
  ScienceWorld's (`boil`, `lifespan-longest-lived`, ...; an unknown one is a ValueError
  listing them);
* `split`: `train` (default), `dev` or `test`: ScienceWorld's own variation split of each task;
  train on `train` and evaluate with `env.eval_kwargs.split: test` for held-out variations;
* `simplification`: ScienceWorld's simplification string (default `""`, none; e.g. `easy`);
* `observe_room` (default True): append the current room's description (ScienceWorld's
  `look`) to every observation, so the agent sees what is there without spending a turn on
  `look around`;
* `gold_path` (default True): have ScienceWorld generate the gold sequence at every reset (the
  expert; up to seconds per load). With False resets are faster, and there is no expert
  (`info` carries no `expert_action`; `expert_action()` raises);
* `max_turns` (default 30), `step_limit` (the simulator's own move limit, default 1000) and
  `java_heap_mb` (each simulator JVM's maximum heap, default 512: Java's default of a quarter
  of the RAM made each one ~2 GB resident, and a batch runs one per episode).

Episodes: a reset with seed s plays task `tasks[s % n]` at variation `split[(s // n) % size]`,
so consecutive seeds cycle through the tasks and then the variations (seeds beyond the
split's size wrap around; an unseeded reset plays the seed after the previous one). The first observation is the task description and the room::

    task: Your task is to find a(n) non-living thing. First, focus on the thing. ...
    This room is called the hallway. In it, you see: ...

Objects and doors are listed one per line in sorted order (`sorted_listings`): the simulator's
own order changes between loads of the same variation.

Actions: ScienceWorld's free-text commands (`open door to kitchen`, `go to kitchen`, `focus on
painting`, `move painting to red box`, ...); one it cannot parse gets its own answer (`No known
action matches that input.`) and costs nothing.

Reward: the change of ScienceWorld's score (0-100) divided by 100, with negative scores clipped
to 0 (a wrong `focus on` ends the task at -100 in ScienceWorld; here it ends at 0), so an
episode's return is its final score / 100 and `success` is a score of 100. The episode
terminates when ScienceWorld marks the task completed (solved or failed).

Expert: `env.unwrapped.expert_action()` -- the next action of ScienceWorld's gold action
sequence (`generateGoldPath=True`) after the longest gold prefix the agent has followed; while
the agent plays only gold actions this replays the gold sequence, which solves the task.

Simulators are JVM processes that take seconds to start, so a closed env returns its simulator
to a process-wide pool and the next env made takes it from there.
"""

from __future__ import annotations

import os
from typing import Sequence

from .text_env import TextEnv

INSTALL_HINT = "ScienceWorld environments need the scienceworld package (and Java 17): pip install unified_opd[scienceworld]"
SPLITS = ("train", "dev", "test")
_POOL: list = []  # idle simulators (ScienceWorldEnv objects)
_SPLITS: dict = {}  # (task, split) -> its variations: loading a task to ask costs up to a second


def _launch(heap_mb: int):
    try:
        from scienceworld import ScienceWorldEnv
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    # scienceworld passes no JVM options; Java's default heap (a quarter of the RAM, ~2 GB
    # resident here) times one simulator per running episode would not fit the machine
    before = os.environ.get("JAVA_TOOL_OPTIONS")
    os.environ["JAVA_TOOL_OPTIONS"] = f"{before or ''} -Xmx{heap_mb}m".strip()
    try:
        return ScienceWorldEnv("")
    finally:
        if before is None:
            del os.environ["JAVA_TOOL_OPTIONS"]
        else:
            os.environ["JAVA_TOOL_OPTIONS"] = before


def _simulator(step_limit: int, heap_mb: int):
    sim = _POOL.pop() if _POOL else _launch(heap_mb)
    sim.envStepLimit = step_limit
    return sim


def _variations(sim, task: str, split: str) -> list:
    if (task, split) not in _SPLITS:
        sim.load(task, 0, "")
        ask = {"train": sim.get_variations_train, "dev": sim.get_variations_dev, "test": sim.get_variations_test}[split]
        _SPLITS[task, split] = list(ask())
    return _SPLITS[task, split]


def sorted_listings(text: str) -> str:
    """`text` with each run of tab-indented lines (a room's objects, its doors) sorted: the
    simulator lists them in an order that changes between loads of the same variation."""
    out, run = [], []
    for line in text.split("\n"):
        if line.startswith("\t"):
            run.append(line)
            continue
        out += sorted(run) + [line]
        run = []
    return "\n".join(out + sorted(run))


class ScienceWorldEnv(TextEnv):
    def __init__(
        self,
        tasks: str | Sequence[str] = "find-non-living-thing",
        split: str = "train",
        simplification: str = "",
        observe_room: bool = True,
        gold_path: bool = True,
        max_turns: int = 30,
        step_limit: int = 1000,
        java_heap_mb: int = 512,
        render_mode: str | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        super().__init__(max_turns=max_turns, invalid_penalty=0.0, obs_max_length=8192, action_max_length=256, render_mode=render_mode)
        self.tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        self._sim = _simulator(step_limit, java_heap_mb)
        known = list(self._sim.get_task_names())
        unknown = [t for t in self.tasks if t not in known]
        if not self.tasks or unknown:
            self.close()
            raise ValueError(f"tasks: unknown ScienceWorld task(s) {unknown or self.tasks}; available: {', '.join(known)}")
        self.split, self.simplification, self.observe_room, self.gold_path = split, simplification, observe_room, gold_path
        self._splits = {t: _variations(self._sim, t, split) for t in self.tasks}
        self._seed = -1

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        # the seed picks the episode; an unseeded reset plays the next one
        self._seed = int(seed) if seed is not None else self._seed + 1
        return super().reset(seed=seed, options=options)

    def episode(self, seed: int) -> tuple[str, int]:
        """(task, variation) a reset with `seed` plays."""
        task = self.tasks[seed % len(self.tasks)]
        variations = self._splits[task]
        return task, variations[(seed // len(self.tasks)) % len(variations)]

    def _start(self) -> str:
        self.task, self.variation = self.episode(self._seed)
        self._sim.load(self.task, self.variation, self.simplification, generateGoldPath=self.gold_path)
        self.gold = list(self._sim.get_gold_action_sequence()) if self.gold_path else []
        self._followed = 0  # gold actions followed so far
        obs, info = self._sim.reset()
        self._score = 0
        return self._with_room(f"task: {self._sim.get_task_description()}", info)

    def _with_room(self, text: str, info: dict) -> str:
        look = info.get("look", "")
        text = f"{text}\n{look}" if self.observe_room and look and look.strip() != text.strip() else text
        return sorted_listings(text)

    def _act(self, action: str) -> tuple[str, float, bool]:
        if self._followed < len(self.gold) and action == self.gold[self._followed]:
            self._followed += 1
        obs, _, completed, info = self._sim.step(action)
        score = max(0, int(info["score"]))
        reward, self._score = (score - self._score) / 100.0, score
        self._success = score >= 100
        return self._with_room(obs.strip(), info), reward, bool(completed)

    def expert_action(self) -> str:
        if not self.gold_path:
            raise RuntimeError("ScienceWorld env made with gold_path=False has no expert")
        return self.gold[self._followed] if self._followed < len(self.gold) else "look around"

    def _info(self) -> dict:
        if self.gold_path:
            return super()._info()
        return {"turn": self._turn, "success": self._success}

    def close(self):
        if getattr(self, "_sim", None) is not None:
            _POOL.append(self._sim)
            self._sim = None
        super().close()
