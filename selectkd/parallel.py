"""torch.distributed under `torchrun`: one process per device, NCCL on GPU, gloo on CPU.

Outside torchrun (no WORLD_SIZE > 1 in the environment) every helper is a no-op for a world
of one, so the same code path serves one process and many.
"""

from __future__ import annotations

import os
from typing import Any


def setup(device: str) -> tuple[int, int, str]:
    """(rank, world size, this rank's device); joins the process group on first use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast(value: Any, world: int) -> Any:
    """Rank 0's ``value`` on every rank (a small picklable object: flags, names, numbers)."""
    if world <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, world: int) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if world <= 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, value)
    return out
