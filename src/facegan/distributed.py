"""torch.distributed for facegan, in one place: the process group torchrun asks for, and what ranks agree on.

Under torchrun (WORLD_SIZE > 1 in the environment) `start` joins the process group: NCCL on CUDA,
gloo on the CPU, with a timeout so that a rank stuck in a collective with a dead peer ends in
bounded time and torchrun's own handling ends the job. A plain `facegan train` starts nothing, and
every helper here is then the single-process identity, so the loop reads the same either way.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import re
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from facegan.errors import FaceganError

# Long enough for rank 0's epoch-end work (grid, plots, checkpoint) while the others wait; short
# enough that a rank whose peer died does not hang for NCCL's default of 10 minutes plus.
TIMEOUT_S = float(os.environ.get("FACEGAN_DIST_TIMEOUT", "300"))


def env_world_size() -> int:
    """The world size torchrun set (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank: the process group's, else torchrun's RANK, else 0."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes in the job: the process group's, else 1."""
    return dist.get_world_size() if active() else 1


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def start(device: torch.device) -> bool:
    """Join torchrun's process group (NCCL on CUDA, gloo otherwise); False, starting nothing, without torchrun."""
    if env_world_size() <= 1 or active():
        return False
    if not dist.is_available():
        raise FaceganError("this PyTorch was built without torch.distributed, so it cannot train under torchrun; "
                           "run `facegan train` without torchrun.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=TIMEOUT_S)
    with lost_contact_as_error("starting up", "nothing was trained by this attempt"):
        # torchrun's store (env://, the agent's own by default) outlives a restart of the workers, and with it
        # the addresses the dead attempt's ranks published: restarted ranks read those and connect to ports
        # nobody listens on any more, stalling at start-up (pytorch#135712). Each attempt's keys therefore live
        # under its own prefix. TORCHELASTIC_RESTART_COUNT is the same on every process a torchrun agent starts;
        # across nodes it agrees when every node's agent counted the failure.
        store, rank_, ranks = next(dist.rendezvous("env://", timeout=timeout))
        store.set_timeout(timeout)
        store = dist.PrefixStore(f"facegan/attempt-{restart_count()}", store)
        dist.init_process_group(backend, store=store, rank=rank_, world_size=ranks, timeout=timeout,
                                **({"device_id": device} if device.type == "cuda" else {}))
    return True


def restart_count() -> int:
    """How many times torchrun has restarted this job's workers (`--max-restarts`); 0 on its first attempt."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def job_id() -> str | None:
    """torchrun's rendezvous id, the same for every attempt of one job (`--rdzv-id`; a fresh one for each
    `--standalone` job); None without torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID")


class LostContact(FaceganError):
    """This rank can no longer reach another (one died, or the network failed): the job ends here."""


@contextlib.contextmanager
def lost_contact_as_error(doing: str, resume_hint: str | Callable[[], str]) -> Iterator[None]:
    """A collective that fails because a peer is gone (gloo's connection reset, NCCL's error, a timed-out
    barrier) as one sentence (LostContact, exit status 1, so torchrun sees the failure) instead of the
    backend's traceback; `resume_hint` says what the last checkpoint is and how to go on."""
    try:
        yield
    except RuntimeError as error:
        if not _is_lost_contact(error):
            raise  # a bug, never hidden behind a sentence about the network
        reason = _first_line(error)
        hint = resume_hint() if callable(resume_hint) else resume_hint
        raise LostContact(f"rank {rank()} lost contact with the other processes while {doing} ({reason}); "
                          f"{hint}.") from None


def _is_lost_contact(error: RuntimeError) -> bool:
    """Whether `error` is torch.distributed's own (a dead or unreachable peer), not a bug of ours."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(mark in text for mark in ("gloo", "Gloo", "NCCL", "monitoredBarrier"))


def _first_line(error: Exception) -> str:
    """The backend's reason, without its source location or its advice: 'Connection reset by peer'."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)  # gloo's [file.cc:123] prefix
    line = line.split(". This is typically")[0]  # gloo's advice to check the other worker's log
    return line[:160].rstrip(". ")


def stop() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[bool]:
    """The process group for the block, when under torchrun; left however the block ends."""
    started = start(device)
    try:
        yield started
        # Ended normally: every rank finishes its last collective before any tears the group down. Without this
        # a gloo rank aborted at exit ("terminate called without an active exception", SIGABRT) in about 1 of
        # 8 two-process launches of benchmarks/scaling.py here, after its work was done; 0 of 30 with it.
        if started:
            barrier()
    finally:
        if started:
            stop()


def per_rank_batch(batch_size: int, ranks: int) -> int:
    """Each rank's share of the global batch; refuses a batch the ranks cannot share evenly."""
    if batch_size % ranks:
        raise FaceganError(f"--batch-size {batch_size} is the global batch and must divide evenly among the "
                           f"{ranks} processes; use a multiple of {ranks}, such as {max(ranks, batch_size // ranks * ranks)}.")
    return batch_size // ranks


def any_rank(*flags: bool | torch.Tensor, device: torch.device) -> list[bool]:
    """Each flag, True when it is True on any rank (one all-reduce for all of them), so every rank acts alike."""
    values = torch.stack([torch.as_tensor(flag, device=device).reshape(()).to(torch.float32) for flag in flags])
    if active():
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(value) for value in values.cpu()]


