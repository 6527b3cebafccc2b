"""The text domain's zoo entries: `arith` (generated arithmetic, a teacher, a student and experts) and
the entries fine-tuned from its student (`arith_skill_experts`, `arith_hint`)."""

from . import arith, arith_students  # noqa: F401  (register the zoo entries)
