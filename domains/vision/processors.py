"""Loading a model's multimodal processor, also where transformers cannot build it whole.

transformers 5 builds the processors that also take videos (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
LLaVA-OneVision, SmolVLM) only with their video processor, which needs torchvision; without it,
`AutoProcessor` falls back to the bare tokenizer. For those families `image_only(cls)` is the same
processor class without its video processor: its own `__init__` and `__call__` (placeholder
expansion by image grid or tiles, `mm_token_type_ids`) run unchanged, with the image processor
that loads (the PIL one, e.g. `Qwen2VLImageProcessorPil`, without torchvision; the fast one with
it). The class keeps its transformers name, so a directory it saves loads as the full processor
where torchvision is installed. Passing videos to it is an error from transformers.
"""

from __future__ import annotations

from typing import Any, Dict, Type

from transformers import (
    AutoProcessor,
    LlavaOnevisionProcessor,
    ProcessorMixin,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
    Qwen3VLProcessor,
    SmolVLMProcessor,
)

from unified_opd.domains.lm import load_pretrained

VIDEO_BOUND: Dict[str, Type[ProcessorMixin]] = {
    "qwen2_vl": Qwen2VLProcessor,
    "qwen2_5_vl": Qwen2_5_VLProcessor,
    "qwen3_vl": Qwen3VLProcessor,
    "llava_onevision": LlavaOnevisionProcessor,
    "smolvlm": SmolVLMProcessor,
}


def image_only(cls: Type[ProcessorMixin]) -> Type[ProcessorMixin]:
    """`cls` whose sub-processors are its image processor and tokenizer only; build it as `cls`
    with `video_processor=None`.

    `ProcessorMixin` pairs the positional sub-processors it is given with `get_attributes()`, so
    the `video_processor=None` that `cls.__init__` passes on is dropped instead of type-checked;
    `from_pretrained` loads the two sub-processors and adds the `None`."""
    attributes = [a for a in cls.get_attributes() if a != "video_processor"]

    def from_dict(klass, processor_dict, **kwargs):
        return super(image_only_cls, klass).from_dict({**processor_dict, "video_processor": None}, **kwargs)

    members = {
        "get_attributes": classmethod(lambda _: list(attributes)),
        "from_dict": classmethod(from_dict),
        # SmolVLM's own override only adds its video processor's frame settings
        "apply_chat_template": ProcessorMixin.apply_chat_template,
        "video_processor": None,
        "__doc__": f"{cls.__name__} for images only.",
    }
    image_only_cls = type(cls.__name__, (cls,), members)
    return image_only_cls


IMAGE_ONLY = {model_type: image_only(cls) for model_type, cls in VIDEO_BOUND.items()}


def load_processor(local: str, model_type: str, field: str, errors, trust_remote_code: bool) -> Any:
    """`AutoProcessor` for `local`; for a family whose full processor cannot be built here (no
    torchvision, or no saved video processor config), the image-only processor of that family."""
    what = "an image-text processor"
    if model_type not in IMAGE_ONLY:
        return load_pretrained(AutoProcessor, local, field, what, errors, trust_remote_code=trust_remote_code)
    try:
        processor = AutoProcessor.from_pretrained(local, trust_remote_code=trust_remote_code)
    except errors:
        processor = None
    if getattr(processor, "image_processor", None) is None:
        processor = load_pretrained(IMAGE_ONLY[model_type], local, field, what, errors)
    return processor
