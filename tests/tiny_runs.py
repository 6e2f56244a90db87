"""Real, tiny fine-tuning runs (MiniLM, 48 real AG News examples, one epoch on the CPU) for tests that read
run directories: the healing analysis and the layer-wise probes; and a tiny random BERT for tests of the
command lines, where what is learnt does not matter and a run takes a second."""
import shutil

import torch

from minibert import Bert, BertConfig, save_pretrained
from minibert.training.config import TrainConfig
from minibert.training.trainer import train

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def tiny_run(out, minilm_dir, data_root, corrupt="none", pooling="mean", **overrides):
    """Train one saved run into `out` and return its directory."""
    cfg = TrainConfig(model=str(minilm_dir), dataset="ag_news", data_dir=str(data_root / "ag_news"), limit=48,
                      max_length=32, epochs=1, lr=5e-5, batch_size=16, corrupt=corrupt, pooling=pooling,
                      device="cpu", precision="fp32", save_model=True, out=str(out), **overrides)
    train(cfg)
    return out


def tiny_checkpoint(directory, minilm_dir, positions: int = 64):
    """A random 2-layer BERT (hidden 32, `positions` positions) saved in the hub's layout, with MiniLM's tokenizer."""
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=positions)
    save_pretrained(Bert(config), directory)
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm_dir / name, directory / name)
    return directory
