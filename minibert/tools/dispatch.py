"""What a forward + backward asks of the device, counted on any device (a CPU too) with a TorchDispatchMode.

    with DispatchCounter() as count:
        loss = F.cross_entropy(clf(**batch), batch["labels"])
        loss.backward()
    count.kernels, count.syncs, count.sync_ops        # e.g. 366, 0, Counter()

On a GPU each operator that is not a view launches at least one kernel, and a small-batch training step
(SST-2's ~14 tokens a sentence) spends more time launching kernels than computing: fewer operators is
a faster step. A host sync is worse: the CPU waits until the GPU has drained every queued kernel before
it can launch the next one. These operators force one, because their result (a number, or a shape that
depends on the data) must reach the host: `.item()`/`bool()`/`int()` of a tensor, nonzero,
masked_select, boolean-mask indexing, unique, and a repeat_interleave whose output size is not given.
The counts are the same on a CPU and on a GPU (the same operators are dispatched), which is why tests
and `python -m minibert bench` can count a GPU step's syncs on a CPU.
"""
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# Operators whose output lives on the host or has a data-dependent shape: each waits for the device.
SYNC_OPS = {aten._local_scalar_dense, aten.is_nonzero, aten.nonzero, aten.masked_select, aten.unique_dim,
            aten._unique2, aten.unique_consecutive, aten.equal}


class DispatchCounter(TorchDispatchMode):
    """Counts dispatched operators: `kernels` (those that are not views: each launches work on the device),
    `syncs` (those that make the host wait for the device) and `sync_ops` (which ones, by name)."""

    def __init__(self):
        super().__init__()
        self.kernels = 0
        self.syncs = 0
        self.sync_ops = Counter()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if not func.is_view and packet is not aten._unsafe_view:
            self.kernels += 1
            self.ops[packet.__name__] += 1
        if packet in SYNC_OPS or _is_mask_index(packet, args) or _is_unsized_repeat(func, kwargs):
            self.syncs += 1
            self.sync_ops[packet.__name__] += 1
        return func(*args, **kwargs)


def _is_mask_index(packet, args) -> bool:
    """x[mask] with a boolean mask: the result's size is the mask's count of True, known only on the device."""
    if packet not in (aten.index, aten.index_put, aten.index_put_):
        return False
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


def _is_unsized_repeat(func, kwargs) -> bool:
    """repeat_interleave(counts) without output_size sums the counts on the host to size its output."""
    return func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None
