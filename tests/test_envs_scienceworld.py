"""`uopd/ScienceWorld-v0` on ScienceWorld's simulator: the task/variation split, score as reward,
the gold sequence as expert. Skipped without the scienceworld package or Java."""

import os
import shutil

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("scienceworld")
if shutil.which("java") is None:
    pytest.skip("ScienceWorld's simulator needs Java", allow_module_level=True)

import unified_opd.envs  # noqa: E402,F401  (registers the ids)
from unified_opd.envs import scienceworld_env  # noqa: E402

TASKS = ["find-non-living-thing", "lifespan-longest-lived"]


def play_expert(env, seed):
    obs, info = env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(info["expert_action"])
        total += reward
        steps += 1
        if terminated or truncated:
            return info["success"], total, steps


def test_seeds_cycle_tasks_then_the_splits_variations():
    env = gym.make("uopd/ScienceWorld-v0", tasks=TASKS, split="test").unwrapped
    test = scienceworld_env._SPLITS["find-non-living-thing", "test"]
    assert [env.episode(s) for s in (0, 1, 2)] == [(TASKS[0], test[0]), (TASKS[1], scienceworld_env._SPLITS[TASKS[1], "test"][0]), (TASKS[0], test[1])]
    train = gym.make("uopd/ScienceWorld-v0", tasks=TASKS[0]).unwrapped
    assert not set(train._splits[TASKS[0]]) & set(test)  # held-out variations are not trained on
    obs, _ = env.reset(seed=2)
    assert obs.startswith("task: Your task is to find a(n) non-living thing") and "This room is called" in obs
    env.close()
    train.close()


def test_the_gold_sequence_solves_with_return_one_and_score_as_reward():
    env = gym.make("uopd/ScienceWorld-v0", tasks=TASKS)
    check_env(env.unwrapped, skip_render_check=True)
    for seed in (0, 1, 5):
        success, total, steps = play_expert(env, seed)
        assert success and total == pytest.approx(1.0) and steps <= 10
    env.close()


def test_a_wrong_focus_ends_the_task_at_score_zero_and_unknown_commands_cost_nothing():
    env = gym.make("uopd/ScienceWorld-v0", tasks="lifespan-longest-lived")
    env.reset(seed=0)
    obs, reward, terminated, *_ = env.step("dance with the bear")
    assert "No known action" in obs and reward == 0.0 and not terminated
    _, reward, terminated, _, info = env.step(info_expert := env.unwrapped.expert_action())
    assert info_expert.startswith("open door") and not terminated
    _, reward, terminated, _, info = env.step("focus on air")
    assert terminated and not info["success"] and env.unwrapped._score == 0
    env.close()


def test_bad_kwargs_name_them_and_closed_simulators_are_reused():
    with pytest.raises(ValueError, match="tasks: unknown ScienceWorld task.*'boil-water'.*available: boil"):
        gym.make("uopd/ScienceWorld-v0", tasks="boil-water")
    with pytest.raises(ValueError, match="split: expected one of"):
        gym.make("uopd/ScienceWorld-v0", split="validation")
    env = gym.make("uopd/ScienceWorld-v0")
    sim = env.unwrapped._sim
    env.close()
    again = gym.make("uopd/ScienceWorld-v0")
    assert again.unwrapped._sim is sim
    again.close()


def test_a_simulators_heap_is_capped_without_changing_this_process_env(monkeypatch):
    monkeypatch.setattr(scienceworld_env, "_POOL", [])  # force a fresh JVM
    monkeypatch.delenv("JAVA_TOOL_OPTIONS", raising=False)
    env = gym.make("uopd/ScienceWorld-v0", java_heap_mb=256)
    java = env.unwrapped._sim._gateway.java_process.pid
    with open(f"/proc/{java}/environ", "rb") as f:
        assert b"JAVA_TOOL_OPTIONS=-Xmx256m" in f.read().split(b"\0")
    assert "JAVA_TOOL_OPTIONS" not in os.environ
    # not pooled (this test's pool is thrown away): shut the JVM down and close its stdin pipe and
    # temporary directory, which scienceworld leaves open (a ResourceWarning in whatever test
    # runs when they are collected)
    sim, env.unwrapped._sim = env.unwrapped._sim, None
    process = sim._gateway.java_process
    sim.close()
    sim.close = lambda: None  # its __del__ would close it again, reopening nothing
    process.stdin.close()
    process.wait(timeout=30)
    sim._obj_tree_tempdir.cleanup()
