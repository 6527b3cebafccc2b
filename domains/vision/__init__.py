"""Vision domain: image-text-to-text (LLaVA-style) students and Vision-OPD crop teachers.

Importing it registers the `vision` domain (config schema + builder), the `metadata` crop
function and the `finedetail` zoo entry.
"""

from unified_opd.domain import register_domain

from . import finedetail_zoo  # noqa: F401  (registers the zoo entry)
from .build import build
from .config import VisionRunConfig
from .crops import CROP_FNS, Cropper
from .policy import EmaSelfTeacher, LiveSelfTeacher, VisionPolicy, VisionTeacher

register_domain("vision", VisionRunConfig, build)

__all__ = ["CROP_FNS", "Cropper", "EmaSelfTeacher", "LiveSelfTeacher", "VisionPolicy", "VisionRunConfig", "VisionTeacher", "build"]
