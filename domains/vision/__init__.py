"""Vision domain: image-text-to-text students (Qwen-VL, LLaVA, Idefics3 / SmolVLM, PaliGemma,
Gemma 3 families) and Vision-OPD crop teachers.

Importing it registers the `vision` domain (config schema, value checks, builder), the
`metadata` crop function and the `finedetail` zoo entry.
"""

from unified_opd.domain import register_domain

from . import zoo  # noqa: F401  (registers the zoo entry)
from .build import build
from .config import VisionRunConfig, check

register_domain("vision", VisionRunConfig, build, check, distribution="categorical")
