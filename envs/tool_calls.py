"""OpenAI-style function calling for text envs: the tools an env declares, the calls an agent writes.

An env with tools sets `tools` to OpenAI's tool list, which chat templates render into the
prompt (`tokenizer.apply_chat_template(messages, tools=env.tools)`)::

    [{"type": "function", "function": {"name": "lookup", "description": "...",
      "parameters": {"type": "object", "properties": {"key": {"type": "string", ...}}, "required": ["key"]}}}]

The agent's assistant message is one call in the function-call JSON shape::

    {"name": "lookup", "arguments": {"key": "apples"}}

optionally inside `<tool_call>...</tool_call>` (the tags Hermes- and Qwen-style templates print),
and with `arguments` either an object or a JSON-encoded string (as OpenAI's API returns it).
"""

from __future__ import annotations

import json
import re
from typing import Collection, Dict, Optional, Tuple

_TAGS = re.compile(r"^\s*<tool_call>(.*)</tool_call>\s*$", re.DOTALL)


def function_tool(name: str, description: str, **parameters: str) -> dict:
    """One OpenAI tool: a function whose string parameters (name -> description) are all required."""
    properties = {p: {"type": "string", "description": d} for p, d in parameters.items()}
    schema = {"type": "object", "properties": properties, "required": list(parameters)}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}


def tool_names(tools) -> frozenset:
    return frozenset(t["function"]["name"] for t in tools or ())


def function_call(name: str, **arguments: str) -> str:
    """The JSON text of a call, as the agent writes it."""
    return json.dumps({"name": name, "arguments": arguments})


def parse_function_call(text: str, names: Collection[str]) -> Optional[Tuple[str, Dict]]:
    """(name, arguments) when `text` is one call of a function in `names`, else None."""
    tagged = _TAGS.match(text)
    try:
        call = json.loads(tagged.group(1) if tagged else text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(call, dict) or call.get("name") not in names:
        return None
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return None
    return (call["name"], arguments) if isinstance(arguments, dict) else None
