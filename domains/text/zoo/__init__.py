"""The text domain's zoo entries: `arith` (generated arithmetic, a teacher, a student and experts)."""

from . import arith  # noqa: F401  (registers the zoo entry)
