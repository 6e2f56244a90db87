"""Parameter corruption, the paper's section 3: re-initialise chosen encoder layers, and say what was done.

    report = corrupt(model, "bottom:0.25", seed=0)   # layers 1-3 of BERT-base, re-initialised
    print(report)                                    # which tensors, their norms before and after

Spec grammar (case-insensitive):

    none | all | bottom:F | top:F | bottom:N | top:N | layers:I-J[,K...]   then optionally
    +embeddings                                  also corrupt the embedding block
    @reinit | @noise=S | @zero                   the method; reinit (the paper's) by default

F is a fraction of the layers in (0, 1], written with a decimal point or as a percentage (0.5, 1.0, 50%),
rounded half up to whole layers and at least one, so that the paper's mappings hold exactly (base 25% =
3 layers, large 25% = 6, distil 50% = 3). N is a plain integer layer count: top:1 is one layer, top:1.0
all of them. Layer numbers are 1-based like the paper's "(1-3)"; parameter names in the report are the
state-dict names, whose ModuleList index is 0-based (layer 1 is `layers.0`).

reinit, per chosen layer: every LayerNorm weight := 1; every bias := 0 (LayerNorm's included); every
other weight := kaiming_uniform_ with its defaults, i.e. U(-sqrt(6/fan_in), +sqrt(6/fan_in)). The fused
qkv matrix (3H, H) has fan_in H, the same as HF's three separate (H, H) matrices.
noise=S adds Gaussian noise with std S times each tensor's own std; zero sets every tensor to 0.

New values are drawn on the CPU in fp32 from a dedicated generator seeded with `seed`, then copied into
the model: the same spec and seed give bit-identical weights on any device, and the global RNG is left
alone. Nothing outside the chosen blocks changes.
"""
import math
import re
from dataclasses import asdict, dataclass
from fractions import Fraction

import torch
import torch.nn as nn

from .model import Bert

GRAMMAR = ("none | all | bottom:F | top:F | bottom:N | top:N | layers:I-J[,K...], optionally +embeddings, "
           "then @reinit (default) | @noise=S | @zero; F in (0,1] as 0.5 or 50%, N a layer count, layers 1-based")
NUMBER = re.compile(r"\d+(\.\d*)?|\.\d+")


@dataclass
class CorruptionSpec:
    """A parsed spec: which 1-based layers, which method, and whether the embeddings go too."""
    layers: list[int]
    method: str  # "reinit" | "noise=S" | "zero"
    noise: float  # S for noise=S, else 0
    embeddings: bool


def parse_spec(spec: str, num_layers: int) -> CorruptionSpec:
    """Validate `spec` for an encoder of `num_layers` layers, touching no model. Raises ValueError."""
    def bad(why):
        return ValueError(f"bad corruption spec {spec!r}: {why}; expected {GRAMMAR}")

    text = spec.strip().lower()
    embeddings = "+embeddings" in text
    where, at, method = text.replace("+embeddings", "", 1).partition("@")
    method = method if at else "reinit"
    noise = 0.0
    if method.startswith("noise="):
        if not NUMBER.fullmatch(method[6:]) or float(method[6:]) <= 0:
            raise bad(f"noise needs a positive std scale S, got {method[6:]!r}")
        noise = float(method[6:])
        method = f"noise={noise:g}"
    elif method not in ("reinit", "zero"):
        raise bad(f"unknown method {method!r}")

    kind, colon, arg = where.partition(":")
    if kind in ("none", "all") and not colon:
        layers = list(range(1, num_layers + 1)) if kind == "all" else []
    elif kind in ("bottom", "top") and colon:
        n = _count(arg, num_layers, bad)
        layers = list(range(1, n + 1)) if kind == "bottom" else list(range(num_layers - n + 1, num_layers + 1))
    elif kind == "layers" and colon:
        layers = set()
        for part in arg.split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
            if not m:
                raise bad(f"{part!r} is not a layer I or a range I-J")
            i, j = int(m[1]), int(m[2] or m[1])
            if not 1 <= i <= j <= num_layers:
                raise bad(f"layers {part!r} must lie within 1-{num_layers}, ranges ascending")
            layers.update(range(i, j + 1))
        layers = sorted(layers)
    else:
        raise bad(f"unknown selection {where!r}")
    return CorruptionSpec(layers, method, noise, embeddings)


