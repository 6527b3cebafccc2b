"""Agent turns in chat format with OpenAI-style tool calls: ToolCalc's function-call mode, the
transcript a tool-aware chat template renders (observations as user / tool turns, actions as
assistant turns), a loss mask that covers exactly the assistant tokens, and log-probs equal to a
plain forward of the same sequence for a Qwen3 chat student."""

from __future__ import annotations

import json
from types import SimpleNamespace

import gymnasium
import pytest
import torch

from chat_fixtures import chatml_tokenizer, save_qwen3
from test_agent import ScriptedLM
from test_lm import check_matches_plain_forward
from unified_opd.domains.agent.env_ids import env_factory
from unified_opd.domains.agent.episodes import Limits, run_episodes
from unified_opd.domains.agent.policy import AgentPolicy, episodes_rollout
from unified_opd.domains.agent.transcript import ChatFormat, make_format
from unified_opd.domains.lm import Sampling, load_causal_lm
from unified_opd.envs.tool_calls import function_call, parse_function_call
from unified_opd.envs.toolcalc import TOOLS

# a Hermes/Qwen-style template: tools listed in the system turn, tool results as user turns
# wrapped in <tool_response>
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "</tools>\nCall one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m['content'] }}\n"
    "</tool_response><|im_end|>\n{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOOLCALC = {"n_lookups": 1, "n_items": 4, "call_format": "openai"}
LIMITS = Limits(max_turns=0, max_action_tokens=96, max_tokens=2048)  # a call is ~50 byte-level tokens


@pytest.fixture(scope="module")
def tok():
    t = chatml_tokenizer()
    t.chat_template = TOOL_TEMPLATE
    return t


def chat_format(tok, tools=TOOLS):
    return make_format(tok, "auto", None, ["<|endoftext|>", "<|im_end|>"], tools)


def expert_actions(seed: int) -> list:
    env = gymnasium.make("uopd/ToolCalc-v0", **TOOLCALC)
    _, info = env.reset(seed=seed)
    actions, done = [], False
    while not done:
        actions.append(info["expert_action"])
        _, _, terminated, truncated, info = env.step(actions[-1])
        done = terminated or truncated
    assert info["success"]
    return actions


def test_function_calls_parse_in_the_openai_shapes():
    names = {"lookup", "calculator"}
    assert parse_function_call(function_call("lookup", key="tea"), names) == ("lookup", {"key": "tea"})
    tagged = '<tool_call>{"name": "calculator", "arguments": {"expr": "1+2"}}</tool_call>'
    assert parse_function_call(tagged, names) == ("calculator", {"expr": "1+2"})
    as_string = json.dumps({"name": "lookup", "arguments": json.dumps({"key": "tea"})})  # OpenAI API style
    assert parse_function_call(as_string, names) == ("lookup", {"key": "tea"})
    for text in ('{"name": "search", "arguments": {}}', "36", '{"name": "lookup", "arguments": "{bad"}', "{"):
        assert parse_function_call(text, names) is None


def test_toolcalc_declares_openai_tools_and_takes_function_calls():
    env = gymnasium.make("uopd/ToolCalc-v0", **TOOLCALC)
    assert [t["function"]["name"] for t in env.unwrapped.tools] == ["lookup", "calculator"]
    assert TOOLS[0]["function"]["parameters"]["required"] == ["key"]
    for seed in range(5):
        actions = expert_actions(seed)
        assert len(actions) == 3 and parse_function_call(actions[0], {"lookup"}) and actions[-1].lstrip("-").isdigit()
    env.reset(seed=0)
    item = env.unwrapped.needed[0]
    assert env.step(f'<tool_call>{function_call("lookup", key=item)}</tool_call>')[0] == f"result: {env.unwrapped.prices[item]}"
    assert env.step(function_call("calculator", expr="2*"))[0] == "error: bad expression"
    # a message that is no call is the final answer: the last number in it
    obs, reward, terminated, _, info = env.step(f"The answer is {env.unwrapped.answer}.")
    assert (obs, reward, terminated, info["success"]) == ("correct.", 1.0, True, True)
    assert gymnasium.make("uopd/ToolCalc-v0").unwrapped.tools is None  # the JSON format declares none
    with pytest.raises(ValueError, match="call_format"):
        gymnasium.make("uopd/ToolCalc-v0", call_format="xml")
    assert env_factory("uopd/ToolCalc-v0", TOOLCALC).tools == TOOLS


