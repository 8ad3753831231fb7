"""Process-group helpers for distributed data-parallel training under ``torchrun``.

``torchrun --nproc_per_node N -m fcis train ...`` starts N processes and gives each the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``PORT``).
:func:`init_distributed` reads them and joins the default process group: NCCL with one CUDA
device per process (``cuda:LOCAL_RANK``), gloo on the CPU. Without those variables (a plain
``fcis train``) it does nothing and every helper here behaves as for a single process, so the
single-process code path stays exactly as before.

Several machines: one ``torchrun`` per machine, ``torchrun --nnodes M --nproc_per_node N
--rdzv_backend c10d --rdzv_endpoint HEAD:PORT --rdzv_id ID -m fcis train ...`` (the same command
on every machine; ``HEAD`` one of them, whose torchrun hosts the rendezvous; the rendezvous
numbers the machines, so which one holds rank 0 is its choice). Nothing here changes: ``RANK`` is
global, ``LOCAL_RANK`` picks the device on each machine. ``docs/slurm_train.sbatch`` does it under
SLURM; ``tests/test_multinode.py`` runs two such launches on one machine.

There is no state here beyond ``torch.distributed``'s own: every helper asks it.

``torch.nn.SyncBatchNorm`` refuses CPU tensors, so :func:`convert_sync_batchnorm` uses it on
accelerators and :class:`CPUSyncBatchNorm` (the same computation through differentiable gloo
all-reduces) on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "init_distributed", "cleanup", "is_distributed", "rank", "world_size",
           "is_main_process", "barrier", "all_reduce_mean", "all_reduce_min", "gather", "broadcast_object",
           "convert_sync_batchnorm", "CPUSyncBatchNorm", "has_trainable_batchnorm"]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """What :func:`init_distributed` decided: this process's ``device``, ``rank``,
    ``world_size``, ``local_rank``, and whether it ``created`` the process group (and should
    therefore destroy it, see :func:`cleanup`)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) are all set."""
    return all(k in os.environ for k in _ENV)


def _process_device(requested: str | torch.device | None, local_rank: int) -> torch.device:
    """The device of one process of a distributed run: ``cuda:LOCAL_RANK`` for ``auto``/``cuda``
    when CUDA is there, else the CPU. An explicit ``cuda:N`` is refused: each process's device
    comes from torchrun."""
    req = "auto" if requested is None else str(requested)
    if req == "cpu":
        return torch.device("cpu")
    if req not in ("auto", "cuda"):
        raise ValueError(f"device {req!r}: under torchrun each process uses cuda:LOCAL_RANK; pass "
                         "--device cuda (or auto), or cpu")
    if not torch.cuda.is_available():
        if req == "cuda":
            raise ValueError("device 'cuda' requested but CUDA is not available (use --device cpu)")
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                         "start at most one process per GPU (--nproc_per_node)")
    return torch.device("cuda", local_rank)


def init_distributed(device: str | torch.device | None = "auto", *,
                     timeout: timedelta = timedelta(minutes=30)) -> DistContext | None:
    """Join the process group torchrun describes; ``None`` when not launched by torchrun.

    Backend: NCCL when this process's device is CUDA (``cuda:LOCAL_RANK``, made the current
    device), gloo on the CPU. A group that already exists (the caller initialised it) is used
    as it is and left for the caller to destroy. A torchrun run of one process
    (``WORLD_SIZE=1``) is a single process: no group, ``None``.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return _existing_context(device)
        return None
    if not dist.is_available():
        raise RuntimeError("torchrun started several processes but torch.distributed is not available")
    if dist.is_initialized():
        return _existing_context(device)
    local_rank = int(os.environ["LOCAL_RANK"])
    dev = _process_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "timeout": timeout}
    if dev.type == "cuda":
        kwargs["device_id"] = dev  # binds NCCL to this device (no guessing, no hang on barrier)
    dist.init_process_group(**kwargs)
    return DistContext(dev, dist.get_rank(), dist.get_world_size(), local_rank, created=True)


