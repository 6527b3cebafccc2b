"""Text domain: any Hugging Face causal LM as student and teacher.

Registers the `text` domain (config schema, value checks, builder), the `arith` zoo entry, and
the teacher cache (its `teacher.kind` and its writer).
"""

from unified_opd.domain import register_domain

from . import cache  # noqa: F401  (registers the cache teacher and the cache writer)
from . import zoo  # noqa: F401  (registers the zoo entries)
from .build import build
from .config import TextRunConfig, check

register_domain("text", TextRunConfig, build, check, distribution="categorical")
