"""Training on several processes: ``torchrun`` and DistributedDataParallel, as :func:`~resnet_arcface.fit` uses them.

``torchrun`` starts one process per device and tells each, through environment variables, who it is
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``) and where to meet the others (``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --standalone --nproc_per_node 2 --no-python arcface-train --data DIR --device cpu ...

:func:`init` reads those variables and joins the process group (gloo between CPU processes, NCCL between
GPUs, one GPU per process: ``cuda:LOCAL_RANK``). Then :func:`~resnet_arcface.fit`:

* draws its batches through a :class:`~torch.utils.data.DistributedSampler` (:class:`ShardedSampler`): each
  epoch, every process shuffles the data with the same seed and takes every ``world_size``-th item of the
  shared order, so the processes together see each item once, as one process would;
* gives each process ``batch_size / world_size`` of every batch (:func:`local_batch_size`), so
  ``batch_size`` means the same, the *global* batch, on any number of processes: the learning rate, the
  number of steps per epoch and the checkpoint do not depend on how many processes ran, and ``--resume``
  can continue a run on another number of processes;
* runs the network and the margin head through :class:`~torch.nn.parallel.DistributedDataParallel`
  (:func:`wrap`), which averages every gradient over the processes during ``backward``, so all processes
  hold the same weights after every step;
* averages the epoch's loss and accuracy over the processes (:func:`mean`), verifies held-out identities,
  prints and calls ``on_epoch_end`` (which writes the files) on rank 0 only (:func:`is_main`).

BatchNorm normalises with the statistics of each process's share of the batch, unless the network's
BatchNorm layers are made :class:`~torch.nn.SyncBatchNorm` (``arcface-train --sync-bn``: GPUs only; PyTorch
implements it for CUDA, not for CPU processes), which computes them over the global batch at the cost of
one more all-reduce per BatchNorm layer.

When one process fails (an unreadable image in its share, a NaN loss), it exits with its message; the
others are blocked in the next gradient all-reduce, and torchrun ends them and exits non-zero.
"""
import os
from typing import Iterator, List, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, Sampler

from ..device import pick_device

M = TypeVar("M", bound=nn.Module)


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto") -> torch.device:
    """Join torchrun's process group if this process is one of several; returns the device to train on.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (each process takes ``cuda:LOCAL_RANK``), as
            :func:`~resnet_arcface.pick_device` reads it.

    Raises:
        ValueError: CUDA was asked for but this process's ``LOCAL_RANK`` has no GPU.
    """
    chosen = pick_device(device) if isinstance(device, str) else torch.device(device)
    if not launched() or dist.is_initialized():
        return chosen
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"--device cuda: process LOCAL_RANK={local_rank} has no GPU (this machine has "
                             f"{torch.cuda.device_count()}); start at most that many processes per node.")
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
        dist.init_process_group("nccl", device_id=chosen)
    else:
        dist.init_process_group("gloo")
    return chosen


def shutdown() -> None:
    """Wait for every process, then leave the process group (nothing to do in a single process)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    """This process's number, 0 .. world_size - 1 (0 in a single process)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """How many processes train together (1 in a single process)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process prints and writes files (rank 0)."""
    return rank() == 0


def local_batch_size(batch_size: int) -> int:
    """Each process's share of a global batch of ``batch_size``.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the number of processes.
    """
    n = world_size()
    if batch_size % n:
        raise ValueError(f"batch_size {batch_size} is the global batch, split evenly over the {n} processes; give a "
                         f"multiple of {n}, e.g. {max(n, batch_size - batch_size % n)}.")
    return batch_size // n


class ShardedSampler(DistributedSampler):
    """This process's share of the order another sampler draws: items ``rank``, ``rank + world_size``, ... of it.

    Every process builds the same ``base`` sampler (same seed), so the processes draw disjoint shares of one
    shuffled order, and global batch ``k`` holds the same items on any number of processes as in one process.
    The items that do not divide evenly among the processes are dropped, as the last incomplete batch is.
    It is a :class:`~torch.utils.data.DistributedSampler`, whose ``set_epoch`` also sets ``base``'s.
    """

    def __init__(self, base: Sampler, num_replicas: Optional[int] = None, rank: Optional[int] = None) -> None:
        # num_replicas and rank default to the process group's (they are given only to test without one).
        super().__init__(range(len(base)),  # type: ignore[arg-type]
                         num_replicas=world_size() if num_replicas is None else num_replicas,
                         rank=(dist.get_rank() if dist.is_initialized() else 0) if rank is None else rank,
                         shuffle=False, drop_last=True)
        self.base = base

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.base.set_epoch(epoch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)[: self.total_size]
        return iter(order[self.rank:self.total_size:self.num_replicas])


def wrap(module: M, device: torch.device) -> nn.Module:
    """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (itself in a single process).

    Call it after the module is on ``device`` and its frozen parameters have ``requires_grad`` off (DDP
    synchronises the gradients of the parameters that require them when it is built). DDP also copies rank
    0's parameters and buffers to every process once, here, so the processes start equal. Keep the unwrapped
    module for everything but the training forward pass: its ``state_dict`` (what checkpoints hold, loadable
    on any number of processes), its attributes (``input_size``), evaluation.
    """
    if world_size() == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def sync_batchnorm(model: M, device: torch.device) -> M:
    """The BatchNorm layers of ``model`` as :class:`~torch.nn.SyncBatchNorm` (statistics over the global batch).

    The parameter and buffer names do not change, so checkpoints load into a plain network.

    Raises:
        ValueError: ``device`` is not CUDA (PyTorch's SyncBatchNorm is implemented for GPUs only).
    """
    if device.type != "cuda":
        raise ValueError(f"--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only, not {device.type}; drop --sync-bn "
                         f"(each process then normalises its share of the batch).")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def mean(values: Sequence[float]) -> List[float]:
    """Each of ``values`` averaged over the processes (every process passes its own; all get the means)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return (t / world_size()).tolist()

