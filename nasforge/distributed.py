"""Data-parallel one-shot search on ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc-per-node N -m nasforge search ...`` (or ``nasforge search --nproc N``, which
starts torchrun's elastic agent on this machine) runs N processes of the same command. Each
process (*rank*) joins the process group here (NCCL on GPUs, gloo on CPUs) and then:

- **weights**: the supernet is wrapped in ``DistributedDataParallel``; each rank runs its
  slice of every global batch (``strategy.batch_size`` is the global batch; rank r takes the
  r-th of N equal slices), DDP averages the weight gradients;
- **architecture parameters** stay identical on every rank: their gradients are averaged
  (all-reduce) right before the architecture optimiser's step, so every rank takes the same
  step. (The alternative, one rank's update broadcast, would waste the other ranks' valid
  batches.) Second-order DARTS unrolls on each rank's own slice, so it is data-parallel but
  not equal to one process with the whole batch; first order is (tested);
- **sampling** (GDAS's Gumbel samples, ProxylessNAS's binary gates, DenseNAS's paths) draws
  from the global RNG, which every rank seeds from the run seed per epoch and advances in
  lockstep: all ranks run the same sub-network in a step, so DDP's unused-parameter
  handling sees the same unused parameters everywhere;
- **BatchNorm**: per-rank batch statistics as the papers' multi-GPU code, or synchronised
  across ranks with ``--set engine.sync_bn=true`` (``torch.nn.SyncBatchNorm`` on GPUs; on
  CPUs, where torch's supports no input, :class:`GlobalBatchNorm` below, whose statistics and
  their gradients are all-reduced: a 2-rank step then equals a 1-rank step on the whole batch);
- **writes**: rank 0 alone writes the store, checkpoints and reports; every rank reads the
  checkpoint on resume, so a distributed run resumes in one process and vice versa.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nasforge.errors import ConfigError, NasforgeError

__all__ = ["Context", "DistributedError", "GlobalBatchNorm", "average_grads_before_step", "context",
           "init_from_env", "is_main", "launch", "sync_batchnorm", "wrap_ddp"]

#: seconds a rank waits for the others (rendezvous, a collective) before giving up
DEFAULT_TIMEOUT_S = 300


class DistributedError(NasforgeError):
    """A distributed run could not start or lost a rank."""

    exit_code = 1


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


_ctx = Context()


def context() -> Context:
    """This process's place in the run (rank 0 of 1 outside torchrun)."""
    return _ctx


def is_main() -> bool:
    return _ctx.rank == 0


def init_from_env(timeout_s: float | None = None) -> Context:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1); a no-op otherwise.

    A rendezvous that cannot be reached fails after ``timeout_s`` (``NASFORGE_DIST_TIMEOUT``,
    default 300 s) with one line.
    """
    global _ctx
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return _ctx
    if dist.is_initialized():
        return _ctx
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    timeout = float(timeout_s if timeout_s is not None else os.environ.get("NASFORGE_DIST_TIMEOUT",
                                                                             DEFAULT_TIMEOUT_S))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout), rank=rank, world_size=world)
    except Exception as exc:  # the store or the peers cannot be reached: one line, not a traceback
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise DistributedError(
            f"rank {rank} of {world} could not join the process group at {where} within {timeout:g} s "
            f"({type(exc).__name__}); check torchrun's --rdzv-endpoint/--master-addr and that every node "
            "can reach it (NASFORGE_DIST_TIMEOUT sets the wait)") from None
    _ctx = Context(rank=rank, world=world, local_rank=local_rank, backend=backend)
    return _ctx


def shutdown() -> None:
    global _ctx
    if dist.is_initialized():
        dist.destroy_process_group()
    _ctx = Context()


def barrier() -> None:
    if _ctx.active:
        dist.barrier()


def broadcast_path(path: Any) -> Any:
    """Rank 0's ``path`` on every rank."""
    box = [str(path)]
    dist.broadcast_object_list(box, src=0)
    return type(path)(box[0]) if not isinstance(path, str) else box[0]


