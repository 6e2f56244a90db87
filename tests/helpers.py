"""Checkpoints in the hub's exact file layouts, made with `transformers` from random configs."""
import torch
from safetensors.torch import save_file

SENTENCES = [
    "The film is a charming, funny and touching story of two friends.",
    "Stocks fell sharply on Monday after the central bank raised interest rates.",
    "i feel so lonely tonight",
    "Apple unveils a new iPhone with a faster chip and a better camera, priced at $999.",
    "Worst. Movie. Ever!!!",
    "A shark swam near the beach in Sydney, so officials closed it for the afternoon while "
    "lifeguards watched the water from a helicopter and tourists waited on the promenade.",
]
PAIRS = [
    ("The company said profits rose 10 percent.", "Profits at the company climbed by a tenth, it said."),
    ("A man is playing a guitar.", "Nobody is making any music."),
    ("He left early.", "The meeting, which had been scheduled for the afternoon, ended before he could "
                       "present the quarterly results to the board."),
]


def scramble_(model, seed=0):
    """Move every parameter off its initial value (LayerNorm weights away from 1, biases away from 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def write_checkpoint(directory, hf_model, legacy=False, prefix_extra=None):
    """Save `hf_model` as the hub stores it: config.json + model.safetensors.

    legacy=True reproduces bert-base-uncased's file: LayerNorm.gamma/beta names and a stale
    embeddings.position_ids buffer next to the MLM/NSP `cls.*` heads.
    """
    directory.mkdir(parents=True, exist_ok=True)
    hf_model.config.save_pretrained(directory)
    state = {}
    for k, v in hf_model.state_dict().items():
        if legacy and "LayerNorm." in k:
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[k] = v.detach().clone().contiguous()
    if legacy:
        state["bert.embeddings.position_ids"] = torch.arange(hf_model.config.max_position_embeddings)[None]
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()
