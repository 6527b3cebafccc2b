"""`uopd/ToolCalc-v0`: answer an arithmetic question about prices that must be looked up.

Each reset draws a price table (`n_items` goods, integer prices) and a question over
`n_lookups` of them::

    question: what is the price of tea times 3?                  (n_lookups=1: plus/minus/times)
    question: what do 2 apples and 3 pears cost?                 (n_lookups>=2: a weighted sum)

Every action is one JSON object (nothing else on the line):

    {"tool": "lookup", "key": "tea"}          -> result: 12
    {"tool": "calculator", "expr": "12*3"}    -> result: 36      (numbers, + - * / // % and ())
    {"answer": "36"}                          -> correct. / wrong, the answer was 36.

With `call_format="openai"` the env declares its tools in OpenAI's shape (`env.unwrapped.tools`,
rendered by a chat template; see `tool_calls`) and the agent calls them as functions; any
message that is not a call is its final answer (the number it says)::

    {"name": "lookup", "arguments": {"key": "tea"}}             -> result: 12
    <tool_call>{"name": "calculator", "arguments": {"expr": "12*3"}}</tool_call>   (tags optional)
    36                                                           -> correct.

Errors are observations, never exceptions: `error: invalid json`, `error: unknown tool 'x'`,
`error: lookup needs "key"`, `error: unknown key 'x'`, `error: bad expression`, ...

Reward: 1 for a correct answer (compared numerically), 0 for a wrong one; both terminate.
Errors cost `invalid_penalty`.

Expert: `env.unwrapped.expert_action()` -- look up each needed price not yet seen, call the
calculator on the question's expression, answer (`n_lookups + 2` actions from the start).
"""

from __future__ import annotations

import json
import re

from .calculator import evaluate, format_number
from .text_env import TextEnv
from .tool_calls import function_call, function_tool, parse_function_call, tool_names

ITEMS = (
    "apples", "pears", "bread", "milk", "eggs", "rice", "tea", "coffee",
    "cheese", "honey", "jam", "butter", "soap", "pens", "socks", "candles",
)
OPS = {"plus": "+", "minus": "-", "times": "*"}
CALL_FORMATS = ("json", "openai")
TOOLS = [
    function_tool("lookup", "The price of one item, in dollars.", key="the item's name, e.g. apples"),
    function_tool("calculator", "The value of an arithmetic expression.", expr="numbers, + - * / // % and (), e.g. 12*3"),
]


def tool_call(tool: str, **args: str) -> str:
    return json.dumps({"tool": tool, **args})


class ToolCalcEnv(TextEnv):
    def __init__(
        self,
        n_lookups: int = 1,
        n_items: int = 8,
        call_format: str = "json",
        max_turns: int | None = None,
        invalid_penalty: float = 0.1,
        render_mode: str | None = None,
    ):
        if not 1 <= n_lookups <= n_items <= len(ITEMS):
            raise ValueError(f"need 1 <= n_lookups <= n_items <= {len(ITEMS)}, got {n_lookups}, {n_items}")
        if call_format not in CALL_FORMATS:
            raise ValueError(f"call_format: expected one of {CALL_FORMATS}, got {call_format!r}")
        super().__init__(
            max_turns=max_turns if max_turns is not None else n_lookups + 6,
            invalid_penalty=invalid_penalty,
            obs_max_length=256,
            action_max_length=256,
            render_mode=render_mode,
        )
        self.n_lookups = n_lookups
        self.n_items = n_items
        self.call_format = call_format
        # only an env that takes function calls declares tools (a chat template then shows them)
        self.tools = TOOLS if call_format == "openai" else None

    def _start(self) -> str:
        rng = self.np_random
        names = [str(n) for n in rng.choice(ITEMS, size=self.n_items, replace=False)]
        self.prices = {n: int(rng.integers(1, 21)) for n in names}
        self.needed = names[: self.n_lookups]
        if self.n_lookups == 1:
            word = list(OPS)[int(rng.integers(len(OPS)))]
            factor = int(rng.integers(2, 10))
            self.question = f"what is the price of {self.needed[0]} {word} {factor}?"
            self.template = f"{{{self.needed[0]}}}{OPS[word]}{factor}"
        else:
            counts = [int(c) for c in rng.integers(1, 6, size=self.n_lookups)]
            parts = [f"{c} {n}" for c, n in zip(counts, self.needed)]
            self.question = f"what do {', '.join(parts[:-1])} and {parts[-1]} cost?"
            self.template = "+".join(f"{c}*{{{n}}}" for c, n in zip(counts, self.needed))
        self.answer = format_number(evaluate(self.template.format(**self.prices)))
        self.seen_keys: set[str] = set()
        self.seen_results: set[str] = set()
        return f"question: {self.question}"

    def _act(self, action: str) -> tuple[str, float, bool]:
        if self.tools:
            return self._act_openai(action)
        try:
            call = json.loads(action)
        except (ValueError, RecursionError):
            return self._error("invalid json")
        if not isinstance(call, dict):
            return self._error("expected a json object")
        if "answer" in call:
            return self._final(call["answer"])
        tool = call.get("tool")
        if tool == "lookup":
            return self._lookup(call.get("key"))
        if tool == "calculator":
            return self._calculate(call.get("expr"))
        return self._error(f"unknown tool {str(tool)[:20]!r}" if "tool" in call else 'missing "tool" or "answer"')

    def _act_openai(self, action: str) -> tuple[str, float, bool]:
        call = parse_function_call(action, tool_names(self.tools))
        if call is None:
            numbers = re.findall(r"-?\d+(?:\.\d+)?", action)
            return self._final(numbers[-1] if numbers else action)
        name, arguments = call
        return self._lookup(arguments.get("key")) if name == "lookup" else self._calculate(arguments.get("expr"))

    def _error(self, message: str) -> tuple[str, float, bool]:
        return f"error: {message}", -self.invalid_penalty, False

    def _lookup(self, key) -> tuple[str, float, bool]:
        if not isinstance(key, str):
            return self._error('lookup needs "key"')
        key = key.strip().lower()
        if key not in self.prices:
            return self._error(f"unknown key {key[:20]!r}")
        self.seen_keys.add(key)
        return f"result: {self.prices[key]}", 0.0, False

    def _calculate(self, expr) -> tuple[str, float, bool]:
        if not isinstance(expr, str):
            return self._error('calculator needs "expr"')
        try:
            result = format_number(evaluate(expr))
        except ValueError as e:
            return self._error(str(e))
        self.seen_results.add(result)
        return f"result: {result}", 0.0, False

    def _final(self, given) -> tuple[str, float, bool]:
        try:
            correct = abs(float(str(given).strip()) - float(self.answer)) < 1e-6
        except ValueError:
            correct = False
        self._success = correct
        if correct:
            return "correct.", 1.0, True
        return f"wrong, the answer was {self.answer}.", 0.0, True

    def expert_action(self) -> str:
        call = function_call if self.tools else tool_call
        for name in self.needed:
            if name not in self.seen_keys:
                return call("lookup", key=name)
        if self.answer not in self.seen_results:
            return call("calculator", expr=self.template.format(**self.prices))
        return self.answer if self.tools else json.dumps({"answer": self.answer})
