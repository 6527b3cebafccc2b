import copy
import importlib
import sys
import warnings
from collections import deque

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import unified_opd.envs as uenvs
from unified_opd.envs import expert_action
from unified_opd.envs.calculator import evaluate
from unified_opd.envs.keydoor import COLORS

CASES = [
    ("uopd/KeyDoor-v0", {}),
    ("uopd/KeyDoor-v0", {"depth": 12, "side_rooms": 4, "key_distance": 3}),
    ("uopd/Shop-v0", {}),
    ("uopd/ToolCalc-v0", {}),
    ("uopd/ToolCalc-v0", {"n_lookups": 3}),
]
IDS = [f"{i}{kw}" for i, kw in CASES]
GARBAGE = ["", "xyzzy", "go", "go up", "take key", "{", '{"tool": "nope"}', "[1, 2]", "snow\u2603 \x00", "a" * 5000]


def run_expert(env, seed):
    obs, info = env.reset(seed=seed)
    steps, total = 0, 0.0
    while True:
        obs, reward, terminated, truncated, info = env.step(expert_action(env))
        steps += 1
        total += reward
        assert obs in env.observation_space
        if terminated or truncated:
            return info["success"], steps, total


def rollout(env, seed, actions):
    out = [env.reset(seed=seed)[0]]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, terminated, truncated, info.get("expert_action")))
        if terminated or truncated:
            break
    return out


def test_ids_registered_and_double_import_is_harmless():
    importlib.reload(uenvs)
    assert {"uopd/KeyDoor-v0", "uopd/Shop-v0", "uopd/ToolCalc-v0", "uopd/TextWorld-v0"} <= set(uenvs.registered_ids())


def test_make_unknown_id_names_it_and_suggests():
    with pytest.raises(ValueError, match=r"'uopd/KeyDor-v0'.*Did you mean 'uopd/KeyDoor-v0'.*uopd/Shop-v0"):
        uenvs.make("uopd/KeyDor-v0")
    assert uenvs.make("uopd/Shop-v0").unwrapped.__class__.__name__ == "ShopEnv"


def test_package_imports_without_textworld(monkeypatch):
    monkeypatch.setitem(sys.modules, "textworld", None)
    importlib.reload(uenvs)
    with pytest.raises(ImportError, match=r"pip install unified_opd\[textworld\]"):
        gym.make("uopd/TextWorld-v0")


