"""Several processes training one model with torch.distributed (gloo on CPUs, NCCL on GPUs).

Started by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR / MASTER_PORT):

    torchrun --standalone --nproc_per_node 4 -m mixvae train CONFIG --out RUN          # one machine
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29400 --rdzv-id RUNID -m mixvae train CONFIG --out RUN   # on each machine

How a step stays the single-process step on the global batch:
- every process sees its contiguous share of the global batch (``Dataset.train_batches``);
- all processes start from the same seed and draw every random number of a training step for the
  *global* batch, keeping their share (``distributions.example_noise``), so the noise of example i
  does not depend on the number of processes and the random streams stay in step;
- each player's optimizer averages the gradients over processes before its update
  (:class:`GradientAveraging`), which works for objectives with several optimizers and parameters
  frozen per step, where DistributedDataParallel's hooks do not fit;
- terms that are non-linear in a batch mean (responsibility entropy, batch-moment KLs) use
  :func:`global_mean`; BatchNorm layers use global batch statistics (:class:`SyncBatchNorm`).
Not exact across processes (each process uses its own share): GAMIX's Monte-Carlo batch-mixture KL
for non-standard priors, and dropout masks (the PatchGAN's), which come from each process's stream.
Only rank 0 writes the run folder; validation runs on every rank (the same numbers), so early
stopping needs no messages. Multi-node resume needs the run folder on a shared file system.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place among ``world`` processes: ``rank`` overall, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes the run folder."""
        return self.rank == 0


def init_from_env(device: str = "cpu") -> ProcessInfo:
    """Join the process group described by torchrun's environment (a no-op without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ProcessInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return ProcessInfo(rank, world, local)


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: str = "cpu"):
    """``with process_group(device) as proc:`` joins torchrun's process group (see
    :func:`init_from_env`) and leaves it at the end. After a body that ended normally, every process
    first waits for the others: a process that tore down its connections while another still used
    them could abort the other's teardown (gloo, seen once in CI as "terminate called without an
    active exception"). After an error there is no waiting (the others may never get there)."""
    proc = init_from_env(device)
    try:
        yield proc
        barrier()
    finally:
        shutdown()


def active() -> bool:
    """A process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _SumOverProcesses(torch.autograd.Function):
    """y = sum over processes of x; the gradient of every x is the sum of the gradients of y."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)
        return g


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over processes of each process's ``x`` (a per-process batch mean of equal-sized shares),
    differentiable; ``x`` itself when running alone. With :class:`GradientAveraging`, a loss built on
    it gets exactly the gradient of the single-process loss on the global batch."""
    if not active():
        return x
    return _SumOverProcesses.apply(x) / dist.get_world_size()


def _comm_device() -> torch.device:
    """Where tensors sent through the process group must live (GPU memory for NCCL)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_process(flag: bool) -> bool:
    """True if ``flag`` is true in any process (e.g. a NaN seen by one of them)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    """Wait until every process gets here (a no-op when running alone)."""
    if active():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` of process ``src`` on every process (a picklable value, e.g. an error message)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's (n_r, ...) tensor along dim 0, in rank order, on every process."""
    if not active():
        return t
    dev = _comm_device()
    sizes = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], device=dev))
    n = int(max(s.item() for s in sizes))
    padded = torch.zeros((n, *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[: t.shape[0]] = t.to(dev)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)]).cpu()


class GradientAveraging:
    """Wraps a player's optimizer: ``step`` first replaces each gradient by its mean over processes
    (one all-reduce of a flat buffer), then updates. Parameters without a gradient in this step (a
    frozen player) are skipped identically on every process."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    def __getattr__(self, name):            # param_groups, state, zero_grad, state_dict, ...
        return getattr(self.optimizer, name)

    @torch.no_grad()
    def step(self, closure=None):
        """Average the gradients over processes, then the wrapped optimizer's step (its return value)."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        have = torch.tensor([0.0 if p.grad is None else 1.0 for p in params],
                            device=_comm_device() if active() else "cpu")
        if active():
            dist.all_reduce(have, op=dist.ReduceOp.MIN)
        grads = [p.grad for p, h in zip(params, have.tolist()) if h > 0]
        if grads and active():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            offset = 0
            for g in grads:
                g.copy_(flat[offset: offset + g.numel()].view_as(g))
                offset += g.numel()
        for p, h in zip(params, have.tolist()):
            if h == 0:
                p.grad = None
        return self.optimizer.step(closure)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all processes), on any
    device and backend (torch's own SyncBatchNorm needs GPUs). Alone it is plain BatchNorm."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, ...) normalised per channel C: with the global batch's statistics when training
        among several processes, else as BatchNorm."""
        if not (self.training and active()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        n_local = x.numel() // x.shape[1]
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), x.new_tensor([float(n_local)])])
        total = _SumOverProcesses.apply(stats)
        c = x.shape[1]
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by a :class:`SyncBatchNorm` with the same state."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
            new = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            sync_batchnorm(child)
    return module

