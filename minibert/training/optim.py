"""The optimiser side of a run: named recipes (each described here, once), the lr schedule, one optimiser step.

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
from dataclasses import dataclass, replace

import torch


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
