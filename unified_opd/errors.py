"""User-facing errors.

A `UserError` is a problem with what the user gave us (config, paths, data, models). The CLI
prints it as one line on stderr and exits with code 2, without a traceback (unless `--debug`).
"""


class UserError(Exception):
    """Bad input from the user; the message names the field and what was expected."""


class ConfigError(UserError):
    """A configuration key is unknown, missing, or has the wrong type or value."""


def require_one_of(field: str, value, choices, error: type = ConfigError) -> None:
    """Raise `error` naming `field` unless `value` is one of `choices`."""
    if value not in choices:
        raise error(f"{field}: expected one of {', '.join(str(c) for c in choices)}, got {value!r}")
