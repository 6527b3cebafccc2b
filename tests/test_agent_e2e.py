"""Agent domain end to end on tiny models built here: multi-turn OPD through the real trainer
lowers the student's KL to the teacher; bad configs fail with the field's name (CLI exit 2)."""

from __future__ import annotations

import json
import random
import sys
from types import SimpleNamespace

import gymnasium
import pytest
import torch

from unified_opd.cli import main
from unified_opd.config import load_config
from unified_opd.domain import schema_for
from unified_opd.domains.agent.zoo import agents as zoo
from unified_opd.errors import ConfigError, UserError
from unified_opd.trainer import Trainer

ENTRY = zoo.Entry("uopd/ToolCalc-v0", {"n_items": 4})


@pytest.fixture(scope="module")
def tiny_agents(tmp_path_factory):
    """A teacher briefly trained on ToolCalc expert transcripts and an untrained smaller student."""
    root = tmp_path_factory.mktemp("tiny_agents")
    demos = zoo.expert_demos(ENTRY, range(100), 0.0, random.Random(0))
    tok = zoo.build_tokenizer([t for d in demos for t in d.observations + d.actions])
    fmt = zoo.PlainFormat(tok)
    data = [zoo.demo_transcript(d, fmt, tok) for d in demos]
    torch.manual_seed(0)
    teacher_spec = zoo.ModelSpec(hidden=32, layers=1, heads=2, steps=30, batch=8, lr=1e-2, context=256)
    teacher = teacher_spec.build(tok)
    zoo.train_supervised(teacher, tok, data, teacher_spec, seed=0, label="test teacher")
    student = zoo.ModelSpec(hidden=16, layers=1, heads=2, steps=0, context=256).build(tok)
    for name, model in (("teacher", teacher), ("student", student)):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def _overrides(root, out, **extra):
    base = {
        "domain": "agent",
        "student.path": root / "student",
        "teacher.path": root / "teacher",
        "env.id": "uopd/ToolCalc-v0",
        "env.kwargs.n_items": 4,
        "rollout.batch_size": 4,
        "rollout.max_turns": 2,
        "rollout.max_action_tokens": 12,
        "trainer.max_steps": 8,
        "trainer.lr": 1e-2,
        "trainer.output_dir": out,
        "trainer.save_every": 0,
        "eval.episodes": 6,
        "eval.batch_size": 6,
        "eval.teacher": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def test_multi_turn_opd_lowers_the_kl_to_the_teacher(tiny_agents, tmp_path):
    # KL measured on sampled episodes, the distribution OPD trains on (greedy transcripts of a
    # near-random student jump around between evaluations)
    cfg = load_config(None, _overrides(tiny_agents, tmp_path / "run", **{"eval.greedy": False}), schema_for)
    assert cfg.divergence.name == "jsd"  # MAD-OPD default of the agent domain
    s = Trainer(cfg).train()
    assert s["after"]["reverse_kl"] < 0.8 * s["before"]["reverse_kl"], s
    for key in ("success_rate", "mean_return", "mean_turns", "context_overflow"):
        assert key in s["after"]
    logged = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert any("episode/success_rate" in x for x in logged)
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_tcod_and_sod_run_through_the_trainer(tiny_agents, tmp_path):
    weights = "[{name: tcod, k0: 1, k_max: 2, ramp: 0.5}, {name: sod, tau: 1.0}]"
    extra = {"objective.weights": weights, "trainer.max_steps": 2, "divergence.name": "reverse_kl"}
    s = Trainer(load_config(None, _overrides(tiny_agents, tmp_path / "run", **extra), schema_for)).train()
    assert s["steps"] == 2
    logged = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert any("weight_mean" in x for x in logged)


def test_overlapping_seeds_and_bad_rollout_settings_name_the_field(tiny_agents, tmp_path):
    bad = {"env.eval_seed_start": 5, "env.train_seeds": 10}
    with pytest.raises(ConfigError, match="env.eval_seed_start"):
        Trainer(load_config(None, _overrides(tiny_agents, tmp_path / "a", **bad), schema_for))
    with pytest.raises(ConfigError, match="rollout.outcome"):
        Trainer(load_config(None, _overrides(tiny_agents, tmp_path / "b", **{"rollout.outcome": "win"}), schema_for))


def test_cli_unknown_env_id_exits_2(tiny_agents, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("domain: agent\n")
    args = _overrides(tiny_agents, tmp_path / "run", **{"env.id": "uopd/Nope-v0"})[1:]
    assert main(["eval", str(config), *args]) == 2
    assert "env.id: unknown environment 'uopd/Nope-v0'" in capsys.readouterr().err


def test_zoo_student_learns_from_its_own_env_and_is_scored_on_the_entry_env(tmp_path, monkeypatch):
    tiny = zoo.ModelSpec(hidden=16, layers=1, heads=2, steps=1, batch=2, context=256)
    entry = zoo.Entry("uopd/KeyDoor-v0", {"depth": 5}, episodes=4, noise=0.0, teacher=tiny, student=tiny, student_env_kwargs={"depth": 1})
    trained_on = {}

    def record(model, tok, data, spec, seed, label):
        trained_on[label.split()[-1]] = data
        return 0.0

    monkeypatch.setattr(zoo, "train_supervised", record)
    monkeypatch.setattr(zoo, "held_out", lambda model, tok, e, episodes=100: {"success_rate": float(e.env_kwargs["depth"])})
    zoo.build_entry("tiny", entry, tmp_path)
    tok = zoo.PreTrainedTokenizerFast.from_pretrained(tmp_path / "student")
    student_text = tok.decode(trained_on["student"][0].ids)
    assert "(goal 1)" in student_text and all("(goal 1)" not in tok.decode(t.ids) for t in trained_on["teacher"])
    assert len(trained_on["teacher"]) == 8 and len(trained_on["student"]) == 4
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["student_env_kwargs"] == {"depth": 1}
    assert card["student"]["success_rate"] == 5.0 and card["student"]["on_its_training_env"] == {"success_rate": 1.0}


def test_g_opd_lambda_trains_against_a_reference_for_agents(tiny_agents, tmp_path):
    # teacher.reference is the frozen initial student; λ != 1 needs it (objective.lam)
    extra = {"teacher.reference": "student", "objective.lam": 1.5, "trainer.max_steps": 2, "divergence.name": "reverse_kl"}
    s = Trainer(load_config(None, _overrides(tiny_agents, tmp_path / "run", **extra), schema_for)).train()
    assert s["steps"] == 2
    with pytest.raises(UserError, match="teacher.reference: path not found"):
        bad = {"teacher.reference": str(tmp_path / "missing")}
        Trainer(load_config(None, _overrides(tiny_agents, tmp_path / "b", **bad), schema_for))


def _user_env_args(root, out, **extra):
    """The CLI overrides of `_overrides` for an env other than ToolCalc (no domain, no ToolCalc kwargs)."""
    return [a for a in _overrides(root, out, **extra)[1:] if not a.startswith("env.kwargs")]


@pytest.mark.parametrize("env_id", ["agent_user_envs:UserEcho-v0", "agent_user_envs/Echo-v0"])
def test_a_user_registered_env_trains_from_the_cli(tiny_agents, tmp_path, monkeypatch, env_id):
    # a fresh `uopd` process: the user's module is not imported and its ids are not registered
    monkeypatch.delitem(sys.modules, "agent_user_envs", raising=False)
    for registered in ("UserEcho-v0", "agent_user_envs/Echo-v0"):
        monkeypatch.delitem(gymnasium.registry, registered, raising=False)
    config = tmp_path / "c.yaml"
    config.write_text("domain: agent\n")
    extra = {"env.id": env_id, "trainer.max_steps": 2, "eval.kl": False}
    assert main(["train", str(config), *_user_env_args(tiny_agents, tmp_path / "run", **extra)]) == 0
    assert "agent_user_envs" in sys.modules
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and "success_rate" in summary["after"]


@pytest.mark.parametrize(
    "env_id, message",
    [
        ("CartPole-v1", "env.id: CartPole-v1 is not a text environment: the agent domain needs observation_space and "
         "action_space to be gymnasium.spaces.Text"),
        ("no_such_user_module:Echo-v0", "env.id: 'no_such_user_module:Echo-v0' names module 'no_such_user_module'"),
        ("no_such_user_module/Echo-v0", "env.id: unknown environment 'no_such_user_module/Echo-v0'"),
    ],
)
def test_cli_non_text_or_missing_user_env_exits_2(tiny_agents, tmp_path, capsys, env_id, message):
    config = tmp_path / "c.yaml"
    config.write_text("domain: agent\n")
    assert main(["train", str(config), *_user_env_args(tiny_agents, tmp_path / "run", **{"env.id": env_id})]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def _untrained_pair(root, texts, context: int) -> None:
    """root/teacher and root/student: untrained tiny Llamas over a tokenizer of `texts`' words."""
    tok = zoo.build_tokenizer(texts)
    spec = zoo.ModelSpec(hidden=16, layers=1, heads=2, steps=0, context=context)
    for name, seed in (("teacher", 1), ("student", 2)):
        torch.manual_seed(seed)
        spec.build(tok).save_pretrained(root / name)
        tok.save_pretrained(root / name)


def test_a_tw_make_game_file_trains_from_the_cli(tmp_path, capsys):
    pytest.importorskip("textworld")
    from textworld_fixtures import tw_make

    game = tw_make(tmp_path / "game.z8", seed=1)
    env = gymnasium.make("uopd/TextWorld-v0", game_file=str(game))
    first, info = env.reset(seed=0)
    env.close()
    # observations list the admissible commands (~100 tokens with this game's words): a context of 1024
    _untrained_pair(tmp_path, [first, info["expert_action"]], context=1024)
    config = tmp_path / "c.yaml"
    config.write_text("domain: agent\n")
    extra = {"env.id": "uopd/TextWorld-v0", "env.kwargs.game_file": str(game), "trainer.max_steps": 2,
             "rollout.batch_size": 2, "eval.episodes": 2, "eval.batch_size": 2}
    assert main(["train", str(config), *_user_env_args(tmp_path, tmp_path / "run", **extra)]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["after"]["context_overflow"] == 0.0
    logged = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    assert any(x.get("episode/mean_turns", 0) >= 1 for x in logged)


def test_held_out_episodes_use_env_eval_kwargs(tiny_agents, tmp_path, monkeypatch):
    from unified_opd.domains.agent import policy as agent_policy

    played = []
    real = agent_policy.run_episodes

    def spy(lm, tok, fmt, make_env, seeds, *rest):
        played.append((make_env.kwargs["n_items"], min(seeds) >= 1_000_000))
        return real(lm, tok, fmt, make_env, seeds, *rest)

    monkeypatch.setattr(agent_policy, "run_episodes", spy)
    extra = {"env.eval_kwargs.n_items": 6, "trainer.max_steps": 1, "eval.kl": False}
    Trainer(load_config(None, _overrides(tiny_agents, tmp_path / "run", **extra), schema_for)).train()
    assert {n for n, held_out in played if held_out} == {6} and {n for n, held_out in played if not held_out} == {4}


@pytest.mark.slow
def test_scienceworld_trains_from_the_cli_and_evaluates_on_test_variations(tmp_path, capsys):
    pytest.importorskip("scienceworld")
    kwargs = {"tasks": "lifespan-longest-lived", "max_turns": 3, "gold_path": False}
    env = gymnasium.make("uopd/ScienceWorld-v0", **kwargs)
    first, _ = env.reset(seed=0)
    env.close()
    _untrained_pair(tmp_path, [first, "open door to kitchen go to outside focus on"], context=2048)
    config = tmp_path / "c.yaml"
    config.write_text("domain: agent\nenv:\n  kwargs: " + json.dumps(kwargs) + "\n")
    extra = {"env.id": "uopd/ScienceWorld-v0", "env.eval_kwargs.split": "test", "trainer.max_steps": 1,
             "rollout.batch_size": 2, "rollout.outcome": "return", "eval.episodes": 2, "eval.batch_size": 2}
    assert main(["train", str(config), *_user_env_args(tmp_path, tmp_path / "run", **extra)]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["after"]["env_failures"] == 0.0


def test_zoo_cards_play_held_out_episodes_in_batches(monkeypatch):
    # a batch holds one env per episode: ScienceWorld's are JVMs, 64 at once took 15 GB
    sizes = []
    monkeypatch.setattr(zoo, "run_episodes", lambda lm, tok, fmt, make, seeds, sampling, limits: sizes.append(len(seeds)) or [])
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64))
    zoo.held_out(model, None, ENTRY, episodes=40)
    assert sizes == [zoo.HELD_OUT_BATCH, zoo.HELD_OUT_BATCH, 40 - 2 * zoo.HELD_OUT_BATCH]
