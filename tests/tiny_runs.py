"""Real, tiny fine-tuning runs (MiniLM, 48 real AG News examples, one epoch on the CPU) for tests that read
run directories: the healing analysis and the layer-wise probes."""
from minibert.training.config import TrainConfig
from minibert.training.trainer import train


def tiny_run(out, minilm_dir, data_root, corrupt="none", pooling="mean", **overrides):
    """Train one saved run into `out` and return its directory."""
    cfg = TrainConfig(model=str(minilm_dir), dataset="ag_news", data_dir=str(data_root / "ag_news"), limit=48,
                      max_length=32, epochs=1, lr=5e-5, batch_size=16, corrupt=corrupt, pooling=pooling,
                      device="cpu", precision="fp32", save_model=True, out=str(out), **overrides)
    train(cfg)
    return out
