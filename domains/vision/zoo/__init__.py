"""The vision domain's zoo entries: `finedetail` (generated glyph images, a crop-reading LLaVA-style
student and a full-image teacher) and `finedetail_qwen2vl` (the same data, a Qwen2-VL-architecture
student), with the tiny model builders they use."""

from . import finedetail  # noqa: F401  (registers the zoo entry)