def _scripted_episode(tok, actions, seed=0):
    """One ToolCalc episode whose actions are `actions`, each ended by <|im_end|> as a chat model does."""
    lm = ScriptedLM(tok, [a + "<|im_end|>" for a in actions], eos=False)
    lm.generation_config = SimpleNamespace(eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id])
    make = env_factory("uopd/ToolCalc-v0", TOOLCALC)
    return run_episodes(lm, tok, chat_format(tok), make, [seed], Sampling(greedy=True), LIMITS)[0]


def test_the_transcript_is_the_templates_conversation_and_the_mask_its_assistant_tokens(tok):
    actions = expert_actions(0)
    ep = _scripted_episode(tok, actions)
    assert ep.success and [a for _, a in ep.history] == actions
    ro = episodes_rollout([ep], tok.pad_token_id, None, "success")
    ids = ro.student_view["input_ids"][0]
    observations = [o for o, _ in ep.history]
    conversation = [
        {"role": "user", "content": observations[0]},
        {"role": "assistant", "content": actions[0]},
        {"role": "tool", "content": observations[1]},  # answers the lookup call
        {"role": "assistant", "content": actions[1]},
        {"role": "tool", "content": observations[2]},
        {"role": "assistant", "content": actions[2]},
    ]
    rendered = tok.apply_chat_template(conversation, tools=TOOLS, tokenize=False)
    assert "<tool_response>\nresult: " in rendered and '"name": "lookup"' in rendered.split("<|im_start|>user")[0]
    assert tok.decode(ids) == rendered.rstrip("\n")  # the episode ends at the agent's last <|im_end|>
    mask = ro.loss_mask[0].bool()
    assert tok.decode(ro.actions[0][mask]) == "".join(a + "<|im_end|>" for a in actions)
    # every masked run is exactly one assistant message: it starts right after "<|im_start|>assistant\n"
    starts = [p for p in range(1, mask.numel()) if mask[p] and not mask[p - 1]]
    assert len(starts) == 3 and bool(mask[0]) is False
    for p in starts:
        assert tok.decode(ids[: p + 1]).endswith("<|im_start|>assistant\n")


def test_an_observation_after_a_non_call_is_a_user_turn(tok):
    fmt = chat_format(tok)
    assert isinstance(fmt, ChatFormat)
    roles = [m["role"] for m in fmt.messages([("q", "hello"), ("r", function_call("lookup", key="tea"))], "s")]
    assert roles == ["user", "assistant", "user", "assistant", "tool"]
    no_tools = chat_format(tok, tools=None)
    assert [m["role"] for m in no_tools.messages([("q", function_call("lookup", key="tea"))], "r")][-1] == "user"


def test_an_unfinished_action_keeps_the_templates_end_of_turn_as_context(tok):
    fmt = chat_format(tok)
    history = [("q", "hi")]
    stopped = tok.decode(fmt.context(history, "r", stopped=True))
    unfinished = tok.decode(fmt.context(history, "r", stopped=False))
    assert unfinished == "<|im_end|>" + stopped and stopped.startswith("\n<|im_start|>user\nr")


@pytest.mark.parametrize("lazy", [True, False])
def test_chat_agent_log_probs_equal_a_plain_forward(tok, tmp_path, lazy):
    save_qwen3(tmp_path / "student", tok, seed=0, ends_turns=True)
    lm, loaded = load_causal_lm(str(tmp_path / "student"), "float32", False, "student")
    loaded.chat_template = TOOL_TEMPLATE
    # Echo goes on for two turns whatever the untrained model says (ToolCalc would end at its
    # first message that is no call); the tool list still sits in the rendered system turn
    make = env_factory("uopd-test/Echo-v0", {})
    # the tool list is ~600 byte-level tokens; rotary positions run past the config's 512
    limits = Limits(max_turns=3, max_action_tokens=6, max_tokens=1500)
    policy = AgentPolicy(lm, loaded, chat_format(loaded), make, Sampling(), limits, "success", lazy)
    torch.manual_seed(0)
    rollout = policy.rollout([0, 1, 2])
    assert (rollout.student_view["attention_mask"] == 0).any()  # right padding is exercised
    assert (rollout.step_ids[rollout.loss_mask.bool()] > 0).any()  # and later turns
    check_matches_plain_forward(policy, rollout)
