"""One training loop for every domain.

    batch -> policy.rollout -> teacher.distribution -> objective(student, teacher, rollout) -> step

Accelerate owns devices, mixed precision and multi-process launch. This module is the loop and
what it checkpoints; the pieces around it have their own modules: `run_control` (stop signals,
the time budget, decisions all processes take together), `metrics_log` (metrics.jsonl,
TensorBoard, phase timings), `run_dir` (output directory, resume policy, final files),
`lr_schedule` and `checkpoint` (atomic files, RNG).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig
from rich.console import Console

from . import checkpoint as ckpt
from . import fsdp
from .accelerator import make_accelerator
from .background_rollouts import LiveRollouts, rollout_source
from .data import DataStream
from .domain import Components
from .errors import ConfigError, UserError
from .memory import peak_memory_metrics, prepare_student
from .lr_schedule import lr_lambda
from .metrics_log import MetricsLog, PhaseTimer, progress_bar, progress_info
from .run_control import RankAgreement, StopSignal, TrainClock
from .run_dir import RunDir
from .trainer_checks import check_before_loading

console = Console(stderr=True)


@dataclass
class StepResult:
    """One optimiser step's outcome: `applied` is False when a non-finite loss or gradient
    discarded it (nothing was updated)."""

    applied: bool
    metrics: Dict[str, float] = field(default_factory=dict)


class Trainer:
    """Runs one configured distillation job; see `train()`."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        t = cfg.trainer
        # everything that can be checked without loading models is checked first, so a typo
        # fails in a second instead of after a model load or a zoo build
        self.domain, self.objective, self.callbacks = check_before_loading(cfg)
        self.accelerator = acc = make_accelerator(t, t.output_dir)
        self.run_dir = RunDir(t.output_dir, acc.is_main_process)
        self.clock = TrainClock(t.max_time_minutes)
        self.resume_from = self.run_dir.resume_point(str(t.resume))
        set_seed(t.seed)
        self.components: Components = self.domain.build(cfg, acc)
        if self.objective.needs_reference() and self.components.reference is None:
            # the objective would only find out at the first step, after the run has started writing
            what = "objective.lam: λ != 1" if self.objective.lam != 1.0 else "objective.lam_rule: 'tv_adaptive'"
            raise ConfigError(f"{what} needs a reference model (teacher.reference)")
        self.policy, self.teacher = self.components.policy, self.components.teacher
        self.optimizer, self.scheduler = self._optimizer(t)
        if acc.num_processes > 1:
            ckpt.seed_rank(t.seed, acc.process_index, self.components.generators)
        self.data = DataStream(self.components.train_records, cfg.rollout.batch_size, t.seed, acc.process_index, acc.num_processes)
        self.ranks = RankAgreement(acc)
        self.log = MetricsLog(self.run_dir.out, acc, cfg)
        self.timer = PhaseTimer(sync_cuda=bool(t.profile) and torch.cuda.is_available())
        self.step = 0
        self.history: Dict[str, Dict[str, float]] = {}
        self.rollouts = LiveRollouts(self.policy, self.data)  # train() may start background ones instead

    def _optimizer(self, t: DictConfig):
        params = prepare_student(self.policy.module, t.gradient_checkpointing)
        if not params:
            raise UserError("student: the model has no trainable parameters")
        # the fused kernel updates every tensor in one call: 4 ms -> 0.9 ms per step for a
        # 21-tensor student on CPU, where the default per-tensor loop is pure overhead
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        # FSDP replaces the parameters by their shards, so the optimizer is made from what `prepare` passes
        adamw = lambda ps: torch.optim.AdamW(ps, lr=t.lr, weight_decay=t.weight_decay, betas=tuple(t.betas), fused=fused)
        module, optimizer = fsdp.prepare(self.accelerator, self.policy.module, adamw, t.mixed_precision)
        # the scheduler stays outside `prepare`: accelerate would step it once per process per step,
        # so under N processes the schedule would run N times too fast
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t, self.clock.fraction))
        self.policy.train_module = module
        self.checkpoints = fsdp.checkpoints_for(self.accelerator, module, optimizer)
        return optimizer, scheduler

    # ------------------------------------------------------------------ the loop
    def train(self) -> Dict[str, Any]:
        """Run to `trainer.max_steps` (or the time limit); returns before/after eval and timings."""
        t = self.cfg.trainer
        if self.resume_from is not None:
            self._restore(self.resume_from)
        self.run_dir.save_config(self.cfg)
        if self.step == 0 and "before" not in self.history:
            self._evaluate("before")
        start_step = self.step
        # a domain's build may leave gradients behind (the diffusion cold start does); the first
        # step must see only its own, or it differs between a fresh and a resumed launch
        self.optimizer.zero_grad(set_to_none=True)
        nonfinite = 0
        t_start = time.perf_counter()
        self.clock.start()
        self.rollouts = rollout_source(self.cfg, self.policy, self.data, self.step)
        try:
            return self._loop(t, start_step, nonfinite, t_start)
        finally:
            self.rollouts.close()
            self.rollouts = LiveRollouts(self.policy, self.data)

    def _loop(self, t: DictConfig, start_step: int, nonfinite: int, t_start: float) -> Dict[str, Any]:
        with StopSignal() as stop, progress_bar(self.accelerator.is_main_process, console) as bar:
            task = bar.add_task("train", total=t.max_steps, completed=self.step, info="")
            while self.step < t.max_steps:
                t0 = time.perf_counter()
                result = self.train_step()
                if not result.applied:
                    nonfinite += 1
                    self._skipped(nonfinite, t.max_nonfinite)
                    continue
                nonfinite = 0
                self.step += 1
                m = result.metrics
                m["time/step"] = time.perf_counter() - t0
                for phase in ("rollout", "teacher", "update"):
                    m[f"time/{phase}"] = self.timer.this_step[phase]
                if self.step % t.log_every == 0 or self.step == t.max_steps:
                    self.log.write(self.step, {**m, **peak_memory_metrics(self.accelerator)})
                bar.update(task, completed=self.step, info=progress_info(m))
                if t.eval_every and self.step % t.eval_every == 0 and self.step < t.max_steps:
                    self._evaluate(f"step_{self.step}")
                stop_requested = self.ranks.clock_and_stop(self.clock, stop.requested)
                out_of_time = self.clock.out_of_time()
                if (t.save_every and self.step % t.save_every == 0) or stop_requested or out_of_time:
                    self._save()
                if stop_requested:
                    console.print(f"[yellow]stopped[/yellow] at step {self.step}; resume with the same command")
                    return {"stopped": True, "step": self.step}
                if out_of_time:
                    console.print(f"[yellow]time limit[/yellow] trainer.max_time_minutes={t.max_time_minutes} reached")
                    break
        train_seconds = time.perf_counter() - t_start
        self.clock.pause()  # the final eval is not training
        return self._finish(start_step, train_seconds)

    def train_step(self) -> StepResult:
        """`trainer.updates_per_rollout` optimiser updates, each over `trainer.grad_accum` rollout
        batches: fresh ones for the first update, the same ones (teacher scores kept, importance
        ratio clipped) for the others."""
        # config values are read once per step: each omegaconf lookup costs ~10 µs of Python,
        # which adds up to a few percent of a small model's step
        t = self.cfg.trainer
        accum, updates = t.grad_accum, t.updates_per_rollout
        metrics: Dict[str, float] = {}
        self.timer.new_step()
        replay: List[tuple] = []
        for update in range(updates):
            batches = replay if update else (self._collect() for _ in range(accum))
            for batch in batches:
                rollout, teacher_dist, reference, old_logp = batch
                with self.timer("update"):
                    student_dist = self.policy.distribution(rollout)
                    if update == 0 and updates > 1:
                        replay.append((rollout, teacher_dist, reference, self.objective.action_log_probs(student_dist, rollout)))
                    loss, m = self._loss(student_dist, teacher_dist, rollout, reference, old_logp, t.max_steps)
                    if not self.ranks.all_finite(loss):
                        self.optimizer.zero_grad(set_to_none=True)
                        return StepResult(applied=False)
                    self.accelerator.backward(loss / accum)
                for k, v in m.items():
                    metrics[k] = metrics.get(k, 0.0) + v / (accum * updates)
                if update == 0 and rollout.outcome is not None:
                    metrics["reward"] = metrics.get("reward", 0.0) + float(rollout.outcome.float().mean()) / accum
                if update == 0 and "staleness" in rollout.meta:
                    metrics["rollout/staleness"] = metrics.get("rollout/staleness", 0.0) + rollout.meta["staleness"] / accum
            applied, grad_norm = self._optimizer_step(t.grad_clip)
            if not applied:
                return StepResult(applied=False)
        self.scheduler.step()
        self.teacher.after_step(self.policy)
        for callback in self.callbacks:
            callback.after_step(self.policy, self.step + 1)
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        return StepResult(applied=True, metrics=metrics)

    def _collect(self):
        """One fresh rollout batch with its teacher (and reference) scores."""
        with self.timer("rollout"):
            # with background rollouts, time/rollout is the wait for them, not their sampling time
            rollout = self.rollouts.next(self.step)
        with self.timer("teacher"), torch.no_grad():
            teacher_dist = self.teacher.distribution(rollout)
            reference = self.components.reference.distribution(rollout) if self.components.reference else None
        return rollout, teacher_dist, reference, None

    def _loss(self, student_dist, teacher_dist, rollout, reference, old_logp, max_steps: int):
        """The objective's loss, plus the domain's extra term if it has one."""
        loss, m = self.objective(student_dist, teacher_dist, rollout, reference, self.step, max_steps, old_logp)
        if self.components.extra_loss is not None:
            extra, extra_metrics = self.components.extra_loss(self.policy, self.step)
            loss, m = loss + extra, {**m, **extra_metrics}
        return loss, m

    def _optimizer_step(self, clip: float):
        """Clip and apply the accumulated gradients -> (applied, grad norm); a non-finite norm
        discards them instead."""
        with self.timer("update"):
            grad_norm = None
            if clip > 0:
                grad_norm = self.accelerator.clip_grad_norm_(self.policy.train_module.parameters(), clip)
            applied = grad_norm is None or bool(torch.isfinite(torch.as_tensor(grad_norm)))
            if applied:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return applied, grad_norm

    def _skipped(self, in_a_row: int, limit: int) -> None:
        console.print(f"[yellow]warning[/yellow]: non-finite loss or gradient at step {self.step}; step skipped")
        if in_a_row >= limit:
            last = ckpt.latest_checkpoint(self.run_dir.checkpoints)
            raise UserError(
                f"training stopped: loss or gradients were non-finite for {in_a_row} consecutive steps "
                f"at step {self.step} (lower trainer.lr or check the data); last good checkpoint: {last}"
            )

    def _evaluate(self, tag: str) -> Dict[str, float]:
        if self.components.evaluate is None:
            return {}
        self.policy.module.eval()
        # evaluation restores the global RNG a background rollout draws from: none runs inside
        with self.rollouts.paused(), torch.no_grad(), ckpt.rng_preserved(self.components.generators), fsdp.gathered(self.policy.module):
            metrics = self.components.evaluate(self.policy, self.step)
        self.policy.module.train()
        self.history[tag] = metrics
        self.log.write(self.step, {f"eval/{k}": v for k, v in metrics.items()})
        if self.accelerator.is_main_process:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            console.print(f"[bold]eval[/bold] ({tag}, step {self.step}): {shown}")
        return metrics

    def _finish(self, start_step: int, train_seconds: float) -> Dict[str, Any]:
        after = self._evaluate("after")
        self._save()
        summary = {
            "steps": self.step,
            "steps_this_run": self.step - start_step,
            "train_seconds": train_seconds,
            "before": self.history.get("before", {}),
            "after": after,
            "time_per_step": train_seconds / max(1, self.step - start_step),
            "phase_seconds": dict(self.timer.total),
        }
        self.log.close()
        with fsdp.saving_final(self.accelerator, self.policy.module):
            self.run_dir.finish(self.policy, self.cfg, summary)
        self.accelerator.wait_for_everyone()
        return summary

    # ------------------------------------------------------------------ checkpoints
    def _save(self) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        # with background rollouts, the data position before the ones in flight: a resume redraws them
        data = self.rollouts.data_state()
        state = dict(scheduler=self.scheduler.state_dict(), data=data, history=self.history, train_seconds=self.clock.seconds())
        self.checkpoints.save(
            self.run_dir.checkpoints, self.step, state, self.teacher.state(), self.cfg.trainer.keep_checkpoints, self.components.generators
        )
        acc.wait_for_everyone()

    def _restore(self, path) -> None:
        field_name = "trainer.output_dir" if str(self.cfg.trainer.resume) == "auto" else "trainer.resume"
        data = self.checkpoints.load(path, field_name)
        state = data["state"]
        self.scheduler.load_state_dict(state["scheduler"])
        self.data.load_state(state["data"])
        if data["teacher"] is not None:
            self.teacher.load_state(data["teacher"])
        self.history = state.get("history", {})
        self.clock.restore(state.get("train_seconds", 0.0))
        self.step = int(state["step"])
        ckpt.restore_rng(data["rng_tensors"], state["rng"], self.components.generators)
        console.print(f"[cyan]resumed[/cyan] from {path} at step {self.step}")
