"""Which process am I: rank, world size and the main process of a multi-process run.

`accelerate launch` (and torchrun) start one process per device and tell each its place through the
environment (RANK, WORLD_SIZE, LOCAL_RANK). labkit reads those variables, so every writer can ask `is_main()`
without importing torch; one process alone is rank 0 of 1. Collective helpers (`broadcast_from_main`,
`any_rank`) are no-ops in a single process.
"""

from __future__ import annotations

import os
from typing import Any


def rank() -> int:
    """This process's global rank (0 when not launched as one of several)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)


def world_size() -> int:
    """How many processes the run has (1 when not launched by accelerate / torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main() -> bool:
    """Whether this is the process that writes files, logs and draws (rank 0)."""
    return rank() == 0


def init_distributed(backend: str | None = None) -> None:
    """Join the process group now (accelerate's PartialState: gloo on CPU, nccl on CUDA unless `backend`
    says otherwise), before a trainer would, so ranks can agree on a run's plan before any model loads.
    A no-op in one process.

    More processes than GPUs (two processes sharing one GPU, to try the multi-process path on one card)
    need gloo: each process is then pointed at GPU `local rank mod GPU count`.
    """
    if world_size() == 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    gpus = torch.cuda.device_count()
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if gpus and local >= gpus:
        if backend != "gloo":
            raise RuntimeError(f"{world_size()} processes on {gpus} GPU(s) need backend='gloo' (NCCL wants "
                               "one GPU per process)")
        # accelerate and transformers place a process on cuda:LOCAL_RANK; share the GPUs there are
        os.environ["LOCAL_RANK"] = str(local % gpus)
    from accelerate import PartialState

    # Without a GPU, accelerate forms a process group only when told the run is on the CPU (gloo).
    PartialState(cpu=not gpus, **({"backend": backend} if backend else {}))


def broadcast_from_main(obj: Any = None) -> Any:
    """Rank 0's `obj` on every rank (any picklable object); `obj` itself in one process."""
    if world_size() == 1:
        return obj
    import torch.distributed as dist

    init_distributed()
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any (a stop decision all ranks must share)."""
    if world_size() == 1:
        return bool(flag)
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sum_across_ranks(values: list[float]) -> list[float]:
    """Element-wise sums of `values` over every rank (each rank passes its own); `values` in one process."""
    if world_size() == 1:
        return list(values)
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.tolist()
