"""Parameter corruption, the paper's section 3: re-initialise chosen encoder layers, and say what was done.

    report = corrupt(model, "bottom:0.25", seed=0)   # layers 1-3 of BERT-base, re-initialised
    print(report)                                    # which tensors, their norms before and after

Spec grammar (case-insensitive):

    none | all | bottom:F | top:F | bottom:N | top:N | layers:I-J[,K...]   then optionally
    /attn | /ffn | /norm | /qk                   what in the chosen layers: a component (default: all of it)
    +embeddings                                  also corrupt the embedding block (whole)
    +pooler                                      also corrupt BERT's pooler (whole; DistilBERT has none)
    @reinit | @noise=S | @zero                   the method; reinit (the paper's) by default

e.g. `top:0.5/attn@noise=0.1` or `bottom:0.25+embeddings+pooler`. By default the embeddings and the pooler
are kept, and the report says so. F is a fraction of the layers in (0, 1], written with a decimal point or
as a percentage (0.5, 1.0, 50%), rounded half up to whole layers and at least one, so that the paper's
mappings hold exactly (base 25% = 3 layers, large 25% = 6, distil 50% = 3). N is a plain integer layer
count: top:1 is one layer, top:1.0 all of them. Layer numbers are 1-based like the paper's "(1-3)";
parameter names in the report are the state-dict names, whose ModuleList index is 0-based (layer 1 is
`layers.0`).

Components, per chosen layer: attn = the fused qkv projection and the output projection (weights and
biases); ffn = both feed-forward matrices (up, down); norm = the two LayerNorms; qk = the query and key
rows of the fused qkv weight and bias only (rows 0..2H of the (3H, H) matrix; value rows, the output
projection and everything else kept). The report lists every tensor touched and, for a row slice, its
rows [start, stop) and the norms of those rows.

reinit: every LayerNorm weight := 1; every bias := 0 (LayerNorm's included); every other weight :=
kaiming_uniform_ with its defaults, i.e. U(-sqrt(6/fan_in), +sqrt(6/fan_in)). The fused qkv matrix
(3H, H) has fan_in H, the same as HF's three separate (H, H) matrices; a row slice of it (qk) is drawn
with the fan of the full matrix, which is the same H since rows do not change fan_in.
noise=S adds Gaussian noise with std S times the std of the values it corrupts (a whole tensor, or the
rows of a slice); S is any positive number (0.1, 1e-3); zero sets them to 0.

New values are drawn on the CPU in fp32 from a dedicated generator seeded with `seed`, then copied into
the model: the same spec and seed give bit-identical weights on any device, and the global RNG is left
alone. Nothing outside the chosen tensors (and rows) changes.
"""
import math
import re
from dataclasses import asdict, dataclass
from fractions import Fraction

import torch
import torch.nn as nn

from .model import Bert

GRAMMAR = ("none | all | bottom:F | top:F | bottom:N | top:N | layers:I-J[,K...], optionally /attn | /ffn | /norm "
           "| /qk, +embeddings, +pooler, then @reinit (default) | @noise=S | @zero; F in (0,1] as 0.5 or 50%, "
           "N a layer count, layers 1-based")
NUMBER = re.compile(r"\d+(\.\d*)?|\.\d+")
FLOAT = re.compile(r"(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?")  # the spec is lower-cased: 1E-3 arrives as 1e-3
# Which modules of a Layer each component corrupts (names relative to the layer); qk takes rows of qkv.
COMPONENTS = {"attn": ("attention.qkv", "attention.proj"), "ffn": ("ffn.up", "ffn.down"),
              "norm": ("attn_norm", "ffn_norm"), "qk": ("attention.qkv",)}


@dataclass
class CorruptionSpec:
    """A parsed spec: which 1-based layers, what in them, which method, and whether embeddings/pooler go too."""
    layers: list[int]
    method: str  # "reinit" | "noise=S" | "zero"
    noise: float  # S for noise=S, else 0
    embeddings: bool
    component: str = "all"  # "all" | one of COMPONENTS
    pooler: bool = False


