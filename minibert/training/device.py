"""Where a run computes: the device, the process group of a torchrun launch, and the precision mode.

    from minibert.training.device import setup_device, resolve_precision, autocast
    device, rank, world = setup_device("auto")          # joins the process group under torchrun
    precision = resolve_precision("auto", device)       # bf16 on GPUs that have it natively, else fp16; fp32 on a CPU
    allow_tf32(device, precision)                       # TF32 matmuls only in a mixed-precision run
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


def is_main() -> bool:
    """Is this process torchrun's rank 0 (or the only one)? It writes the run's files; the others follow it."""
    return int(os.environ.get("RANK", 0)) == 0


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
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, rank, world


NATIVE_BF16 = (8, 0)  # compute capability from which a GPU computes in bf16 (Ampere on); older ones emulate it


def native_bf16(device: torch.device) -> bool:
    """Does this GPU compute in bf16 natively? torch.cuda.is_bf16_supported() also counts emulation (V100,
    T4), which runs bf16 matmuls far slower than fp16."""
    return torch.cuda.get_device_capability(device) >= NATIVE_BF16


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on GPUs that have it natively (compute capability 8.0 on), else fp16 with loss scaling; fp32
    on a CPU. Refuses what the device cannot do."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if native_bf16(device) else "fp16"
        return "fp32"  # autocast on a CPU is slower than fp32 on most CPUs; ask for bf16 explicitly
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("--precision fp16 needs a GPU (a CPU has no fp16 autocast with loss scaling); "
                         "use --precision bf16 or fp32 on a CPU")
    if precision == "bf16" and device.type == "cuda" and not native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) "
                         "only emulates bf16, far slower than fp16; use --precision fp16 or auto")
    return precision


def allow_tf32(device: torch.device, precision: str) -> None:
    """TF32 tensor cores for the fp32 matmuls of a mixed-precision run (the head, the optimiser's math); never
    in an fp32 run, whose numbers must match a CPU's to 1e-5 (TF32 keeps 10 bits of mantissa, not 23)."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("highest" if precision == "fp32" else "high")


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision mode (none for fp32)."""
    return nullcontext() if precision == "fp32" else torch.autocast(device.type, dtype=DTYPES[precision])


COMPILE_BUCKET = 32  # with torch.compile, batches are padded to a multiple of this: few shapes, few compiled graphs


def length_multiple(device: torch.device, compiled: bool = False) -> int:
    """What a batch's length is rounded up to (encoding.batches' multiple_of). Under compile COMPILE_BUCKET; on a GPU 8,
    which keeps tensor cores and attention kernels on aligned shapes; on a CPU 1: padding there only costs, and it
    would change the attention-dropout draws (their number is B x nh x T x T) of every run made before."""
    return COMPILE_BUCKET if compiled else 8 if device.type == "cuda" else 1


HOST_KEYS = ("lengths",)  # what the model reads on the host (padding.py): moving it to a GPU would make it wait


def to_device(batch: dict, device) -> dict:
    """The batch's tensors on `device`, but for HOST_KEYS, which stay where the batcher made them."""
    return {k: v if k in HOST_KEYS else v.to(device, non_blocking=True) for k, v in batch.items()}