def _count(arg: str, num_layers: int, bad) -> int:
    """How many layers `arg` means: an integer count, or a fraction (0.5, 50%) rounded half up, >= 1."""
    if arg.isdigit():
        if not 1 <= int(arg) <= num_layers:
            raise bad(f"a layer count must be in 1-{num_layers}, got {arg}")
        return int(arg)
    number = arg[:-1] if arg.endswith("%") else arg
    if not NUMBER.fullmatch(number) or ("." not in arg and not arg.endswith("%")):
        raise bad(f"{arg!r} is neither a layer count nor a fraction")
    frac = Fraction(number) / (100 if arg.endswith("%") else 1)  # exact: 0.35 * 20 is 7, not 6.9999
    if not 0 < frac <= 1:
        raise bad(f"a fraction must be in (0, 1], got {arg}")
    return max(1, math.floor(frac * num_layers + Fraction(1, 2)))


@dataclass
class CorruptionReport:
    """What corrupt() did. params: one dict per tensor touched (name, shape, norm_before, norm_after)."""
    spec: str
    layers: list[int]  # 1-based
    method: str
    seed: int
    embeddings: bool
    params: list[dict]

    def to_dict(self) -> dict:
        """A JSON-serialisable dict, saved with every run's results."""
        return asdict(self)

    def __str__(self) -> str:
        blocks = {}  # "layers.12" / "embeddings" -> [numel, sum of squares before, after]
        for p in self.params:
            block = "embeddings" if p["name"].startswith("embeddings") else ".".join(p["name"].split(".")[:2])
            b = blocks.setdefault(block, [0, 0, 0.0, 0.0])
            b[0] += 1
            b[1] += math.prod(p["shape"])
            b[2] += p["norm_before"] ** 2
            b[3] += p["norm_after"] ** 2
        lines = [f"corruption {self.spec!r}: layers {_ranges(self.layers) or '-'}"
                 f"{' + embeddings' if self.embeddings else ''}, method {self.method}, seed {self.seed}, "
                 f"{len(self.params)} tensors, {sum(b[1] for b in blocks.values()):,} values"]
        if not blocks:
            return lines[0]
        lines += [f"{'block':<12}{'layer':>6}{'tensors':>9}{'values':>13}{'norm before':>13}{'norm after':>12}"]
        for block, (n, numel, before, after) in blocks.items():
            layer = "-" if block == "embeddings" else str(int(block.split(".")[1]) + 1)
            lines.append(f"{block:<12}{layer:>6}{n:>9}{numel:>13,}{math.sqrt(before):>13.2f}{math.sqrt(after):>12.2f}")
        return "\n".join(lines)


def _ranges(layers: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3,7"."""
    runs = []
    for i in layers:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)


def _new_value(module: nn.Module, name: str, p: torch.Tensor, spec: CorruptionSpec, gen) -> torch.Tensor:
    """The corrupted value of parameter `name` of `module`, computed on the CPU in fp32."""
    w = p.detach().float().cpu()
    if spec.method == "zero":
        return torch.zeros_like(w)
    if spec.noise:
        return w + spec.noise * w.std() * torch.randn(w.shape, generator=gen)
    if isinstance(module, nn.LayerNorm) and name == "weight":
        return torch.ones_like(w)
    if name == "bias":
        return torch.zeros_like(w)
    return nn.init.kaiming_uniform_(torch.empty_like(w), generator=gen)  # a=0, fan_in, leaky_relu gain


@torch.no_grad()
def corrupt(model: nn.Module, spec: str, seed: int = 0) -> CorruptionReport:
    """Corrupt `model` (a Bert, or anything whose `.encoder` is one) in place as `spec` says; see the module doc."""
    enc = getattr(model, "encoder", model)
    if not isinstance(enc, Bert):
        raise TypeError(f"corrupt() needs a minibert Bert or a model with a Bert `.encoder`, got {type(model).__name__}")
    s = parse_spec(spec, len(enc.layers))
    gen = torch.Generator().manual_seed(seed)  # dedicated: the global RNG stream is not disturbed
    blocks = [("embeddings", enc.embeddings)] if s.embeddings else []
    blocks += [(f"layers.{i - 1}", enc.layers[i - 1]) for i in s.layers]
    params = []
    for prefix, block in blocks:
        for module_name, module in block.named_modules(prefix=prefix):
            for name, p in module.named_parameters(recurse=False):
                before = p.float().norm().item()
                p.copy_(_new_value(module, name, p, s, gen))
                params.append(dict(name=f"{module_name}.{name}", shape=list(p.shape),
                                   norm_before=before, norm_after=p.float().norm().item()))
    return CorruptionReport(spec, s.layers, s.method, seed, s.embeddings, params)


# `from .corrupt import corrupt` makes minibert.corrupt this function, shadowing the module; this keeps
# the documented minibert.corrupt.parse_spec(...) working.
corrupt.parse_spec = parse_spec
