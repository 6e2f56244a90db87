"""What several test files share: tiny random models, checkpoints in the hub's exact file layouts (made with
`transformers` from random configs), tiny real training runs, and the top-level scripts as modules."""
import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent

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


def scramble_(model, seed=0, scale=0.02, shift=0.0):
    """Move every parameter off its initial value (LayerNorm weights away from 1, biases away from 0):
    add randn * scale + shift, seeded."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale + shift)
    return model


def tiny_bert(num_layers=4, flavour="bert", hidden_size=64, moved=0.0, shift=0.0, **config):
    """A small random encoder (vocab 100, 4 heads, FFN 2 x hidden, 32 positions), the same for the same arguments.

    moved > 0 shifts every tensor off its init (scramble_ with scale=moved), so that resetting a LayerNorm to 1
    or a bias to 0 is a real change."""
    from minibert import Bert, BertConfig
    torch.manual_seed(0)
    sizes = dict(vocab_size=100, num_attention_heads=4, intermediate_size=2 * hidden_size, max_position_embeddings=32)
    model = Bert(BertConfig(flavour=flavour, num_hidden_layers=num_layers, hidden_size=hidden_size,
                            type_vocab_size=0 if flavour == "distilbert" else 2, **{**sizes, **config}))
    return scramble_(model, scale=moved, shift=shift) if moved else model


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


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def tiny_checkpoint(directory, tokenizer_from, flavour="bert", num_layers=2, positions=512):
    """A small random encoder (num_layers x 32) saved as the hub stores it, with a real (MiniLM) tokenizer beside
    it; its LayerNorms are off their 1/0 init, so that a mix-up of weight and bias would show."""
    import shutil

    from minibert import save_pretrained
    model = tiny_bert(num_layers=num_layers, flavour=flavour, hidden_size=32, vocab_size=30522,
                      max_position_embeddings=positions, moved=0.02)
    save_pretrained(model, directory)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_from / name, directory / name)
    return directory


def load_script(name):
    """A top-level script of the repository (train.py, eval.py) as a module, to call its main(argv) in-process."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py") + "_script", REPO / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(model_dir, data_root, out, dataset="sst2", **overrides):
    """A TrainConfig for a tiny real CPU run: mean pooling, 64 real examples of max length 32, one epoch.
    model_dir: MiniLM where what the run learns matters, the tiny_dir fixture's model where only the mechanics do."""
    from minibert.training.config import TrainConfig
    args = dict(model=str(model_dir), dataset=dataset, data_dir=str(data_root / dataset), limit=64, epochs=1,
                lr=3e-4, batch_size=16, max_length=32, pooling="mean", out=str(out), device="cpu")
    return TrainConfig(**{**args, **overrides})


def tiny_run_config(out, model_dir, data_root, corrupt="none", pooling="mean", **overrides):
    """The config of tiny_run: 48 real AG News examples, one epoch, fp32, the model saved."""
    return tiny_config(model_dir, data_root, out, **{**dict(dataset="ag_news", limit=48, lr=5e-5, corrupt=corrupt,
                       pooling=pooling, precision="fp32", save_model=True), **overrides})


def tiny_run(out, model_dir, data_root, corrupt="none", pooling="mean", **overrides):
    """Train one saved run into `out` (tiny_run_config) and return its directory: for tests that read run
    directories (the healing analysis, the layer-wise probes, a folder that holds another run)."""
    from minibert.training.trainer import train
    train(tiny_run_config(out, model_dir, data_root, corrupt, pooling, **overrides))
    return out


def run_main(main, argv, capsys):
    """Call a command line's main(argv) in this process: (exit status, stderr). argparse's errors exit."""
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def assert_one_line_error(status, stderr):
    assert status == 2 and stderr.count("\n") == 1 and stderr.startswith("error: "), (status, stderr)
    assert "Traceback" not in stderr, stderr


# ---- finished runs written by hand: a grid cell with a chosen learning curve ----------

def history(scores, losses, val=None):
    """metrics.jsonl's records: test weighted F1 `scores`, train `losses` and, where given, the validation metric
    `val` (val_weighted_f1 and val_accuracy alike), which the convergence flag reads instead of the test metric."""
    out = [{"epoch": i + 1, "weighted_f1": f, "train_loss": loss} for i, (f, loss) in enumerate(zip(scores, losses))]
    for record, v in zip(out, val or []):
        record.update(val_weighted_f1=v, val_accuracy=v)
    return out


def write_cell(run_dir, scores, losses, majority=0.4, val="same", num_train=100, **result):
    """A finished grid cell with the given learning curve. val: the validation curve, by default the test curve
    (so the convergence flag sees what the test set saw); None for a run without a validation set."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"args": {"seed": 0}, "label_names": ["neg", "pos"],
                                                     "num_train": num_train, "num_test": 50}))
    records = history(scores, losses, scores if val == "same" else val)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "result.json").write_text(json.dumps({
        "status": "done", "best": {"weighted_f1": max(scores)}, "diverged": False, "best_epoch": 1, "lr": 2e-5,
        "seconds": 1.0, "majority_f1": majority, **result}))  # no convergence record: the report computes it
