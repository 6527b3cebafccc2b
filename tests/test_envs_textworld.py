import shutil
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("textworld")

import unified_opd.envs  # noqa: E402,F401  (registers the ids)
from unified_opd.envs.textworld_env import clean_feedback  # noqa: E402
from textworld_fixtures import tw_make  # noqa: E402


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tw_games"))


def make(cache_dir, **kwargs):
    kwargs = {"challenge": "tw-coin_collector", "settings": {"level": 2}, "n_games": 1, **kwargs}
    return gym.make("uopd/TextWorld-v0", cache_dir=cache_dir, **kwargs)


def play_expert(env, seed):
    obs, info = env.reset(seed=seed)
    steps = 0
    while True:
        obs, reward, terminated, truncated, info = env.step(info["expert_action"])
        steps += 1
        assert obs in env.observation_space
        if terminated or truncated:
            return info["success"], steps, obs


def test_check_env_and_expert_wins(cache_dir):
    env = make(cache_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    success, steps, last = play_expert(env, 0)
    assert success and steps == 2
    assert "*** The End ***" in last and "RESTART" not in last
    env.close()


def test_observation_lists_admissible_commands_and_is_reproducible(cache_dir):
    env = make(cache_dir)
    first, info = env.reset(seed=1)
    assert "\n" in first and "$$" not in first
    listed = first.split("\nactions: ")[1].split(" | ")
    assert info["expert_action"] in listed and "look" in listed
    trajectory = [env.step(a)[:4] for a in ("look", info["expert_action"])]
    env.reset(seed=1)
    assert [env.step(a)[:4] for a in ("look", info["expert_action"])] == trajectory


def test_invalid_command_is_not_sent_to_the_game(cache_dir):
    env = make(cache_dir, max_turns=4)
    env.reset(seed=0)
    for action in ("quit", "dance wildly", ""):
        obs, reward, terminated, truncated, _ = env.step(action)
        assert obs.startswith("invalid action.") and reward == -0.1 and not terminated
    assert env.step("restart")[3] is True


def test_unknown_challenge_is_a_clear_error(cache_dir):
    with pytest.raises(ValueError, match="tw-nope.*tw-coin_collector"):
        make(cache_dir, challenge="tw-nope").reset(seed=0)


def test_clean_feedback_drops_banner_and_status_bar():
    raw = "\n  ____  \n | $$ | \n\nHello there, player.\n\n-= Hall =-\nA hall.\n\n>   -= Hall =-0/1"
    assert clean_feedback(raw) == "Hello there, player. -= Hall =- A hall."


@pytest.mark.slow
@pytest.mark.parametrize("challenge,settings", [
    ("tw-simple", None),
    ("tw-coin_collector", {"level": 110}),
    ("tw-treasure_hunter", {"level": 5}),
])
def test_expert_wins_each_challenge(cache_dir, challenge, settings):
    env = make(cache_dir, challenge=challenge, settings=settings, n_games=2, max_turns=100)
    for seed in range(4):
        assert play_expert(env, seed)[0]


@pytest.fixture(scope="module")
def user_games(tmp_path_factory):
    """Two tw-make games in one directory."""
    root = tmp_path_factory.mktemp("tw_user_games")
    return [tw_make(root / f"game{seed}.z8", seed) for seed in (1, 2)]


def test_a_tw_make_game_file_is_played_with_its_admissible_commands(user_games):
    env = gym.make("uopd/TextWorld-v0", game_file=str(user_games[0]))
    check_env(env.unwrapped)
    success, steps, _ = play_expert(env, 0)
    assert success and steps >= 1
    obs, info = env.reset(seed=3)
    assert info["expert_action"] in obs.split("\nactions: ")[1].split(" | ")
    env.close()


def test_a_games_directory_is_the_pool_a_reset_draws_from(user_games):
    env = gym.make("uopd/TextWorld-v0", games_dir=str(user_games[0].parent))
    starts = {env.reset(seed=seed)[0] for seed in range(8)}
    assert len(starts) == 2  # both games drawn, each always starting the same
    assert env.reset(seed=5)[0] == env.reset(seed=5)[0]
    env.close()


def test_without_admissible_commands_the_agent_types_to_the_parser(user_games):
    env = gym.make("uopd/TextWorld-v0", game_file=str(user_games[0]), admissible_commands=False)
    obs, info = env.reset(seed=0)
    assert "actions:" not in obs
    look, reward, *_ = env.step("look")
    assert "actions:" not in look and reward == 0.0 and "-=" in look  # the room's description
    refused, reward, *_ = env.step("quit")
    assert refused == "invalid action." and reward == -0.1
    success = False
    while not success:
        _, _, terminated, truncated, info = env.step(info["expert_action"])
        success = info["success"]
        assert not truncated
    env.close()


def test_bad_game_files_name_the_kwarg(user_games, tmp_path):
    bare = tmp_path / "bare.z8"
    shutil.copy(user_games[0], bare)
    cases = [
        ({"game_file": str(tmp_path / "missing.z8")}, "game_file: no such game file"),
        ({"game_file": str(tmp_path / "old.ulx")}, "game_file: .* is a Glulx game"),
        ({"game_file": str(tmp_path / "notes.txt")}, "game_file: expected a Z-machine game file"),
        ({"game_file": str(bare)}, "game_file: .* has no TextWorld metadata"),
        ({"games_dir": str(tmp_path / "nowhere")}, "games_dir: no such directory"),
        ({"games_dir": str(tmp_path), "game_file": str(bare)}, "give one of them"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            gym.make("uopd/TextWorld-v0", **kwargs)
    env = gym.make("uopd/TextWorld-v0", game_file=str(bare), admissible_commands=False)
    obs, info = env.reset(seed=0)
    assert info["expert_action"] == "look"  # no metadata, no plan
    env.close()