def gather(value: object) -> list[object]:
    """Every rank's `value` (picklable), in rank order, on every rank; [value] in a single process."""
    if not active():
        return [value]
    values: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast(value: object) -> object:
    """Rank 0's `value` on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(timeout_s: float = TIMEOUT_S) -> None:
    """Wait for every rank; a rank that does not arrive within `timeout_s` ends the job with an error, never a silent stall."""
    if not active():
        return
    if dist.get_backend() == "gloo":
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s))  # names the missing rank
    else:
        dist.barrier()  # NCCL's barrier ends at the process group's timeout


def average_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm's running statistics) over the ranks, so every copy agrees."""
    if not active():
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.AVG if dist.get_backend() == "nccl" else dist.ReduceOp.SUM)
            if dist.get_backend() != "nccl":  # gloo has no AVG
                buffer.div_(dist.get_world_size())


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scalar values averaged over the ranks (one all-reduce), so a logged loss is the global batch's."""
    if not active() or not values:
        return values
    stacked = torch.stack([value.detach().float().reshape(()) for value in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / dist.get_world_size()))


def check_consistent(*modules: nn.Module) -> None:
    """Raise if any rank's parameters differ from rank 0's (a bug, never a user's mistake): a cheap spot check."""
    if not active():
        return
    sums = torch.stack([p.detach().double().sum() for module in modules for p in module.parameters()])
    reference = sums.clone()
    dist.broadcast(reference, src=0)
    if not torch.equal(sums, reference):
        raise RuntimeError(f"rank {dist.get_rank()}'s parameters differ from rank 0's; the ranks have drifted apart")


# ----------------------------------------------------------------------------- models


class _SumOverRanks(torch.autograd.Function):
    """A differentiable all-reduce: the sum over ranks forward, and (its own adjoint) the sum of the gradients backward."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over the whole global batch, with gloo on the CPU, where torch's SyncBatchNorm refuses to run.

    The per-channel sums go through a differentiable all-reduce, so the backward pass is the
    exact gradient of BatchNorm over all ranks' images (and, built of plain operations, it has
    the second derivatives R1 and the gradient penalty need).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        channels = x.shape[1]
        count = torch.full((1,), x.numel() // channels, dtype=x.dtype, device=x.device)
        sums = _SumOverRanks.apply(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        total = sums[-1]
        mean = sums[:channels] / total
        var = sums[channels : 2 * channels] / total - mean * mean
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * total / (total - 1), self.momentum)
        shape = (1, channels, 1, 1)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every BatchNorm normalising over all ranks' images (torch's SyncBatchNorm on GPUs)."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                           child.track_running_stats, device=device)
            replacement.load_state_dict(child.state_dict())
            if child.affine:  # the same Parameter objects, so optimizers built on the module still hold them
                replacement.weight, replacement.bias = child.weight, child.bias
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            sync_batchnorm(child, device)
    return module


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `module`, without buffer syncing at each forward (D runs twice before one
    backward: pytorch#22095, #65907); the module itself in a single process."""
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    # PyTorch 2.13 renamed broadcast_buffers=False to forward_sync_buffers=False (which also syncs them once
    # at the start, where every rank's are equal anyway); older versions know only the first.
    no_buffer_sync = ({"forward_sync_buffers": False}
                      if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                      else {"broadcast_buffers": False})
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None, **no_buffer_sync)


def parallel(generator: nn.Module, discriminator: nn.Module, device: torch.device, *,
             sync_bn: bool) -> tuple[nn.Module, nn.Module] | None:
    """G and D each in DistributedDataParallel (apart, so each update all-reduces only its own model's gradients),
    with `sync_bn` their BatchNorm over the global batch; None in a single process."""
    if not active():
        return None
    if sync_bn:
        sync_batchnorm(generator, device)
        sync_batchnorm(discriminator, device)
    return wrap(generator, device), wrap(discriminator, device)


def no_sync(module: nn.Module) -> contextlib.AbstractContextManager:
    """No gradient all-reduce for `module` inside the block (D while G updates: its gradients are thrown away)."""
    inner = getattr(module, "_orig_mod", module)  # through torch.compile's wrapper
    return inner.no_sync() if hasattr(inner, "no_sync") else contextlib.nullcontext()
