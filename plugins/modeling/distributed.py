"""The whole global batch for batch-level losses under torch DDP.

A batch-level loss (SDM, A-SDM, InfoNCE, IBM, CRCL's prototypes, identity-positive sets) over
one process's mini-batch sees a different set of negatives and positives than the same loss
over the global batch: with N processes, training would optimise another objective than on one
device. :func:`gather_batch` gives every process the global batch instead, and the gradients
still come out exactly right:

* every process computes the same global loss L from the gathered tensors;
* the gather is differentiable, and its backward sums the gradients that all N copies of L send
  to a process's own slot, so each process's local features receive N x dL/d(its features);
* DDP averages parameter gradients over the N processes: (1/N) x sum over processes of
  N x (that process's share of dL/dtheta) = dL/dtheta, the one-process gradient on the
  concatenated batch. Parameters applied to the gathered tensors (a classifier, a fusion
  layer) get the full dL/dtheta on every process, whose average is itself.

Losses left per process (token-level reconstruction heads) average over processes as DDP's
mean, which equals the global mean when every mini-batch has as many terms.

Batch norms before the gather (in a CNN backbone) normalise with their process's mini-batch
statistics, as in any DDP run; a BNNeck applied to gathered features sees the global batch.
``SyncBatchNorm`` would make the former global too, but it only runs on GPUs.

The gather is written here rather than taken from ``torch.distributed.nn.functional.all_gather``:
that one is deprecated in torch 2 (a warning on every call), and this one needs only
``all_gather`` and ``all_reduce``, which gloo and NCCL both provide.
"""

import torch
import torch.distributed as dist
from fastreid.utils import comm

__all__ = ["gather_batch"]


def gather_batch(*tensors):
    """Every process's tensors concatenated along dim 0 in rank order (one process: unchanged).

    Args:
        *tensors: (B, ...) tensors of this process's mini-batch (the same B and trailing shape
            on every process), or ``None`` (passed through). Floating tensors that require
            grad are gathered with autograd (see the module docstring); others without.

    Returns:
        The gathered tensor (N * B, ...) for one argument, else a tuple in argument order.
    """
    world = comm.get_world_size()
    if world == 1:
        out = tensors
    else:
        out = tuple(None if t is None else _gather(t, world) for t in tensors)
    return out[0] if len(out) == 1 else out


def _gather(t, world):
    t = t.contiguous()
    if t.requires_grad:
        return _DifferentiableAllGather.apply(t)
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t)
    return torch.cat(parts)


class _DifferentiableAllGather(torch.autograd.Function):
    """All processes' (B, ...) tensors as one (N * B, ...); backward: this process's slot of the
    sum over processes of the incoming gradients."""

    @staticmethod
    def forward(ctx, t):
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]
