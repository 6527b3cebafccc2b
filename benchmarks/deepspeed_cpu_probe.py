"""What DeepSpeed ZeRO-3 does through accelerate on CPU processes (docs/scale.md, "DeepSpeed ZeRO-3").

One ZeRO-3 step of a tiny Llama under `accelerate launch` with a DeepSpeed config, printing what
accelerate believes about the processes next to what torch.distributed says:

    pip install deepspeed
    OMP_NUM_THREADS=1 accelerate launch --config_file configs/accelerate/zero3.yaml benchmarks/deepspeed_cpu_probe.py

`Accelerator(cpu=False)`: with `cpu=True` (what the trainer asks for on a machine without GPUs)
accelerate never applies DeepSpeed.
"""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from unified_opd.domains.lm.tiny import tiny_llama
from unified_opd.domains.text.zoo import arith


def main() -> None:
    acc = Accelerator(cpu=False)
    # no dataloader goes through prepare, so the batch sizes DeepSpeed checks are given here
    AcceleratorState().deepspeed_plugin.deepspeed_config.update(train_micro_batch_size_per_gpu=1, train_batch_size=2)
    print(
        f"RANK={os.environ.get('RANK')} torch world={torch.distributed.get_world_size()} | accelerate: "
        f"{acc.distributed_type.value}, num_processes={acc.num_processes}, process_index={acc.process_index}, "
        f"is_main_process={acc.is_main_process}",
        flush=True,
    )
    torch.manual_seed(0)
    lm = tiny_llama(arith.build_tokenizer(), hidden=64, layers=2, heads=2, context=64)
    lm, optimizer = acc.prepare(lm, torch.optim.AdamW(lm.parameters(), lr=1e-3))
    ids = torch.randint(4, lm.module.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    loss = lm(input_ids=ids, labels=ids).loss
    acc.backward(loss)
    optimizer.step()
    print(f"RANK={os.environ.get('RANK')} ZeRO-3 step done, loss {loss.item():.6f}", flush=True)
    acc.end_training()


if __name__ == "__main__":
    main()