def parse_spec(spec: str, num_layers: int, has_pooler: bool = True) -> CorruptionSpec:
    """Validate `spec` for an encoder of `num_layers` layers (with a pooler or not), touching no model.
    Raises ValueError."""
    def bad(why):
        return ValueError(f"bad corruption spec {spec!r}: {why}; expected {GRAMMAR}")

    text = spec.strip().lower()
    for extra in ("+embeddings", "+pooler"):
        if text.count(extra) > 1:
            raise bad(f"{extra} is given {text.count(extra)} times; give it once")
    embeddings, pooler = "+embeddings" in text, "+pooler" in text
    text = text.replace("+embeddings", "", 1).replace("+pooler", "", 1)
    if "+" in text.partition("@")[0]:  # after the @, a noise scale may be written 1e+3
        raise bad(f"unknown addition {'+' + text.partition('@')[0].split('+', 1)[1]!r} (only +embeddings, +pooler)")
    if pooler and not has_pooler:
        raise bad("+pooler corrupts BERT's pooler, and this encoder (DistilBERT) has none: drop +pooler")
    where, at, method = text.partition("@")
    method = method if at else "reinit"
    noise = 0.0
    if method.startswith("noise="):
        value = method[6:]
        noise = float(value) if FLOAT.fullmatch(value) else 0.0
        if not 0 < noise < math.inf:
            raise bad(f"noise needs a positive std scale S (0.1, 1e-3), got {value!r}")
        method = f"noise={noise:g}"
    elif method not in ("reinit", "zero"):
        raise bad(f"unknown method {method!r}")

    where, slash, component = where.partition("/")
    component = component if slash else "all"
    if component not in COMPONENTS and not (component == "all" and not slash):
        raise bad(f"unknown component {component!r} (attn, ffn, norm or qk)")
    layers = _layers(where, num_layers, bad)
    if slash and not layers:
        raise bad(f"/{component} picks a part of the chosen layers, and {where!r} chooses none")
    return CorruptionSpec(layers, method, noise, embeddings, component, pooler)


def _layers(where: str, num_layers: int, bad) -> list[int]:
    """The 1-based layers a selection (none, all, bottom:F, top:N, layers:I-J,K) chooses."""
    kind, colon, arg = where.partition(":")
    if kind in ("none", "all") and not colon:
        return list(range(1, num_layers + 1)) if kind == "all" else []
    if kind in ("bottom", "top") and colon:
        n = _count(arg, num_layers, bad)
        return list(range(1, n + 1)) if kind == "bottom" else list(range(num_layers - n + 1, num_layers + 1))
    if kind == "layers" and colon:
        layers = set()
        for part in arg.split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
            if not m:
                raise bad(f"{part!r} is not a layer I or a range I-J")
            i, j = int(m[1]), int(m[2] or m[1])
            if not 1 <= i <= j <= num_layers:
                raise bad(f"layers {part!r} must lie within 1-{num_layers}, ranges ascending")
            layers.update(range(i, j + 1))
        return sorted(layers)
    raise bad(f"unknown selection {where!r}")


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
    """What corrupt() did. params: one dict per tensor touched (name, shape of the whole tensor, rows
    [start, stop) for a row slice or None for the whole tensor, norm_before and norm_after of what was touched)."""
    spec: str
    layers: list[int]  # 1-based
    method: str
    seed: int
    embeddings: bool
    params: list[dict]
    component: str = "all"
    pooler: bool = False

    def to_dict(self) -> dict:
        """A JSON-serialisable dict, saved with every run's results."""
        return asdict(self)

    def __str__(self) -> str:
        blocks = {}  # "layers.12" / "embeddings" / "pooler" -> [tensors, values, sum of squares before, after]
        for p in self.params:
            block = p["name"].split(".")[0] if not p["name"].startswith("layers.") else ".".join(p["name"].split(".")[:2])
            b = blocks.setdefault(block, [0, 0, 0.0, 0.0])
            rows = p.get("rows")
            b[0] += 1
            b[1] += math.prod(p["shape"]) if rows is None else (rows[1] - rows[0]) * math.prod(p["shape"][1:])
            b[2] += p["norm_before"] ** 2
            b[3] += p["norm_after"] ** 2
        part = "" if self.component == "all" else f" ({_describe(self.component)})"
        lines = [f"corruption {self.spec!r}: layers {layer_ranges(self.layers) or '-'}{part}, "
                 f"embeddings {'corrupted' if self.embeddings else 'kept'}, "
                 f"pooler {'corrupted' if self.pooler else 'kept'}, method {self.method}, seed {self.seed}, "
                 f"{len(self.params)} tensors, {sum(b[1] for b in blocks.values()):,} values"]
        if not blocks:
            return lines[0]
        lines += [f"{'block':<12}{'layer':>6}{'tensors':>9}{'values':>13}{'norm before':>13}{'norm after':>12}"]
        for block, (n, numel, before, after) in blocks.items():
            layer = str(int(block.split(".")[1]) + 1) if block.startswith("layers.") else "-"
            lines.append(f"{block:<12}{layer:>6}{n:>9}{numel:>13,}{math.sqrt(before):>13.2f}{math.sqrt(after):>12.2f}")
        return "\n".join(lines)


