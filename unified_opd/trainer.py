"""One training loop for every domain.

    batch -> policy.rollout -> teacher.distribution -> objective(student, teacher, rollout) -> step

Accelerate owns devices, mixed precision and multi-process launch; this module owns the loop,
checkpoint/resume (model, optimizer, scheduler, RNG, data position, teacher state), metrics,
the non-finite guard and graceful stop on SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import checkpoint as ckpt
from .callbacks import build_callbacks
from .data import DataStream
from .divergences import divergence_from_options
from .domain import Components, get_domain
from .errors import ConfigError, UserError
from .objective import Objective
from .weights import build_weights

console = Console(stderr=True)


def build_objective(cfg: DictConfig) -> Objective:
    d = OmegaConf.to_container(cfg.divergence)
    o = cfg.objective
    return Objective(
        divergence=divergence_from_options(d.pop("name"), d),
        estimator=o.estimator,
        weights=tuple(build_weights(list(OmegaConf.to_container(o.weights)))),
        lam=o.lam,
        baseline=o.baseline,
        clip_eps=o.clip_eps,
        discount=o.discount,
        baseline_top_k=o.baseline_top_k,
        lam_rule=o.lam_rule,
        lam_tv=o.lam_tv,
        outcome_advantage=o.outcome_advantage,
        outcome_coef=o.outcome_coef,
        outcome_weights=tuple(build_weights(list(OmegaConf.to_container(o.outcome_weights)), "objective.outcome_weights")),
    )


def _lr_lambda(t: DictConfig, time_fraction=lambda: 0.0):
    """LR multiplier per step: linear warm-up, then the schedule over the rest of the run.

    With a time budget (`trainer.max_time_minutes`) the run may stop long before `max_steps`, so
    the schedule's progress is the larger of the step fraction and `time_fraction()` (training
    time used / budget): a cosine then reaches 0 when the budget ends, on any machine."""
    warm, total, kind = t.warmup_steps, max(1, t.max_steps), t.lr_schedule
    if kind not in ("constant", "linear", "cosine"):
        raise ConfigError(f"trainer.lr_schedule: expected constant, linear or cosine, got {kind!r}")

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        frac = min(1.0, max((step - warm) / max(1, total - warm), time_fraction()))
        if kind == "linear":
            return 1.0 - frac
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        return 1.0

    return f


class _StopFlag:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint after the current step and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no handler
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second signal means "now"
            raise KeyboardInterrupt
        self.requested = True
        console.print(f"[yellow]signal {signum}: saving a checkpoint after this step, then stopping[/yellow]")

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    """Runs one configured distillation job; see `train()`."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        t = cfg.trainer
        self.out = Path(t.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.accelerator = Accelerator(cpu=t.cpu, mixed_precision=t.mixed_precision)
        # everything that can be checked without loading models is checked first, so a typo
        # fails in a second instead of after a model load or a zoo build
        self.objective = build_objective(cfg)
        for key in ("grad_accum", "updates_per_rollout"):
            if t[key] < 1:
                raise ConfigError(f"trainer.{key}: expected an integer >= 1, got {t[key]}")
        self.callbacks = build_callbacks(list(OmegaConf.to_container(t.callbacks)))
        # training seconds of earlier launches (restored on resume): the time budget spans them
        self.train_seconds_before = 0.0
        self._segment_start: Optional[float] = None
        self._clock = 0.0  # training seconds as all processes agree on them (`_sync_clock`)
        lr_lambda = _lr_lambda(t, self._time_fraction)
        self.resume_from = self._check_output_dir()
        set_seed(t.seed)
        self.domain = get_domain(cfg.domain)
        self.components: Components = self.domain.build(cfg, self.accelerator)
        if self.objective.needs_reference() and self.components.reference is None:
            # the objective would only find out at the first step, after the run has started writing
            what = "objective.lam: λ != 1" if self.objective.lam != 1.0 else "objective.lam_rule: 'tv_adaptive'"
            raise ConfigError(f"{what} needs a reference model (teacher.reference)")
        self.policy = self.components.policy
        self.teacher = self.components.teacher
        params = [p for p in self.policy.module.parameters() if p.requires_grad]
        if not params:
            raise UserError("student: the model has no trainable parameters")
        # the fused kernel updates every tensor in one call: 4 ms -> 0.9 ms per step for a
        # 21-tensor student on CPU, where the default per-tensor loop is pure overhead
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        self.optimizer = torch.optim.AdamW(
            params, lr=t.lr, weight_decay=t.weight_decay, betas=tuple(t.betas), fused=fused
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        module, self.optimizer, self.scheduler = self.accelerator.prepare(
            self.policy.module, self.optimizer, self.scheduler
        )
        self.policy.train_module = module
        acc = self.accelerator
        self.data = DataStream(
            self.components.train_records, cfg.rollout.batch_size, t.seed, acc.process_index, acc.num_processes
        )
        self.step = 0
        self.history: Dict[str, Dict[str, float]] = {}
        self.timings: Dict[str, list] = defaultdict(list)
        self.step_times: Dict[str, float] = defaultdict(float)
        self._sync_timings = bool(t.profile) and torch.cuda.is_available()  # exact GPU phase times
        self._tb = None

    def _train_seconds(self) -> float:
        running = 0.0 if self._segment_start is None else time.perf_counter() - self._segment_start
        return self.train_seconds_before + running

    def _time_fraction(self) -> float:
        budget = 60.0 * self.cfg.trainer.max_time_minutes
        return self._clock / budget if budget > 0 else 0.0

    def _sync_clock(self, stop_requested: bool) -> bool:
        """Agree across processes on the training time and on a stop request; returns the latter.

        Each process reads its own clock, and a signal may reach the ranks at different steps. If
        they disagreed, a time-budgeted LR schedule would give the ranks different learning rates
        (their weights would drift apart under DDP) and one rank would leave the loop while the
        others wait in the next all-reduce. So the largest clock reading and any rank's stop
        request hold for all.
        """
        seconds = self._train_seconds()
        if self.accelerator.num_processes > 1:
            mine = torch.tensor([seconds, float(stop_requested)], device=self.accelerator.device)
            seconds, stop = self.accelerator.gather(mine).view(-1, 2).max(0).values.tolist()
            stop_requested = stop > 0
        self._clock = seconds
        return stop_requested

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every process.

        A rank that skipped its backward alone would leave the others waiting in the gradient
        all-reduce (or pair it with its next micro-batch's), so the skip is decided together.
        """
        finite = bool(torch.isfinite(loss))
        if self.accelerator.num_processes > 1:
            mine = torch.tensor([float(finite)], device=self.accelerator.device)
            finite = bool(self.accelerator.gather(mine).min() > 0)
        return finite

    # ------------------------------------------------------------------ output dir / resume
    def _check_output_dir(self) -> Optional[Path]:
        resume = str(self.cfg.trainer.resume)
        latest = ckpt.latest_checkpoint(self.ckpt_dir)
        if resume == "never":
            if latest is not None or (self.out / "final").exists():
                raise UserError(
                    f"trainer.output_dir: {self.out} already holds a run; use trainer.resume=auto to continue it "
                    f"or choose another output_dir"
                )
            return None
        if resume == "auto":
            if latest is None and (self.out / "final").exists():
                raise UserError(
                    f"trainer.output_dir: {self.out} holds a finished run without checkpoints; choose another output_dir"
                )
            return latest
        path = Path(resume)
        if not (path / ckpt.COMPLETE).is_file():
            raise UserError(f"trainer.resume: {resume} is not a complete checkpoint directory")
        return path

    def _restore(self, path: Path) -> None:
        data = ckpt.load_checkpoint(path)
        try:
            self.accelerator.unwrap_model(self.policy.train_module).load_state_dict(data["model"])
            self.optimizer.load_state_dict(data["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            field = "trainer.output_dir" if str(self.cfg.trainer.resume) == "auto" else "trainer.resume"
            detail = " ".join(line.strip() for line in str(e).splitlines()[:2])
            raise UserError(
                f"{field}: checkpoint {path} was written for another model or optimizer ({detail}); "
                f"resume it with the configuration that wrote it, or use another trainer.output_dir"
            ) from e
        state = data["state"]
        self.scheduler.load_state_dict(state["scheduler"])
        self.data.load_state(state["data"])
        if data["teacher"] is not None:
            self.teacher.load_state(data["teacher"])
        self.history = state.get("history", {})
        self.train_seconds_before = self._clock = float(state.get("train_seconds", 0.0))
        self.step = int(state["step"])
        ckpt.restore_rng(data["rng_tensors"], state["rng"])
        console.print(f"[cyan]resumed[/cyan] from {path} at step {self.step}")

    def _save(self) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {
                "scheduler": self.scheduler.state_dict(),
                "data": self.data.state(),
                "history": self.history,
                "train_seconds": self._train_seconds(),
            }
            ckpt.save_checkpoint(
                self.ckpt_dir,
                self.step,
                acc.unwrap_model(self.policy.train_module).state_dict(),
                self.optimizer.state_dict(),
                state,
                teacher_state=self.teacher.state(),
                keep=self.cfg.trainer.keep_checkpoints,
            )
        acc.wait_for_everyone()

    # ------------------------------------------------------------------ logging
    def _log(self, metrics: Dict[str, float]) -> None:
        if not self.accelerator.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **metrics}) + "\n")
        if self._tb is None and self.cfg.trainer.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, self.step)

    def _evaluate(self, tag: str) -> Dict[str, float]:
        if self.components.evaluate is None:
            return {}
        self.policy.module.eval()
        with torch.no_grad():
            metrics = self.components.evaluate(self.policy, self.step)
        self.policy.module.train()
        self.history[tag] = metrics
        self._log({f"eval/{k}": v for k, v in metrics.items()})
        if self.accelerator.is_main_process:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            console.print(f"[bold]eval[/bold] ({tag}, step {self.step}): {shown}")
        return metrics

    def _save_config(self) -> None:
        if not self.accelerator.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "config.yaml"
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(OmegaConf.to_yaml(self.cfg))
        tmp.replace(path)

    # ------------------------------------------------------------------ the loop
    def _timed(self, name: str):
        trainer = self

        class _T:
            def __enter__(self_inner):
                if trainer._sync_timings:
                    torch.cuda.synchronize()
                self_inner.t0 = time.perf_counter()

            def __exit__(self_inner, *exc):
                if trainer._sync_timings:
                    torch.cuda.synchronize()
                dt = time.perf_counter() - self_inner.t0
                trainer.timings[name].append(dt)
                trainer.step_times[name] += dt

        return _T()

    def train_step(self) -> Dict[str, float]:
        """`trainer.updates_per_rollout` optimiser updates, each over `trainer.grad_accum` rollout
        batches: fresh ones for the first update, the same ones (teacher scores kept, importance
        ratio clipped) for the others."""
        # config values are read once per step: each omegaconf lookup costs ~10 µs of Python,
        # which adds up to a few percent of a small model's step
        t = self.cfg.trainer
        accum, updates = t.grad_accum, t.updates_per_rollout
        metrics: Dict[str, float] = defaultdict(float)
        self.step_times = defaultdict(float)
        replay = []
        for update in range(updates):
            batches = replay if update else (self._collect() for _ in range(accum))
            for batch in batches:
                rollout, teacher_dist, reference, old_logp = batch
                with self._timed("update"):
                    student_dist = self.policy.distribution(rollout)
                    if update == 0 and updates > 1:
                        replay.append((rollout, teacher_dist, reference, self.objective.action_log_probs(student_dist, rollout)))
                    loss, m = self.objective(
                        student_dist, teacher_dist, rollout, reference, self.step, t.max_steps, old_logp
                    )
                    if self.components.extra_loss is not None:
                        extra, extra_metrics = self.components.extra_loss(self.policy, self.step)
                        loss = loss + extra
                        m = {**m, **extra_metrics}
                    if not self._all_finite(loss):
                        self.optimizer.zero_grad(set_to_none=True)
                        return {"nonfinite": 1.0}
                    self.accelerator.backward(loss / accum)
                for k, v in m.items():
                    metrics[k] += v / (accum * updates)
                if update == 0 and rollout.outcome is not None:
                    metrics["reward"] += float(rollout.outcome.float().mean()) / accum
            applied, grad_norm = self._optimizer_step(t.grad_clip)
            if not applied:
                return {"nonfinite": 1.0}
        self.scheduler.step()
        self.teacher.after_step(self.policy)
        for callback in self.callbacks:
            callback.after_step(self.policy, self.step + 1)
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        return dict(metrics)

    def _collect(self):
        """One fresh rollout batch with its teacher (and reference) scores."""
        with self._timed("rollout"):
            self.policy.module.eval()
            with torch.no_grad():
                rollout = self.policy.rollout(self.data.next())
            self.policy.module.train()
        with self._timed("teacher"), torch.no_grad():
            teacher_dist = self.teacher.distribution(rollout)
            reference = self.components.reference.distribution(rollout) if self.components.reference else None
        return rollout, teacher_dist, reference, None

    def _optimizer_step(self, clip: float):
        """Clip and apply the accumulated gradients -> (applied, grad norm); a non-finite norm
        discards them instead."""
        with self._timed("update"):
            grad_norm = None
            if clip > 0:
                grad_norm = self.accelerator.clip_grad_norm_(self.policy.train_module.parameters(), clip)
            applied = grad_norm is None or bool(torch.isfinite(torch.as_tensor(grad_norm)))
            if applied:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return applied, grad_norm

    def train(self) -> Dict[str, Any]:
        """Run to `trainer.max_steps` (or the time limit); returns before/after eval and timings."""
        t = self.cfg.trainer
        if self.resume_from is not None:
            self._restore(self.resume_from)
        self._save_config()
        if self.step == 0 and "before" not in self.history:
            self._evaluate("before")
        start_step = self.step
        # a domain's build may leave gradients behind (the diffusion cold start does); the first
        # step must see only its own, or it differs between a fresh and a resumed launch
        self.optimizer.zero_grad(set_to_none=True)
        nonfinite = 0
        t_start = self._segment_start = time.perf_counter()
        show = self.accelerator.is_main_process
        columns = [
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with _StopFlag() as stop, Progress(*columns, console=console, disable=not show) as bar:
            task = bar.add_task("train", total=t.max_steps, completed=self.step, info="")
            while self.step < t.max_steps:
                t0 = time.perf_counter()
                m = self.train_step()
                if m.get("nonfinite"):
                    nonfinite += 1
                    console.print(f"[yellow]warning[/yellow]: non-finite loss or gradient at step {self.step}; step skipped")
                    if nonfinite >= t.max_nonfinite:
                        last = ckpt.latest_checkpoint(self.ckpt_dir)
                        raise UserError(
                            f"training stopped: loss or gradients were non-finite for {nonfinite} consecutive steps "
                            f"at step {self.step} (lower trainer.lr or check the data); last good checkpoint: {last}"
                        )
                    continue
                nonfinite = 0
                self.step += 1
                m["time/step"] = time.perf_counter() - t0
                for phase in ("rollout", "teacher", "update"):
                    m[f"time/{phase}"] = self.step_times[phase]
                if self.step % t.log_every == 0 or self.step == t.max_steps:
                    self._log(m)
                info = f"loss {m.get('loss', 0):.4f} kl {m.get('kl', 0):.4f}"
                if "reward" in m:
                    info += f" reward {m['reward']:.3f}"
                bar.update(task, completed=self.step, info=info)
                if t.eval_every and self.step % t.eval_every == 0 and self.step < t.max_steps:
                    self._evaluate(f"step_{self.step}")
                stop_requested = self._sync_clock(stop.requested)
                out_of_time = t.max_time_minutes > 0 and self._time_fraction() >= 1.0
                if (t.save_every and self.step % t.save_every == 0) or stop_requested or out_of_time:
                    self._save()
                if stop_requested:
                    console.print(f"[yellow]stopped[/yellow] at step {self.step}; resume with the same command")
                    return {"stopped": True, "step": self.step}
                if out_of_time:
                    console.print(f"[yellow]time limit[/yellow] trainer.max_time_minutes={t.max_time_minutes} reached")
                    break
        train_seconds = time.perf_counter() - t_start
        self.train_seconds_before, self._segment_start = self._train_seconds(), None  # the final eval is not training
        after = self._evaluate("after")
        self._save()
        if self.accelerator.is_main_process:
            with ckpt.atomic_directory(self.out / "final") as tmp:
                self.policy.save(str(tmp))
        summary = {
            "steps": self.step,
            "steps_this_run": self.step - start_step,
            "train_seconds": train_seconds,
            "before": self.history.get("before", {}),
            "after": after,
            "time_per_step": train_seconds / max(1, self.step - start_step),
            "phase_seconds": {k: sum(v) for k, v in self.timings.items()},
        }
        if self.accelerator.is_main_process:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        if self._tb:
            self._tb.close()
        return summary
