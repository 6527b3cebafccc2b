"""Value checks every LM domain shares: the `rollout` counts and temperature (run before any model
loads) and the chat-template mode."""

from __future__ import annotations

from typing import Sequence

from unified_opd.errors import ConfigError, UserError


def check_positive(section, prefix: str, keys: Sequence[str]) -> None:
    """Each `section[key]` is a positive integer; the error names `{prefix}.{key}`."""
    for key in keys:
        if section[key] < 1:
            raise ConfigError(f"{prefix}.{key}: expected a positive integer, got {section[key]}")


def check_sampling(rollout, counts: Sequence[str] = ("batch_size", "num_samples", "max_new_tokens")) -> None:
    """`rollout.<counts>` are positive integers and `rollout.temperature` is positive."""
    check_positive(rollout, "rollout", counts)
    if rollout.temperature <= 0:
        raise ConfigError(f"rollout.temperature: expected a positive number, got {rollout.temperature}")


CHAT_TEMPLATE_MODES = ("auto", "always", "never")


def check_chat_template(mode: str, field: str) -> None:
    """`auto` (the tokenizer's template if it has one) | `always` | `never`."""
    if mode not in CHAT_TEMPLATE_MODES:
        raise ConfigError(f"{field}: expected auto, always or never, got {mode!r}")


def uses_chat_template(tok, mode: str, field: str) -> bool:
    """Whether prompts go through `tok`'s chat template under `mode` (`always` requires one)."""
    check_chat_template(mode, field)
    has_template = getattr(tok, "chat_template", None) is not None
    if mode == "always" and not has_template:
        raise UserError(f"{field}: 'always' but the student's tokenizer has no chat template")
    return has_template and mode != "never"
