"""The optimiser side of a run: named recipes, the lr schedule, and the training state on disk.

The paper says "Adam" and the lrs; everything else is a recipe (see the table in README):
    paper       torch.optim.Adam, constant lr, no warmup, no weight decay, no clipping
    hf-trainer  what transformers 4.41.1's Trainer does by default (its TrainingArguments: optim adamw_torch,
                weight_decay 0.0, adam_beta1 0.9, adam_beta2 0.999, adam_epsilon 1e-8, max_grad_norm 1.0,
                lr_scheduler_type linear, warmup_ratio 0.0): AdamW that, with no weight decay, is Adam;
                the lr falls linearly to 0 at the last step; gradients clipped at norm 1
    bert        BERT's recipe: AdamW, weight decay 0.01 on matrices, 10% warmup, linear decay, clipping at 1
A run's --weight-decay, --warmup and --grad-clip override its recipe's values.
"""
import math
import pickle
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from ..files import nbytes
from . import rundir


@dataclass(frozen=True)
class Recipe:
    """How the optimiser runs: everything the paper leaves open."""
    optimizer: str            # adam (torch.optim.Adam) | adamw (torch.optim.AdamW); betas 0.9/0.999, eps 1e-8
    weight_decay: float       # on matrices only, not on biases or LayerNorm (Adam: L2; AdamW: decoupled)
    warmup: float             # fraction of all steps with a linear warmup from 0
    decay: bool               # linear decay of the lr to 0 at the last step
    grad_clip: float | None   # clip the gradient norm at this value; None: no clipping


RECIPES = {
    "paper": Recipe("adam", 0.0, 0.0, False, None),      # the paper's words: Adam, nothing else
    "hf-trainer": Recipe("adamw", 0.0, 0.0, True, 1.0),  # transformers 4.41.1 TrainingArguments defaults
    "bert": Recipe("adamw", 0.01, 0.1, True, 1.0),       # BERT's fine-tuning recipe
}



def settings(cfg) -> Recipe:
    """The recipe with the run's own --weight-decay / --warmup / --grad-clip (0: none) applied."""
    own = {k: getattr(cfg, k) for k in ("weight_decay", "warmup", "grad_clip") if getattr(cfg, k) is not None}
    r = replace(RECIPES[cfg.recipe], **own)
    return replace(r, grad_clip=None) if r.grad_clip == 0 else r



def linear_schedule(warmup: int, total: int, decay: bool = True):
    """lr multiplier: 0 -> 1 over `warmup` steps, then 1 -> 0 at `total` (HF's linear schedule), or stay at 1."""
    def multiplier(step):
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup)) if decay else 1.0
    return multiplier


def make_optimizer(cfg, clf, total_steps: int, device) -> tuple[list, object, object, float | None]:
    """(trainable params, optimiser, lr scheduler, gradient clip norm or None) of the run's recipe."""
    r = settings(cfg)
    params = [p for p in clf.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": r.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    kind = torch.optim.Adam if r.optimizer == "adam" else torch.optim.AdamW
    optimizer = kind(groups, lr=cfg.lr, fused=device.type == "cuda")
    multiplier = linear_schedule(math.ceil(r.warmup * total_steps), total_steps, r.decay)
    return params, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier), r.grad_clip


def rng_states(device, world: int = 1) -> list[dict]:
    """Every torchrun rank's random number generator states (the CPU's and its GPU's), in rank order. Each rank
    draws its own dropout masks, so a resumed run needs each rank's own states back. Collective: every rank
    calls it."""
    mine = {"rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device).cpu() if device.type == "cuda" else None}
    if world == 1:
        return [mine]
    states = [None] * world
    dist.all_gather_object(states, mine)
    return states


@dataclass
class Optimiser:
    """What make_optimizer() gives a fine-tuning run, and its loss scaler (active for fp16 only); step() is one
    optimiser step on the gradients the micro-batches accumulated."""
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    clip: float | None
    scaler: torch.amp.GradScaler

    def step(self) -> None:
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.scaler.step(self.optimizer)  # skipped when fp16 overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()


def save_state(path: Path, clf, optimizer, scheduler, scaler, rngs: list[dict], progress: dict) -> None:
    """checkpoint.pt: everything a resumed run needs to continue bit for bit, plus `progress` (epoch, history).
    rngs: rng_states(), one per rank."""
    state = {"model": clf.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None, **rngs[0], "rank_rngs": rngs,
             **progress}
    # into a file object: a full disk is then an OSError that atomic() names, not torch's "unexpected pos"
    try:
        with rundir.atomic(path, size=nbytes(state)) as tmp, open(tmp, "wb") as f:
            torch.save(state, f)
    except RuntimeError as e:  # Ctrl-C or SIGTERM mid-write: torch's zip writer then fails to close, hiding it
        if isinstance(e.__context__, KeyboardInterrupt):
            raise e.__context__ from None  # the run says which epoch the previous, intact checkpoint holds
        raise


# what torch.load and load_state_dict raise on a truncated, overwritten or foreign checkpoint.pt
DAMAGED = (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile)


def _damaged(path: Path, e: Exception) -> ValueError:
    return ValueError(f"{path} is damaged ({type(e).__name__}); delete it and rerun with --resume to start "
                      "this run again from its first epoch")


def load_state(path: Path, clf, optimizer, scheduler, scaler, device, rank: int = 0) -> dict:
    """Restore what save_state wrote, with this rank's own RNG states; returns its `progress`. A damaged file is a
    one-line error."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        clf.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except DAMAGED as e:
        raise _damaged(path, e) from None
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    ranks = state.get("rank_rngs") or [state]  # a checkpoint from before every rank's states were kept: rank 0's
    rng = ranks[rank] if rank < len(ranks) else ranks[0]  # more ranks than saved: they were not resumable anyway
    torch.set_rng_state(rng["rng"].cpu())
    if device.type == "cuda" and rng["cuda_rng"] is not None:
        torch.cuda.set_rng_state(rng["cuda_rng"].cpu(), device)
    return {k: state[k] for k in ("epoch", "history", "seconds", "train_tokens", "train_seconds")}


def load_model_state(path: Path, clf) -> int:
    """Only the model of what save_state wrote (a finished run's kept checkpoint); returns its epoch."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        clf.load_state_dict(state["model"])
        return state["epoch"]
    except DAMAGED as e:
        raise _damaged(path, e) from None
