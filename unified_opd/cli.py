"""`uopd`: train, evaluate, serve a teacher, and build zoo models from the command line.

Bad input (a `UserError`) prints one line on stderr and exits with code 2; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uopd",
        description="unified_opd: on-policy distillation for text, vision, diffusion and agents.",
        epilog="Example: uopd train configs/text/opd_arith.yaml trainer.max_steps=200 divergence.name=jsd",
    )
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    tr = sub.add_parser("train", help="distil a student: uopd train CONFIG [key=value ...]")
    tr.add_argument("config", help="YAML recipe, e.g. configs/text/opd_arith.yaml")
    tr.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.max_steps=200")
    tr.add_argument("--profile", action="store_true", help="print where the step time goes (rollout/teacher/update)")
    tr.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    ev = sub.add_parser("eval", help="held-out accuracy and KL to the teacher: uopd eval CONFIG [key=value ...]")
    ev.add_argument("config")
    ev.add_argument("overrides", nargs="*")
    ev.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    ca = sub.add_parser(
        "cache-teacher", help="write a teacher's top-k log-probs on fixed rollouts (Lightning OPD): uopd cache-teacher CONFIG"
    )
    ca.add_argument("config")
    ca.add_argument("overrides", nargs="*")
    ca.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    se = sub.add_parser(
        "serve-teacher", help="a local causal LM behind an OpenAI-compatible /v1/completions with prompt_logprobs: uopd serve-teacher MODEL_DIR"
    )
    se.add_argument("model", help="a model directory, zoo:NAME/sub or Hub id")
    se.add_argument("--host", default="127.0.0.1")
    se.add_argument("--port", type=int, default=8000)
    se.add_argument("--top-k", type=int, default=20, help="the most prompt log-probs a request may ask for (vLLM's --max-logprobs)")
    se.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    se.add_argument("--name", default=None, help="the model id in /v1/models (default: MODEL as given)")
    se.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    zoo = sub.add_parser("zoo", help="the project's own small teachers/students: uopd zoo build NAME")
    zsub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zb = zsub.add_parser("build", help="train and cache a zoo entry (e.g. arith)")
    zb.add_argument("name")
    zb.add_argument("--force", action="store_true", help="rebuild even if cached")
    zb.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    zsub.add_parser("list", help="list zoo entries and whether they are built")
    return p


def _train(args) -> int:
    from .config import load_config
    from .domain import schema_for
    from .trainer import Trainer

    overrides = list(args.overrides) + (["trainer.profile=true"] if args.profile else [])
    cfg = load_config(args.config, overrides, schema_for)
    trainer = Trainer(cfg)
    summary = trainer.train()
    if not trainer.accelerator.is_main_process:  # one summary per launch, not one per rank
        return 0
    if cfg.trainer.profile:
        _print_profile(summary)
    print(json.dumps({k: summary[k] for k in ("steps", "before", "after", "time_per_step") if k in summary}))
    return 0


def _print_profile(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    phases = summary.get("phase_seconds", {})
    total = sum(phases.values()) or 1.0
    steps = max(1, summary.get("steps_this_run", 1))
    table = Table(title="where the step time goes")
    for col in ("phase", "seconds", "per step (ms)", "share"):
        table.add_column(col)
    for k, v in phases.items():
        table.add_row(k, f"{v:.2f}", f"{1000 * v / steps:.1f}", f"{100 * v / total:.0f}%")
    Console(stderr=True).print(table)


def _eval(args) -> int:
    from .evaluate import run_eval

    print(json.dumps(run_eval(args.config, args.overrides)))
    return 0


def _cache_teacher(args) -> int:
    from .cache import CACHE_WRITERS
    from .config import load_config
    from .domain import checked_domain, schema_for

    cfg = load_config(args.config, args.overrides, schema_for)
    checked_domain(cfg)  # importing the domain registers its cache writer; bad values fail here
    print(CACHE_WRITERS.get(cfg.domain, "domain")(cfg))
    return 0


def _serve_teacher(args) -> int:
    import importlib

    # the core finds the LM layer by name, as it finds domains (it imports none of them)
    serve = importlib.import_module("unified_opd.domains.lm.serve").serve
    serve(args.model, args.host, args.port, args.top_k, args.dtype, args.name)
    return 0


def _zoo(args, parser) -> int:
    from . import zoo

    if args.zoo_command == "build":
        print(zoo.build(args.name, force=args.force))
        return 0
    if args.zoo_command == "list":
        zoo._load_builtin_entries()
        for name in zoo.ZOO.names():
            cached, current = zoo.cached_version(zoo.zoo_home() / name), zoo.builder_of(name).zoo_version
            state = "not built" if cached is None else "built" if cached == current else f"stale (version {cached}, now {current})"
            print(f"{name}\t{state}")
        return 0
    parser.parse_args(["zoo", "--help"])
    return 2


def _quiet_libraries() -> None:
    """Our own progress bars report the work; per-file weight loading bars would bury them."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "cache-teacher":
            return _cache_teacher(args)
        if args.command == "serve-teacher":
            return _serve_teacher(args)
        return _zoo(args, parser)
    except UserError as e:
        if args.debug:
            raise
        print(f"uopd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uopd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
