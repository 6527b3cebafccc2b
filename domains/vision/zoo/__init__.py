"""The vision domain's zoo entries: `finedetail` (generated glyph images, a crop-reading student and
a full-image teacher), with the tiny LLaVA-style model builders they use."""

from . import finedetail  # noqa: F401  (registers the zoo entry)
