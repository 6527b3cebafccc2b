"""Vision domain: image-text-to-text (LLaVA-style) students and Vision-OPD crop teachers.

Importing it registers the `vision` domain (config schema, value checks, builder), the
`metadata` crop function and the `finedetail` zoo entry.
"""

from unified_opd.domain import register_domain

from . import zoo  # noqa: F401  (registers the zoo entry)
from .build import build
from .config import VisionRunConfig, check

register_domain("vision", VisionRunConfig, build, check, distribution="categorical")