@pytest.mark.parametrize("env_id,kwargs", CASES, ids=IDS)
def test_check_env_passes_without_warnings(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("env_id,kwargs", CASES, ids=IDS)
def test_same_seed_same_episode_and_seeds_differ(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    # A fixed mix of expert-like and nonsense actions exercises both branches of step().
    actions = ["go n", "take red key", "search cotton shirt", "back", '{"tool": "lookup", "key": "tea"}'] * 3
    assert rollout(env, 7, actions) == rollout(env, 7, actions)
    firsts = {env.reset(seed=s)[0] + str(env.unwrapped.expert_action()) for s in range(10)}
    assert len(firsts) > 3


@pytest.mark.parametrize("env_id,kwargs", CASES, ids=IDS)
def test_expert_solves_every_seed(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    for seed in range(20):
        success, _, total = run_expert(env, seed)
        assert success, seed
        assert total == pytest.approx(1.0)


@pytest.mark.parametrize("depth", range(1, 16))
def test_keydoor_expert_takes_exactly_depth_steps(depth):
    env = gym.make("uopd/KeyDoor-v0", depth=depth, key_distance=2)
    for seed in range(8):
        assert run_expert(env, seed)[:2] == (True, depth)


def test_shop_and_toolcalc_expert_step_counts():
    shop = gym.make("uopd/Shop-v0")
    for seed in range(10):
        shop.reset(seed=seed)
        assert run_expert(shop, seed)[1] == 3 + len(shop.unwrapped.want)
    for n in (1, 2, 4):
        calc = gym.make("uopd/ToolCalc-v0", n_lookups=n)
        assert all(run_expert(calc, seed)[1] == n + 2 for seed in range(5))


def keydoor_state(env):
    e = env.unwrapped
    return (e.room, tuple(sorted(e.inventory)), tuple(sorted(e.locks.values())),
            tuple(sorted((r, tuple(sorted(c))) for r, c in e.items.items())))


def keydoor_shortest(env):
    """Breadth-first search over copies of the env: fewest actions to the goal."""
    actions = [f"{v} {d}" for v in ("go", "open") for d in "nesw"] + [f"take {c} key" for c in COLORS]
    queue, seen = deque([(env, 0)]), {keydoor_state(env)}
    while queue:
        node, dist = queue.popleft()
        for a in actions:
            child = copy.deepcopy(node)
            _, _, terminated, _, _ = child.unwrapped.step(a)
            if terminated:
                return dist + 1
            if keydoor_state(child) not in seen:
                seen.add(keydoor_state(child))
                queue.append((child, dist + 1))
    raise AssertionError("goal unreachable")


@pytest.mark.parametrize("seed", range(6))
def test_keydoor_expert_is_optimal_after_random_detours(seed):
    env = gym.make("uopd/KeyDoor-v0", depth=7, side_rooms=3, key_distance=3, max_turns=100).unwrapped
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(8):
        d = "nesw"[rng.integers(4)]
        color = COLORS[rng.integers(len(COLORS))]
        _, _, terminated, _, _ = env.step(str(rng.choice([f"go {d}", f"open {d}", f"take {color} key"])))
        if terminated:
            return
    best = keydoor_shortest(env)
    steps = 0
    while True:
        _, _, terminated, _, info = env.step(env.expert_action())
        steps += 1
        if terminated:
            break
    assert info["success"] and steps == best


@pytest.mark.parametrize("env_id,kwargs", CASES, ids=IDS)
def test_invalid_actions_are_error_observations(env_id, kwargs):
    env = gym.make(env_id, max_turns=50, **kwargs)
    env.reset(seed=3)
    penalty = env.unwrapped.invalid_penalty
    for action in GARBAGE:
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs in env.observation_space
        assert ("invalid action" in obs) or obs.startswith("error:"), obs
        assert (reward, terminated, truncated, info["success"]) == (-penalty, False, False, False)
    while True:
        _, _, terminated, _, info = env.step(info["expert_action"])
        if terminated:
            break
    assert info["success"]


@pytest.mark.parametrize("env_id", ["uopd/KeyDoor-v0", "uopd/Shop-v0", "uopd/ToolCalc-v0"])
def test_max_turns_truncates_and_step_after_end_raises(env_id):
    env = gym.make(env_id, max_turns=3).unwrapped
    env.reset(seed=0)
    flags = [env.step("nonsense")[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step("nonsense")


@pytest.mark.parametrize("env_id,kwargs", CASES, ids=IDS)
def test_sync_vector_env_runs_experts_to_success(env_id, kwargs):
    n = 3
    vec = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, **kwargs) for _ in range(n)])
    obs, info = vec.reset(seed=[1, 2, 3])
    assert len(obs) == n and all(isinstance(o, str) for o in obs)
    done = np.zeros(n, dtype=bool)
    success = np.zeros(n, dtype=bool)
    while not done.all():
        # Finished sub-envs autoreset on their next step; any action is fine for them.
        actions = [info["expert_action"][i] if info["_expert_action"][i] else "x" for i in range(n)]
        obs, reward, terminated, truncated, info = vec.step(actions)
        newly = (terminated | truncated) & ~done
        success[newly] = info["success"][newly]
        done |= terminated | truncated
    assert success.all()


def test_keydoor_observation_grammar():
    env = gym.make("uopd/KeyDoor-v0", depth=3).unwrapped
    obs, _ = env.reset(seed=0)
    assert obs.startswith("room 0 (goal ") and " doors: " in obs and " items: " in obs and " inv: -. way: " in obs
    assert len(obs) < 180
    missing = next(d for d in "nesw" if d not in env.exits[env.room])
    obs, reward, *_ = env.step(f"go {missing}")
    assert obs.startswith("no door ") and reward == -env.invalid_penalty


@pytest.mark.parametrize("seed", range(10))
def test_keydoor_signpost_names_the_experts_door(seed):
    env = gym.make("uopd/KeyDoor-v0", depth=7, max_turns=100).unwrapped
    obs, _ = env.reset(seed=seed)
    while True:
        way = obs.rsplit(" way: ", 1)[1]
        action = env.expert_action()
        if not action.startswith("take"):  # go / open name the signposted door
            assert way.startswith(action.split()[1])
        assert ("(locked" in way) == action.startswith(("take", "open"))
        obs, _, terminated, _, _ = env.step(action)
        if terminated:
            break
    assert " way: " not in gym.make("uopd/KeyDoor-v0", signpost=False).reset(seed=seed)[0]


def test_shop_partial_reward_without_options():
    env = gym.make("uopd/Shop-v0").unwrapped
    for seed in range(5):
        env.reset(seed=seed)
        env.step(env.expert_action())
        env.step(env.expert_action())
        obs, reward, terminated, _, info = env.step("buy")
        assert terminated and not info["success"]
        assert reward == pytest.approx(2 / (len(env.want) + 2))
        assert obs.startswith("bought ")


def test_shop_click_takes_a_result_number():
    env = gym.make("uopd/Shop-v0").unwrapped
    env.reset(seed=3)
    obs, *_ = env.step(env.expert_action())
    assert obs.split("results: ")[1].startswith("[1] ")
    for bad in ("click 0", f"click {len(env.results) + 1}", "click p1", "click"):
        obs, reward, *_ = env.step(bad)
        assert obs.startswith("invalid action. ") and reward == -env.invalid_penalty
    obs, *_ = env.step("click 2")
    assert env.page == "product" and env.product is env.results[1]


def test_shop_wrong_type_is_mostly_penalised():
    env = gym.make("uopd/Shop-v0", n_products=30).unwrapped
    env.reset(seed=4)
    other = next(p for p in env.catalogue if p.kind != env.target.kind)
    env.step(f"search {other.attribute} {other.kind}")
    env.step(f"click {env.results.index(other) + 1}")
    _, reward, terminated, _, _ = env.step("buy")
    assert terminated and 0 <= reward <= 0.1


def test_toolcalc_answers_and_errors():
    env = gym.make("uopd/ToolCalc-v0").unwrapped
    env.reset(seed=5)
    key = env.needed[0]
    assert env.step('{"tool": "lookup", "key": "%s"}' % key)[0] == f"result: {env.prices[key]}"
    assert env.step('{"tool": "calculator", "expr": "1/0"}')[0] == "error: division by zero"
    assert env.step('{"tool": "lookup", "key": "unobtainium"}')[0].startswith("error: unknown key")
    assert env.step('{"tool": "calculator"}')[0] == 'error: calculator needs "expr"'
    obs, reward, terminated, _, info = env.step('{"answer": %s}' % env.answer)
    assert (obs, reward, terminated, info["success"]) == ("correct.", 1.0, True, True)
    env.reset(seed=5)
    obs, reward, terminated, _, info = env.step('{"answer": "%d"}' % (int(env.answer) + 1))
    assert obs.startswith("wrong") and (reward, terminated, info["success"]) == (0.0, True, False)


def test_calculator_rejects_code():
    assert evaluate("2*(3+4) - 10/4") == 11.5
    for bad in ["__import__('os')", "a+1", "2**10", "[1]", "1 if 1 else 2"]:
        with pytest.raises(ValueError):
            evaluate(bad)
