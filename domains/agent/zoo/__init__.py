"""The agent domain's zoo entries: `keydoor`, `shop` and `toolcalc` (a teacher agent and a weaker
student per env, trained on the scripted expert's actions)."""

from . import agents  # noqa: F401  (registers the zoo entries)