def lost_rank_message(exc: BaseException, out_dir: Any) -> str:
    """The one line a rank prints when a collective fails because another rank died."""
    return (f"rank {_ctx.rank}: another rank of the distributed run failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120] if str(exc) else 'collective failed'}); the last checkpoint in "
            f"{out_dir} is kept: continue with `nasforge resume {out_dir}` (in one process or under torchrun)")


# --- architecture gradients ----------------------------------------------------------------


def average_grads_before_step(optimizer: torch.optim.Optimizer) -> None:
    """Average the gradients of ``optimizer``'s parameters over all ranks before each of its steps."""
    if not _ctx.active:
        return
    world = _ctx.world

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # the parameters with a gradient: the same on every rank (they run the same sampled sub-network), and
        # one without keeps none, so the optimiser skips it as it would in one process
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    optimizer.register_step_pre_hook(hook)


def wrap_ddp(model: nn.Module, device: torch.device, unused: bool = True) -> nn.Module:
    """``model`` under DistributedDataParallel (``unused``: a step may leave weights without a gradient,
    as a sampled sub-network does)."""
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


# --- BatchNorm across ranks ----------------------------------------------------------------


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics are those of the global batch (all ranks), with gradients.

    The per-channel sum, sum of squares and count are summed over the ranks with the
    differentiable all-reduce of ``torch.distributed.nn``, so the forward and the backward are
    those of one BatchNorm over the concatenated batch. Used on CPUs (gloo), where
    ``torch.nn.SyncBatchNorm`` supports no input.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training or not self.track_running_stats) or not _ctx.active:
            return super().forward(x)
        import warnings

        from torch.distributed.nn.functional import all_reduce  # differentiable: its backward all-reduces

        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        count = x.new_tensor([x.numel() / c])
        with warnings.catch_warnings():  # deprecated for a functional form that has no autograd support yet
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach())
                self.running_var.mul_(1 - factor).add_(factor * unbiased.detach())
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``model`` with statistics over all ranks (SyncBatchNorm on CUDA)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert(model)


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out


# --- launching -------------------------------------------------------------------------------


def check_nproc(nproc: int, device: str) -> None:
    """``--nproc`` must fit the machine: at most one process per GPU (CUDA) or per core (CPU)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc {nproc!r} is invalid; use a whole number >= 1")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        have = torch.cuda.device_count()
        if nproc > have:
            raise ConfigError(f"--nproc {nproc} is more than the {have} GPU(s) here; use --nproc {max(have, 1)} "
                              "or fewer (one process per GPU)")
    else:
        have = os.cpu_count() or 1
        if nproc > have:
            raise ConfigError(f"--nproc {nproc} is more than the {have} CPU core(s) here (gloo, one process per "
                              f"core); use --nproc {have} or fewer")


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``nasforge ARGV`` in ``nproc`` processes under torchrun's elastic agent on this machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "nasforge", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    code = subprocess.call(cmd, env=env)
    if code not in (0, 130):
        out = _out_dir(argv)
        where = (f"the last checkpoint in {out} is kept: continue with `nasforge resume {out} --nproc {nproc}` "
                 "(or in one process without --nproc)") if out else "see the ranks' messages above"
        raise DistributedError(f"the data-parallel run failed (a rank exited with an error, torchrun exit code "
                               f"{code}); {where}")
    return code


def _out_dir(argv: Sequence[str]) -> str | None:
    """The run directory in a search/resume command line (--out DIR, or resume's DIR)."""
    args = list(argv)
    for i, a in enumerate(args):
        if a == "--out" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--out="):
            return a.split("=", 1)[1]
    if args and args[0] == "resume" and len(args) > 1 and not args[1].startswith("-"):
        return args[1]
    return None


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out
