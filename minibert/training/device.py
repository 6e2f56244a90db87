"""Where a run computes: the device, the process group of a torchrun launch, and the precision mode.

    from minibert.training.device import setup_device, resolve_precision, autocast
    device, rank, world = setup_device("auto")          # joins the process group under torchrun
    precision = resolve_precision("auto", device)       # bf16 or fp16 on a GPU, fp32 on a CPU
    with autocast(device, precision): ...

The trainer, eval.py and the config's checks share these; nothing here knows about models or data.
"""
import os
from contextlib import nullcontext

import torch
import torch.distributed as dist

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def world_size() -> int:
    """Number of processes torchrun started (1 without torchrun): the one place WORLD_SIZE is read."""
    return int(os.environ.get("WORLD_SIZE", 1))


def setup_device(name: str = "auto") -> tuple[torch.device, int, int]:
    """(device, rank, world size); joins the process group when started by torchrun."""
    rank, local, world = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), world_size()
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asks for a GPU, but torch sees no CUDA device here")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")  # fp32 matmuls (the fp32 precision mode, the head) on TF32 tensor cores
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, rank, world


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on GPUs that have it, else fp16; fp32 on a CPU. Refuses what the device cannot do."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"  # autocast on a CPU is slower than fp32 on most CPUs; ask for bf16 explicitly
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("--precision fp16 needs a GPU (a CPU has no fp16 autocast with loss scaling); "
                         "use --precision bf16 or fp32 on a CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32")
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision mode (none for fp32)."""
    return nullcontext() if precision == "fp32" else torch.autocast(device.type, dtype=DTYPES[precision])


HOST_KEYS = ("lengths",)  # what the model reads on the host (padding.py): moving it to a GPU would make it wait


def to_device(batch: dict, device) -> dict:
    """The batch's tensors on `device`, but for HOST_KEYS, which stay where the batcher made them."""
    return {k: v if k in HOST_KEYS else v.to(device, non_blocking=True) for k, v in batch.items()}
