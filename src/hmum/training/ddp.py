"""DDP primitives: the worker's context, launching, the wrapped loss, shard batches.

What ``hmum.training.trainer`` needs to train on several ranks, and nothing that
builds estimators: the launcher (reading shards, fitting encoders, building and
saving models) is ``hmum.training.distributed``, which sits above the trainer.
See that module's docstring for what every rank does.
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hmum.data.split import _MASK64
from hmum.exceptions import DataError, DistributedError

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")




# --------------------------------------------------------------------------------------
# Process group
# --------------------------------------------------------------------------------------


@dataclass
class DistContext:
    """This worker's place in the process group.

    Attributes:
        rank / world_size: global rank and number of workers W.
        local_rank: rank on this machine (the GPU index with device cuda).
        device: where the model and the tensors live.
        backend: "gloo" (cpu) or "nccl" (cuda).
        object_group: gloo group for Python objects (None = the default group).
        owns_group: this context created the process group (and destroys it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    object_group: Any = None
    owns_group: bool = field(default=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.object_group)
        return out

    def gather_object(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0; None elsewhere."""
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=self.object_group)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.object_group)
        return box[0]

    def barrier(self) -> None:
        dist.barrier(group=self.object_group)


def backend_for(device: str | torch.device) -> str:
    """"gloo" for a CPU device, "nccl" for a CUDA one."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return "gloo"
    if dev.type == "cuda":
        return "nccl"
    raise ValueError(f"device must be 'cpu' or 'cuda', got {str(device)!r}")


def launched_by_torchrun() -> bool:
    """True inside a worker started by torchrun (or any launcher that sets RANK etc.)."""
    return all(k in os.environ for k in _ENV)


def init_distributed(device: str = "cpu", *, timeout_s: float = 1800.0) -> DistContext:
    """Join (or create) the default process group from the environment.

    Reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and LOCAL_RANK (default 0), as
    torchrun and ``launch_local`` set them. device "cuda" uses ``cuda:LOCAL_RANK``
    and NCCL; "cpu" uses gloo.
    """
    backend = backend_for(device)
    if not dist.is_initialized():
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise DistributedError(
                f"environment variable(s) {missing} not set: start workers with "
                "`hmum train --nproc N` or torchrun"
            )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cpu")
    if backend == "nccl":
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"device 'cuda' needs one GPU per worker on each machine; local rank "
                f"{local_rank} found {torch.cuda.device_count()} CUDA device(s)"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://",
                                timeout=timedelta(seconds=timeout_s))
        owns = True
    elif dist.get_backend() != backend:
        raise DistributedError(
            f"the process group already uses backend {dist.get_backend()!r}; device "
            f"{str(device)!r} needs {backend!r}"
        )
    # Objects travel on gloo: with NCCL they would be staged through GPU memory.
    group = None if backend == "gloo" else dist.new_group(backend="gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend,
                       group, owns)


def shutdown(ctx: DistContext) -> None:
    """Destroy the process group if ``init_distributed`` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(local_rank: int, fn, nproc: int, port: int, args: tuple) -> None:
    os.environ.update(
        RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    fn(*args)


def launch_local(fn, nproc: int, *args: Any) -> None:
    """Run ``fn(*args)`` in ``nproc`` fresh worker processes on this machine (spawn).

    Each worker gets RANK = LOCAL_RANK = its index and WORLD_SIZE = nproc, as under
    torchrun. ``fn`` must be importable (a module-level function). When a worker
    raises, the others are stopped and ``DistributedError`` names the worker and the
    error's last line.
    """
    from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException

    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    try:
        torch.multiprocessing.start_processes(
            _spawned, args=(fn, nproc, _free_port(), args), nprocs=nproc, join=True,
            start_method="spawn",
        )
    except ProcessRaisedException as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        # "hmum.exceptions.DataError: msg" -> "DataError: msg"
        last = re.sub(r"^(?:\w+\.)+(\w+:)", r"\1", lines[-1] if lines else "unknown error")
        if re.match(r"^\w+: worker \d+: ", last):  # already names the worker (agreed errors)
            raise DistributedError(last) from None
        raise DistributedError(f"worker {e.error_index} failed: {last}") from None
    except ProcessExitedException as e:
        raise DistributedError(
            f"worker {e.error_index} exited with code {e.exit_code} (killed, e.g. out of memory?)"
        ) from None


# --------------------------------------------------------------------------------------
# DDP pieces used by the Trainer
# --------------------------------------------------------------------------------------


class _LossModule(nn.Module):
    """Runs the whole ``loss_fn(model, batch)`` inside DDP's forward.

    Losses call model methods other than ``forward`` (``potential_outcomes``) and
    read buffers (``y_std``); wrapping the loss keeps them working while DDP still
    sees one forward per step, which it needs to synchronize the gradients.
    """

    def __init__(self, model: nn.Module, loss_fn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *batch: torch.Tensor):
        return self.loss_fn(self.model, batch)


def wrap_ddp(ctx: DistContext, model: nn.Module, loss_fn, probe: tuple[torch.Tensor, ...]):
    """DDP around ``loss_fn(model, .)``; call it as ``ddp(*batch) -> (loss, logs)``.

    One forward/backward on ``probe`` (a few training rows) finds whether some
    parameters get no gradient (then DDP must look for unused parameters every
    step); every rank uses the same answer. The probe changes no weight.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = loss_fn(model, probe)
    loss.backward()
    unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    find_unused = any(ctx.all_gather_object(unused))
    # Buffers (y_mean, y_std, ...) are constants, equal on every rank already;
    # syncing them in every forward would add a collective per step.
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
    return DistributedDataParallel(
        _LossModule(model, loss_fn),
        device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        find_unused_parameters=find_unused,
        **no_sync,
    )


def _epoch_seed(seed: int, rank: int, epoch: int) -> int:
    ss = np.random.SeedSequence([seed & _MASK64, rank, epoch])
    return int(ss.generate_state(1, np.uint32)[0])


class ShardBatches:
    """This rank's batches: the same number of steps on every rank, each row once per epoch.

    Args:
        tensors: this rank's aligned tensors (x (n, F), arm (n,), y (n, R)).
        batch_size: rows per step over all ranks together (B).
        seed: with the rank and the epoch, seeds this rank's permutation.
        ctx: the DistContext (the row counts of all ranks are gathered once).

    Iterating yields ``(batch, weight)``: the loss of the batch is to be multiplied
    by ``weight = W * rows_here / rows_all_ranks`` before ``backward`` (see the
    module docstring); weight 0 marks a one-row stand-in when this rank has no row
    in a step.
    """

    def __init__(
        self, tensors, *, batch_size: int, seed: int, ctx: DistContext
    ) -> None:
        self.tensors = list(tensors)
        self.n = int(self.tensors[0].shape[0])
        counts = np.asarray(ctx.all_gather_object(self.n), dtype=np.int64)
        empty = np.flatnonzero(counts == 0).tolist()
        if empty:
            raise DataError(
                f"worker(s) {empty} received no training rows (rows per worker: "
                f"{counts.tolist()}); use fewer workers or more, smaller row groups"
            )
        self.steps = max(1, math.ceil(int(counts.sum()) / batch_size))
        # bounds[r, s] = first row of step s in rank r's permutation: near-equal steps
        bounds = (np.arange(self.steps + 1)[None, :] * counts[:, None]) // self.steps
        sizes = np.diff(bounds, axis=1)  # (W, steps)
        self.bounds = bounds[ctx.rank].tolist()
        self.weights = (ctx.world_size * sizes[ctx.rank] / sizes.sum(0)).tolist()
        self.seed, self.rank, self.epoch = seed, ctx.rank, 0

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, self.rank, self.epoch))
        perm = torch.randperm(self.n, generator=g).to(self.tensors[0].device)
        self.epoch += 1
        for s in range(self.steps):
            lo, hi = self.bounds[s], self.bounds[s + 1]
            idx, w = (perm[lo:hi], self.weights[s]) if hi > lo else (perm[:1], 0.0)
            yield tuple(t.index_select(0, idx) for t in self.tensors), w


def sum_over_ranks(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Sum per-rank dicts of floats, in rank order (the same float on every rank)."""
    out: dict[str, float] = {}
    for part in ctx.all_gather_object(values):
        for k, v in part.items():
            out[k] = out.get(k, 0.0) + v
    return out
