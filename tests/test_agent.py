"""Agent domain units: transcript masks and turn ids on a hand-checked episode, TCOD/SOD weights on
hand-made tensors, and the bad-input paths (context overflow, broken envs, unknown ids)."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium
import pytest
import torch
from transformers import LlamaConfig

from unified_opd.domains.agent.zoo import agents as zoo
from unified_opd.domains.agent.env_ids import env_factory
from unified_opd.domains.agent.episodes import Limits, checked_step, run_episodes
from unified_opd.domains.agent.policy import episodes_rollout
from unified_opd.domains.agent.transcript import ChatFormat, PlainFormat, make_format
from unified_opd.domains.agent.weights import depth_weights, tcod_depth, turn_softmax_weights
from unified_opd.domains.lm import Sampling
from unified_opd.errors import ConfigError, UserError
from unified_opd.weights import WEIGHTS


class EchoEnv(gymnasium.Env):
    """Observes `start`, answers every action with `got <action>`; succeeds after `turns` actions.
    `fail_at` makes step() raise at that turn, `malformed_at` return a bad tuple."""

    observation_space = gymnasium.spaces.Text(64)
    action_space = gymnasium.spaces.Text(64)

    def __init__(self, turns: int = 2, fail_at: int = -1, malformed_at: int = -1):
        self.turns, self.fail_at, self.malformed_at = turns, fail_at, malformed_at

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return "start", {}

    def step(self, action):
        if self.t == self.fail_at:
            raise RuntimeError("boom")
        if self.t == self.malformed_at:
            return ("obs", 0.0)
        self.t += 1
        done = self.t >= self.turns
        return f"got {action}", 1.0 if done else 0.0, done, False, {"success": done}


for _id, _kw in (("Echo", {}), ("EchoFail", {"fail_at": 1}), ("EchoMalformed", {"malformed_at": 0})):
    if f"uopd-test/{_id}-v0" not in gymnasium.registry:
        gymnasium.register(f"uopd-test/{_id}-v0", entry_point=EchoEnv, kwargs=_kw)


class ScriptedLM(torch.nn.Module):
    """Stands in for a causal LM in `run_episodes`: its logits make the sampler emit the scripted
    actions in order (a multi-token call starts the next action, each one-token call continues it)."""

    config = LlamaConfig(num_hidden_layers=1)

    def __init__(self, tok, actions, eos: bool = True):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tok, self.actions, self.eos, self.calls = tok, actions, eos, 0
        self.script: list = []

    def forward(self, input_ids, attention_mask, position_ids, cache, use_cache, logits_to_keep=0):
        if input_ids.shape[1] > 1:
            action = self.actions[self.calls % len(self.actions)]
            self.calls += 1
            ids = self.tok(action, add_special_tokens=False)["input_ids"]
            self.script = ids + ([self.tok.eos_token_id] if self.eos else [])
        token = self.script.pop(0) if self.script else self.tok.pad_token_id
        logits = torch.full((input_ids.shape[0], 1, len(self.tok)), -1e4)
        logits[..., token] = 0.0
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def tok():
    return zoo.build_tokenizer(["start got go north take red key"])


def _play(tok, env_id, actions, limits=None, seeds=(0,), eos=True):
    limits = limits or Limits(max_turns=0, max_action_tokens=8, max_tokens=256)
    lm = ScriptedLM(tok, actions, eos)
    return run_episodes(lm, tok, PlainFormat(tok), env_factory(env_id, {}), seeds, Sampling(greedy=True), limits)


def test_loss_mask_covers_exactly_the_agent_tokens(tok):
    episodes = _play(tok, "uopd-test/Echo-v0", ["go north", "take red key"])
    ro = episodes_rollout(episodes, tok.pad_token_id, None, "success")
    ids = ro.student_view["input_ids"][0]
    # the hand-checked transcript: env text is context, actions (with their EOS) are the agent's
    assert tok.decode(ids) == "<s>start\n> go north</s>\ngot go north\n> take red key</s>"
    agent_text = tok.decode(ro.actions[0][ro.loss_mask[0].bool()])
    assert agent_text == "go north</s>take red key</s>"
    context = tok.decode(ro.actions[0][~ro.loss_mask[0].bool()])
    assert context == "start\n> \ngot go north\n> "
    # position p predicts token p+1: the first masked position sits right before "go"
    first = int(ro.loss_mask[0].nonzero()[0])
    assert tok.decode(ids[: first + 1]) == "<s>start\n> "
    assert ro.outcome.tolist() == [1.0]


def test_step_ids_are_the_turn(tok):
    episodes = _play(tok, "uopd-test/Echo-v0", ["go north", "take red key"])
    ro = episodes_rollout(episodes, tok.pad_token_id, None, "success")
    m = ro.loss_mask[0].bool()
    actions, steps = ro.actions[0][m], ro.step_ids[0][m]
    assert tok.decode(actions[steps == 0]) == "go north</s>"
    assert tok.decode(actions[steps == 1]) == "take red key</s>"
    # the observation of turn 1 belongs to turn 1 as well
    obs1 = tok.decode(ro.actions[0][(ro.step_ids[0] == 1) & ~m])
    assert obs1 == "\ngot go north\n> "


def test_padding_positions_are_masked_and_unassigned(tok):
    episodes = _play(tok, "uopd-test/Echo-v0", ["go", "take red key"], seeds=(0, 1))
    episodes[1].transcript.ids = episodes[1].transcript.ids[:5]
    episodes[1].transcript.agent = episodes[1].transcript.agent[:5]
    episodes[1].transcript.turn = episodes[1].transcript.turn[:5]
    ro = episodes_rollout(episodes, tok.pad_token_id, None, "success")
    assert ro.loss_mask[1, 5:].sum() == 0 and (ro.step_ids[1, 5:] == -1).all()


def test_context_overflow_ends_the_episode_as_failed(tok):
    limits = Limits(max_turns=0, max_action_tokens=8, max_tokens=12)
    (ep,) = _play(tok, "uopd-test/Echo-v0", ["go north", "take red key"], limits)
    assert not ep.success and ep.done and ep.error.startswith("context overflow")
    assert len(ep.transcript) <= 12
    ro = episodes_rollout([ep], tok.pad_token_id, None, "success")
    assert ro.outcome.tolist() == [0.0] and ro.actions.shape[1] <= 11


def test_action_running_into_the_context_is_an_overflow(tok):
    limits = Limits(max_turns=0, max_action_tokens=8, max_tokens=7)  # "<s>start\n> " is 5 tokens
    (ep,) = _play(tok, "uopd-test/Echo-v0", ["go north take red key"], limits, eos=False)
    assert ep.error.startswith("context overflow") and ep.turns == 0 and len(ep.transcript) == 7


def test_turn_limit_ends_the_episode(tok):
    (ep,) = _play(tok, "uopd-test/Echo-v0", ["go"], Limits(max_turns=1, max_action_tokens=8, max_tokens=256))
    assert ep.done and ep.turns == 1 and not ep.success and ep.error is None


def test_unparseable_action_reaches_the_env_as_an_error_observation(tok):
    (ep,) = _play(tok, "uopd/KeyDoor-v0", ["take"], Limits(max_turns=2, max_action_tokens=8, max_tokens=512))
    assert ep.error is None and ep.turns == 2
    assert "invalid action" in tok.decode(ep.transcript.ids)


def test_env_that_raises_or_returns_malformed_steps_fails_only_its_episode(tok):
    (ep,) = _play(tok, "uopd-test/EchoFail-v0", ["go"])
    assert ep.error == "env error: RuntimeError: boom" and not ep.success and ep.turns == 1
    (ep,) = _play(tok, "uopd-test/EchoMalformed-v0", ["go"])
    assert ep.error.startswith("malformed step") and not ep.success


def test_checked_step_rejects_non_string_observations():
    class Bad:
        def step(self, action):
            return 3, 0.0, False, False, {}

    with pytest.raises(Exception, match="observation is int"):
        checked_step(Bad(), "x")


def test_unknown_env_id_and_bad_kwargs_name_the_field():
    with pytest.raises(ConfigError, match="env.id: unknown environment 'uopd/KeyDor-v0'"):
        env_factory("uopd/KeyDor-v0", {})
    with pytest.raises(ConfigError, match="env.kwargs"):
        env_factory("uopd/KeyDoor-v0", {"depth": 0})
    with pytest.raises(ConfigError, match="env.kwargs"):
        env_factory("uopd/KeyDoor-v0", {"colour": 1})


def test_chat_format_segments_concatenate_to_the_rendered_conversation(tok):
    tok = zoo.build_tokenizer(["user assistant start got go take"])
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% if m['role'] == 'assistant' %}</s>\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    fmt = make_format(tok, "auto", None)
    assert isinstance(fmt, ChatFormat)
    ids = fmt.context([], "start") + tok("go", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids += fmt.context([("start", "go")], "got go")
    full = tok.apply_chat_template(
        [{"role": "user", "content": "start"}, {"role": "assistant", "content": "go"}, {"role": "user", "content": "got go"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert tok.decode(ids) == full
    assert isinstance(make_format(tok, "never", None), PlainFormat)
    with pytest.raises(UserError, match="rollout.chat_template"):
        make_format(zoo.build_tokenizer(["x"]), "always", None)


# ------------------------------------------------------------------ TCOD
def test_tcod_depth_grows_linearly_then_stays():
    assert [tcod_depth(s, 100, 1, 5, 0.5) for s in (0, 12, 13, 25, 49, 50, 99)] == [1, 1, 2, 3, 4, 5, 5]
    assert tcod_depth(0, 100, 2, 6, 0.0) == 6


def test_tcod_keeps_the_first_k_turns_renormalised():
    steps = torch.tensor([0, 0, 1, 2, 0, 1])
    w = depth_weights(steps, 2)
    # 5 of 6 positions kept -> each kept one weighs 6/5, the turn-2 position 0
    assert torch.allclose(w, torch.tensor([1.2, 1.2, 1.2, 0.0, 1.2, 1.2]))
    assert torch.allclose(depth_weights(steps, 1), torch.tensor([2.0, 2.0, 0, 0, 2.0, 0]))


def test_tcod_weight_reads_the_training_step():
    fn = WEIGHTS.get("tcod")

    class Inputs:
        step_ids = torch.tensor([0, 1, 2, 3])
        step, max_steps = 0, 10

    assert fn(Inputs, k0=1, k_max=4, ramp=1.0).tolist() == [4.0, 0, 0, 0]
    Inputs.step = 10
    assert fn(Inputs, k0=1, k_max=4, ramp=1.0).tolist() == [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="tcod"):
        fn(Inputs, k0=3, k_max=2)


# ------------------------------------------------------------------ SOD
def test_sod_downweights_high_divergence_turns():
    # trajectory 0: turn 0 has divergences (1, 3) -> mean 2, turn 1 has (0) -> mean 0
    # trajectory 1: one turn only -> weight 1 everywhere
    div = torch.tensor([1.0, 3.0, 0.0, 5.0, 7.0])
    b = torch.tensor([0, 0, 0, 1, 1])
    s = torch.tensor([0, 0, 1, 0, 0])
    w = turn_softmax_weights(div, b, s, tau=1.0)
    e = torch.exp(torch.tensor(-2.0))
    z = 2 * e + 1.0  # sum over trajectory 0's three positions of exp(-D_turn)
    expected = torch.tensor([3 * e / z, 3 * e / z, 3 / z, 1.0, 1.0])
    assert torch.allclose(w, expected, atol=1e-6)
    assert torch.allclose(w[:3].mean(), torch.tensor(1.0)) and w[2] > w[0]


def test_sod_large_temperature_is_plain_opd_and_extreme_divergence_is_finite():
    div = torch.tensor([0.0, 1e4, 2.0])
    b = torch.tensor([0, 0, 0])
    s = torch.tensor([0, 1, 2])
    assert torch.allclose(turn_softmax_weights(div, b, s, tau=1e9), torch.ones(3))
    w = turn_softmax_weights(div, b, s, tau=0.5)
    assert torch.isfinite(w).all() and w[1] < 1e-6 and torch.allclose(w.mean(), torch.tensor(1.0))
    with pytest.raises(ConfigError, match="sod.tau"):
        WEIGHTS.get("sod")(type("I", (), {"divergence": div, "batch_index": b, "step_ids": s}), tau=0)