def _existing_context(device: str | torch.device | None) -> DistContext:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _process_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistContext(dev, dist.get_rank(), dist.get_world_size(), local_rank, created=False)


def cleanup(ctx: DistContext | None) -> None:
    """Destroy the process group if ``ctx`` created it (a no-op otherwise)."""
    if ctx is not None and ctx.created and dist.is_initialized():
        dist.destroy_process_group()


# --- queries -------------------------------------------------------------------------------------

def is_distributed() -> bool:
    """Whether a process group of more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that logs and writes files."""
    return rank() == 0


# --- collectives (no-ops for a single process) ----------------------------------------------------

def barrier() -> None:
    """Wait until every process gets here."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the processes (a new tensor; the input is left alone). A NaN or
    inf on any process makes the mean non-finite on every process."""
    out = values.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def all_reduce_min(value: bool | int, device: torch.device | str = "cpu") -> int:
    """Minimum of an integer (or flag) over the processes: ``all_reduce_min(ok)`` is true only
    when it is true everywhere."""
    if not is_distributed():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process
    (``all_gather_object``); ``[obj]`` for a single process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process (``obj`` is ignored elsewhere)."""
    if not is_distributed():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# --- synchronised BatchNorm ------------------------------------------------------------------------

def has_trainable_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has BatchNorm layers that use batch statistics in training (plain
    ``nn.BatchNorm*d``; torchvision's ``FrozenBatchNorm2d`` is not one)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the whole global batch, on any device
    and backend (gloo included), for ``torch.nn.SyncBatchNorm``'s CPU gap.

    In training, the per-channel sum and count, then the sum of squared deviations from the
    global mean, are summed over the processes with a differentiable all-reduce (its backward
    sums the gradients of the statistics over the processes, so every process gets the
    gradient of the global batch's loss, as ``SyncBatchNorm`` does). Running statistics are
    updated with the unbiased global variance, as ``nn.BatchNorm`` does for one big batch. In
    eval mode, or in a single process, it is ``F.batch_norm``. Same parameters and buffers as
    ``nn.BatchNorm2d``, so state dicts are interchangeable.
    """

    def __init__(self, *args: Any, process_group: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and is_distributed()):
            return super().forward(input)
        group = self.process_group or dist.group.WORLD
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        local_count = x.new_tensor([input.numel() / max(input.shape[1], 1)])
        packed = _AllReduceSum.apply(torch.cat([x.sum(dims), local_count]), group)
        count = packed[-1]
        mean = packed[:-1] / count
        var = _AllReduceSum.apply((x - mean.view(shape)).pow(2).sum(dims), group) / count
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), float(count.detach()))
        out = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        assert self.num_batches_tracked is not None and self.running_mean is not None and self.running_var is not None
        self.num_batches_tracked.add_(1)
        momentum = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
        unbiased = var * (count / max(count - 1.0, 1.0))
        self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes of ``group``, differentiable: the gradient of every process's
    input is the sum of the gradients of every process's output."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def _convert_cpu(module: nn.Module, process_group: Any) -> nn.Module:
    """``nn.SyncBatchNorm.convert_sync_batchnorm``, making :class:`CPUSyncBatchNorm` layers."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats, process_group=process_group)
        with torch.no_grad():
            if module.affine:
                out.weight = module.weight
                out.bias = module.bias
            if module.track_running_stats:
                out.running_mean = module.running_mean
                out.running_var = module.running_var
                out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child, process_group))
    return out


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make the BatchNorm layers of ``model`` compute global-batch statistics: PyTorch's
    ``SyncBatchNorm`` on CUDA, :class:`CPUSyncBatchNorm` on the CPU (in a process group of its
    own, so that its all-reduces never interleave with DistributedDataParallel's gradient
    all-reduces on the default group). Returns the (possibly new) root module."""
    if device.type == "cpu":
        return _convert_cpu(model, dist.new_group(backend="gloo"))
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
