"""Find the operations of a training step that make the host wait for the device, on any device.

A CUDA step runs ahead of the GPU only while no operation needs a device value on the host:
``.item()`` / ``float()`` / ``bool()`` of a tensor, and every operation whose output shape
depends on the data (``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``,
``repeat_interleave`` without an output size). ``torch.cuda.set_sync_debug_mode`` reports these
on a GPU only; ``HostSyncCounter`` sees the same operations at torch's dispatcher, so it finds
them on the CPU too (tests, machines without a GPU). What it cannot see: explicit
device-to-host copies (``.cpu()``, ``.tolist()``), which on a CPU tensor are not copies.
"""

import os
import sys
import traceback
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter"]

_aten = torch.ops.aten
# Operations that read a device value on the host (scalar reads) or size their output by it.
_SYNC_PACKETS = {
    _aten._local_scalar_dense,  # .item(), float(t), bool(t), int(t)
    _aten.is_nonzero,
    _aten.equal,
    _aten.nonzero,
    _aten.masked_select,
    _aten._unique,
    _aten._unique2,
    _aten.unique_dim,
    _aten.unique_consecutive,
}
_INDEX_PACKETS = {_aten.index, _aten.index_put, _aten.index_put_, _aten._index_put_impl_}
_HERE = os.path.abspath(__file__)


def _is_mask(t):
    return isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)


def _needs_host(func, args, kwargs):
    packet = func.overloadpacket
    if packet in _SYNC_PACKETS:
        return True
    if packet in _INDEX_PACKETS:  # x[mask]: the mask's nonzero count sizes the result
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(_is_mask(t) for t in indices or ())
    if packet is _aten.repeat_interleave and func is _aten.repeat_interleave.Tensor:
        return kwargs.get("output_size") is None and (len(args) < 2 or args[1] is None)
    return False


def _in_optimizer():
    # torch's optimizers keep their step counts on the host unless capturable or fused: their
    # reads of those are not syncs, though on the CPU they look the same.
    optim = os.sep + os.path.join("torch", "optim") + os.sep
    return any(optim in frame.filename for frame in traceback.extract_stack(sys._getframe(2)))


class HostSyncCounter(TorchDispatchMode):
    """Context manager counting host-device synchronising operations (module docstring).

    Each one is attributed to the innermost frame of the code under ``root`` (default: the
    repository) that caused it, as ``path:line``, relative to ``root``.

    Attributes:
        places (collections.Counter): ``"path:line (op)"`` -> how many times.
    """

    def __init__(self, root=None):
        super().__init__()
        default = os.path.dirname(os.path.dirname(os.path.dirname(_HERE)))
        self.root = os.path.abspath(root or default)
        self.places = Counter()

    @property
    def count(self):
        return sum(self.places.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _needs_host(func, args, kwargs) and not _in_optimizer():
            self.places[f"{self._caller()} ({func.overloadpacket.__name__})"] += 1
        return func(*args, **kwargs)

    def _caller(self):
        venv = os.sep + ".venv" + os.sep
        for frame in reversed(traceback.extract_stack(sys._getframe(1))):
            path = os.path.abspath(frame.filename)
            if path.startswith(self.root) and path != _HERE and venv not in path:
                return f"{os.path.relpath(path, self.root)}:{frame.lineno}"
        return "outside the repository (autograd's backward or a library)"
