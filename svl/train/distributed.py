"""Process-group helpers: torchrun-driven init, gathers that carry gradients, metric averaging.

Processes are launched by `torchrun` (or any launcher that sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT); nothing here spawns processes. Every helper is a no-op in a plain
single-process run, so the same training code runs on a laptop, 2 CPU processes (gloo) or GPUs (nccl).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_no_grad",
    "all_gather_sizes",
    "all_gather_with_grad",
    "all_reduce_max",
    "all_reduce_mean",
    "barrier",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_dist",
    "is_main",
    "local_only",
]


_LOCAL_ONLY = False


def is_dist() -> bool:
    """True inside an initialised process group (and not inside `local_only()`)."""
    return not _LOCAL_ONLY and dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Make every helper here act single-process, e.g. while rank 0 validates alone.

    Without it a loss that all-gathers, called by one rank only, would wait forever for the others.
    """
    global _LOCAL_ONLY
    prev, _LOCAL_ONLY = _LOCAL_ONLY, True
    try:
        yield
    finally:
        _LOCAL_ONLY = prev


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that logs, validates and writes files."""
    return get_rank() == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(backend: str | None = None) -> tuple[int, int, int, torch.device]:
    """Join the process group described by torchrun's env vars; returns (rank, world, local_rank, device).

    gloo on CPU, nccl when CUDA is available (override with `backend`). Without torchrun's
    variables (or with WORLD_SIZE=1) nothing is initialised and the run is single-process.
    Calling it again in an initialised group just reports the existing group.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    cuda = torch.cuda.is_available()
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are visible"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank, device
    if world <= 1:
        return 0, 1, 0, device
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world})")
    backend = backend or ("nccl" if cuda else "gloo")
    kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world}
    if backend == "nccl":
        kwargs["device_id"] = device
    dist.init_process_group(**kwargs)
    return rank, world, local_rank, device


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (safe to call when none exists)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's value of `n` (e.g. local batch size), in rank order."""
    if not is_dist():
        return [int(n)]
    t = torch.tensor([int(n)], dtype=torch.long, device=device)
    out = [torch.zeros_like(t) for _ in range(get_world_size())]
    dist.all_gather(out, t)
    return [int(x.item()) for x in out]


def _gather_padded(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """all_gather along dim 0 when ranks may hold different row counts (pad, gather, trim)."""
    width = max(sizes)
    if x.shape[0] < width:
        pad = x.new_zeros((width - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], 0)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], 0)


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's rows. Backward: sum the gradient over ranks, keep own rows.

    Each rank's loss uses every rank's embeddings, so the gradient of the summed (over ranks) loss
    with respect to this rank's rows is the all-reduced sum of the per-rank gradients (open_clip /
    SimCLR scheme). DDP then averages parameter gradients, which makes the update equal to that
    of one process on the global batch when each rank's loss is its share of the global mean.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        sizes = all_gather_sizes(x.shape[0], x.device)
        rank = get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (rows on dim 0) from all ranks in rank order, differentiably; identity alone."""
    if not is_dist() or get_world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from all ranks (no gradient; any dtype, e.g. bool masks)."""
    if not is_dist() or get_world_size() == 1:
        return x
    sizes = all_gather_sizes(x.shape[0], x.device)
    if x.dtype == torch.bool:
        return _gather_padded(x.to(torch.uint8), sizes).bool()
    return _gather_padded(x.detach(), sizes)


def all_reduce_mean(values: Mapping[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean of each scalar over ranks (every rank must pass the same keys, in any order)."""
    keys = sorted(values)
    if not keys:
        return {}
    if not is_dist():
        return {k: float(values[k]) for k in keys}
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_reduce_max(value: int, device: torch.device | str = "cpu") -> int:
    """The largest of every rank's integer, e.g. so all ranks act on a signal only one received."""
    if not is_dist():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
