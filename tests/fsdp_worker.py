"""One rank of tests/test_fsdp.py's two-process check of `unified_opd.fsdp` (run by
`torch.distributed.run --nproc_per_node 2`): a tiny Llama student sharded with `fsdp.shard` next
to an unsharded copy of the same weights in the same process.

Checks, each rank writing what it saw to `<out>/rank<i>.json`:
- sampling through the sharded student (root gathered by `fsdp.gathered`) draws the same tokens
  as the unsharded copy from the same RNG state;
- three AdamW steps on the lazy (hidden states + head) distribution give the unsharded copy's
  losses and gradient norms;
- a sharded checkpoint (`ShardedCheckpoints`) saved after step 2 and loaded into a fresh
  sharded student reproduces step 3 bit for bit;
- `fsdp.full_state` equals the unsharded copy's state dict, and `saving_final` lets
  `save_pretrained` write a normal model directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator

from unified_opd import fsdp
from unified_opd.domains.lm.sampler import sample
from unified_opd.domains.lm.scoring import HiddenStates, view_distribution
from unified_opd.domains.lm.tiny import tiny_llama
from unified_opd.domains.text.zoo import arith


def build():
    torch.manual_seed(0)
    return HiddenStates(tiny_llama(arith.build_tokenizer(), hidden=64, layers=2, heads=2, context=64), lazy=True)


def step(acc, module, optimizer, view):
    dist_ = view_distribution(module, module, view, view["prompt_len"])
    loss = -(dist_.log_prob(view["input_ids"][:, 1:]) * view["mask"]).sum() / view["mask"].sum()
    loss.backward()
    norm = acc.clip_grad_norm_(list(module.parameters()), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss), float(norm)


def main(out: Path) -> None:
    acc = Accelerator(cpu=True)
    rank = acc.process_index
    plain, sharded = build(), build()
    fsdp.shard(sharded)
    report = {"layer_classes": sorted(fsdp.layer_classes(plain)), "sharded": fsdp.is_sharded(sharded)}
    # each rank its own prompts, as in training
    torch.manual_seed(100 + rank)
    ids = torch.randint(4, sharded.lm.config.vocab_size, (4, 5))
    mask = torch.ones_like(ids)
    state = torch.get_rng_state()
    with fsdp.gathered(sharded):
        drawn = sample(sharded.lm, ids, mask, 6, None, 0)
    torch.set_rng_state(state)
    reference = sample(plain.lm, ids, mask, 6, None, 0)
    report["same_tokens"] = bool(torch.equal(drawn, reference))
    report["tokens_varied"] = bool(drawn[:, 5:].unique().numel() > 1)
    view = {"input_ids": drawn, "attention_mask": torch.ones_like(drawn), "prompt_len": 5,
            "mask": torch.cat([torch.zeros(4, 4), torch.ones(4, drawn.shape[1] - 5)], 1)}
    # the unsharded copy sees both ranks' batches, as the sharded student's averaged gradient does
    both = {k: v if k == "prompt_len" else torch.cat(acc.gather(v[None]).unbind(0)) for k, v in view.items()}
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    opt_sharded = acc.prepare(torch.optim.AdamW(sharded.parameters(), lr=1e-2))
    report["plain"], report["sharded_steps"] = [], []
    for i in range(2):
        report["plain"].append(step(acc, plain, opt_plain, both))
        report["sharded_steps"].append(step(acc, sharded, opt_sharded, view))
    root = out / "checkpoints"
    saver = fsdp.ShardedCheckpoints(acc, sharded, opt_sharded)
    saver.save(root, 2, {"note": "test"}, None, keep=2, generators=())
    report["sharded_steps"].append(step(acc, sharded, opt_sharded, view))
    report["plain"].append(step(acc, plain, opt_plain, both))
    resumed = build()
    fsdp.shard(resumed)
    opt_resumed = acc.prepare(torch.optim.AdamW(resumed.parameters(), lr=1e-2))
    data = fsdp.ShardedCheckpoints(acc, resumed, opt_resumed).load(root / "step_00000002", "trainer.resume")
    report["state_read"] = data["state"]["note"]
    report["resumed_step3"] = step(acc, resumed, opt_resumed, view)
    full = fsdp.full_state(sharded)
    resumed_full = fsdp.full_state(resumed)
    if acc.is_main_process:
        ref = plain.state_dict()
        report["full_keys_equal"] = sorted(full) == sorted(ref)
        report["full_max_diff"] = max(float((full[k] - ref[k]).abs().max()) for k in ref)
        report["resumed_bit_exact"] = all(torch.equal(full[k], resumed_full[k]) for k in full)
    with fsdp.saving_final(acc, sharded):
        if acc.is_main_process:
            sharded.lm.save_pretrained(out / "final")
    report["still_sharded"] = type(sharded.lm.lm_head.weight).__name__ == "DTensor"
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    if acc.is_main_process:
        torch.save({k: v.clone() for k, v in full.items()}, out / "full.pt")
    dist.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
