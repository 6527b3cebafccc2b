"""User-facing errors.

A `UserError` is a problem with what the user gave us (config, paths, data, models). The CLI
prints it as one line on stderr and exits with code 2, without a traceback (unless `--debug`).
"""


class UserError(Exception):
    """Bad input from the user; the message names the field and what was expected."""


class ConfigError(UserError):
    """A configuration key is unknown, missing, or has the wrong type or value."""
