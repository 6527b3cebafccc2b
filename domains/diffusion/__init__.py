"""Diffusion domain: on-policy distillation of diffusers flow-matching image generators.

Importing it registers the `diffusion` domain, the `timestep` loss weight and the `digits` zoo entry.
"""

from . import build, digits, weights  # noqa: F401  (registrations)
from .build import build as build_components
from .config import DiffusionRunConfig
from .policy import DiffusionPolicy, DiffusionTeacher

__all__ = ["DiffusionPolicy", "DiffusionRunConfig", "DiffusionTeacher", "build_components"]