def _describe(component: str) -> str:
    """Words for a component, for the report's summary line."""
    return {"attn": "attention: qkv + output projection", "ffn": "feed-forward: up + down",
            "norm": "the two LayerNorms", "qk": "query and key rows of qkv"}[component]


def layer_ranges(layers: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3,7": layers as the paper writes them ("(1-3)")."""
    runs = []
    for i in layers:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)


def _new_value(module: nn.Module, name: str, w: torch.Tensor, spec: CorruptionSpec, gen) -> torch.Tensor:
    """The corrupted value of `w` (parameter `name` of `module`, or a row slice of it), on the CPU in fp32."""
    w = w.detach().float().cpu()
    if spec.method == "zero":
        return torch.zeros_like(w)
    if spec.noise:
        return w + spec.noise * w.std() * torch.randn(w.shape, generator=gen)
    if isinstance(module, nn.LayerNorm) and name == "weight":
        return torch.ones_like(w)
    if name == "bias":
        return torch.zeros_like(w)
    # a=0, fan_in, leaky_relu gain; fan_in is the column count, so a row slice gets the full matrix's fan
    return nn.init.kaiming_uniform_(torch.empty_like(w), generator=gen)


def _targets(enc: Bert, s: CorruptionSpec):
    """(module, full parameter name, parameter name in module, rows slice or None) of every tensor to corrupt,
    in a fixed order: embeddings, the chosen layers, the pooler."""
    blocks = [("embeddings", enc.embeddings, "all")] if s.embeddings else []
    blocks += [(f"layers.{i - 1}", enc.layers[i - 1], s.component) for i in s.layers]
    blocks += [("pooler", enc.pooler, "all")] if s.pooler else []
    H = enc.config.hidden_size
    for prefix, block, component in blocks:
        for module_name, module in block.named_modules():
            if component != "all" and module_name not in COMPONENTS[component]:
                continue
            rows = slice(0, 2 * H) if component == "qk" else None  # qkv's rows: query 0..H, key H..2H, value 2H..3H
            for name, _ in module.named_parameters(recurse=False):
                yield module, ".".join(filter(None, (prefix, module_name, name))), name, rows


@torch.no_grad()
def corrupt(model: nn.Module, spec: str, seed: int = 0) -> CorruptionReport:
    """Corrupt `model` (a Bert, or anything whose `.encoder` is one) in place as `spec` says; see the module doc."""
    enc = getattr(model, "encoder", model)
    if not isinstance(enc, Bert):
        raise TypeError(f"corrupt() needs a minibert Bert or a model with a Bert `.encoder`, got {type(model).__name__}")
    s = parse_spec(spec, len(enc.layers), has_pooler=enc.pooler is not None)
    gen = torch.Generator().manual_seed(seed)  # dedicated: the global RNG stream is not disturbed
    params = []
    for module, full_name, name, rows in _targets(enc, s):
        p = getattr(module, name)
        target = p if rows is None else p[rows]  # a view: copying into it writes those rows only
        before = target.float().norm().item()
        target.copy_(_new_value(module, name, target, s, gen))
        params.append(dict(name=full_name, shape=list(p.shape), rows=None if rows is None else [rows.start, rows.stop],
                           norm_before=before, norm_after=target.float().norm().item()))
    return CorruptionReport(spec, s.layers, s.method, seed, s.embeddings, params, s.component, s.pooler)
