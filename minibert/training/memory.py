"""GPU memory before the first step: will this run fit, and if not, what to change.

    from minibert.training.memory import estimate, check_fits_on_gpu
    estimate(config, batch_size=32, length=512, precision="bf16", mode="finetune")   # bytes, by part
    check_fits_on_gpu(cfg, config, micro, longest, precision, free_bytes)            # ValueError when it won't

The peak of a fine-tuning step is the weights, their gradients and AdamW's two moments (all fp32: autocast
keeps fp32 master weights), and the activations autograd keeps for the backward pass of the longest
micro-batch. The activations of one post-LN transformer layer are about 34 bytes per token per hidden unit
in 16-bit precision with a fused attention kernel, which keeps no T x T score matrix (Korthikanti et al.,
"Reducing Activation Recomputation in Large Transformer Models", 2022, eq. 1 without its 5*nh*T/H term);
twice that in fp32. It is an estimate: a run it passes can still run out of memory on a fragmented or
shared GPU, and `python -m minibert gpu-check` prints it beside the peak a GPU really measured.
"""
from ..config import BertConfig

GIB = 2 ** 30
BYTES_PER_TOKEN_UNIT = 34  # activations kept per token, per hidden unit, per layer, in 16-bit precision
MARGIN = 1.1  # the CUDA caching allocator's fragmentation, the CUDA context's workspace


def parameters(config: BertConfig, num_labels: int = 2) -> int:
    """The classifier's parameter count: embeddings, layers, pooler and head."""
    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * H + 2 * H
    layer = 4 * H * H + 4 * H + 2 * H * I + I + H + 4 * H  # qkv + proj, up + down, two LayerNorms
    pooler = H * H + H  # BERT's pooler, or DistilBERT's pre_classifier: one H x H layer
    return embeddings + L * layer + pooler + H * num_labels + num_labels


def estimate(config: BertConfig, batch_size: int, length: int, precision: str, mode: str = "finetune",
             num_labels: int = 2) -> dict:
    """Peak GPU memory of one training step, in bytes, by part (and "total", with MARGIN)."""
    P = parameters(config, num_labels)
    trained = P if mode == "finetune" else config.hidden_size * num_labels + num_labels
    act_bytes = BYTES_PER_TOKEN_UNIT * (1 if precision in ("bf16", "fp16") else 2)
    tokens = batch_size * length
    activations = tokens * config.hidden_size * act_bytes * config.num_hidden_layers if mode == "finetune" else 0
    parts = {"weights": 4 * P, "gradients": 4 * trained, "adamw": 8 * trained, "activations": activations}
    return {**parts, "total": int(MARGIN * sum(parts.values()))}


def check_fits_on_gpu(config: BertConfig, batch_size: int, grad_accum: int, length: int, precision: str, mode: str,
                      free: int, where: str, num_labels: int = 2) -> None:
    """Refuse, before the first step, a run whose estimated peak exceeds the `free` bytes of GPU `where`: one line
    with the numbers and the flags that shrink it (--grad-accum, --batch-size, --max-length)."""
    micro = batch_size // grad_accum
    need = estimate(config, micro, length, precision, mode, num_labels)
    if need["total"] <= free:
        return
    parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in need.items() if k != "total")
    fixes = []
    accum = grad_accum
    while accum < batch_size and estimate(config, batch_size // accum, length, precision, mode, num_labels)["total"] > free:
        accum *= 2
    if accum <= batch_size and estimate(config, max(batch_size // accum, 1), length, precision, mode,
                                        num_labels)["total"] <= free:
        fixes.append(f"--grad-accum {accum} (micro-batches of {batch_size // accum}, the same optimisation)")
    shorter = length
    while shorter > 8 and estimate(config, micro, shorter, precision, mode, num_labels)["total"] > free:
        shorter //= 2
    if estimate(config, micro, shorter, precision, mode, num_labels)["total"] <= free:
        fixes.append(f"--max-length {shorter} (truncates longer examples)")
    fixes.append("a smaller --batch-size")
    raise ValueError(f"{where} has {free / GIB:.1f} GiB free, and this run needs about {need['total'] / GIB:.1f} GiB "
                     f"(GiB: {parts}; micro-batch {micro} x {length} tokens, {precision}); use "
                     + ", or ".join(fixes))
