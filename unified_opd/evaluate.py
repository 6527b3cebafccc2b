"""`uopd eval`: held-out metrics of a config's student (or a trained one) without training."""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from accelerate.utils import set_seed

from .accelerator import make_accelerator
from .config import load_config
from .domain import checked_domain, schema_for


def run_eval(config: str, overrides: Sequence[str] = ()) -> Dict[str, float]:
    """Build the config's components and run the domain's evaluation once.

    To evaluate a trained student, point `student.path` at `{output_dir}/final`.
    """
    cfg = load_config(config, overrides, schema_for)
    set_seed(cfg.trainer.seed)
    domain = checked_domain(cfg)  # bad values fail here, before any model load
    components = domain.build(cfg, make_accelerator(cfg.trainer))
    if components.evaluate is None:
        return {}
    components.policy.module.eval()
    with torch.no_grad():
        return components.evaluate(components.policy, 0)
