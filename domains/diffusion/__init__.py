"""Diffusion domain: on-policy distillation of diffusers flow-matching image generators.

Importing it registers the `diffusion` domain (schema, build, check), the `timestep` loss weight
and the `digits` zoo entry.
"""

from unified_opd.domain import register_domain

from . import weights, zoo  # noqa: F401  (registrations)
from .build import build
from .config import DiffusionRunConfig, check

register_domain("diffusion", DiffusionRunConfig, build, check, distribution="gaussian")
