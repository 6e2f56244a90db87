"""`python -m minibert <command> ...` (or the `minibert` console script): the library's commands in one place.

    python -m minibert train --model large --corrupt top:0.5   # one run: the paper's experiment
    python -m minibert eval runs/RUN                   # evaluate a run saved with --save-model
    python -m minibert grid table2 --out runs/grid     # the paper's tables as a resumable grid, and their report
    python -m minibert trace base --text "a sentence"  # watch a sentence go through the encoder
    python -m minibert --help                          # every command

train.py and eval.py at the top of the repository are shims for `train` and `eval`. Each command is one module's
main(argv); it is imported only when asked for, so `--help` costs nothing.
"""
import importlib
import sys

# command -> (module, what it does)
COMMANDS = {
    "train": ("minibert.tools.train", "fine-tune or linear-probe one (possibly corrupted) BERT on one dataset"),
    "eval": ("minibert.tools.eval", "evaluate a saved run or checkpoint on a dataset split"),
    "grid": ("minibert.study.grid", "run the paper's tables as a grid of `train` runs; `grid report` renders them"),
    "probe-layers": ("minibert.study.probe_layers", "layer-wise probes of a run's clean, corrupted and fine-tuned encoders"),
    "cka": ("minibert.study.layer_cka", "layer-wise CKA of a run's encoder with the clean pre-trained one"),
    "data": ("minibert.data.encoding", "tokenise a dataset once into the token cache and print its sizes"),
    "trace": ("minibert.tools.trace", "watch a sentence go through the encoder, layer by layer"),
    "tour": ("minibert.tools.tour", "write (or check) docs/tour.md, the walk through model.py"),
    "parity": ("minibert.tools.parity", "compare a checkpoint's outputs with transformers'"),
    "download": ("minibert.tools.download", "fetch checkpoints from the Hugging Face Hub into weights/"),
    "bench": ("minibert.tools.bench", "time minibert against the transformers reference"),
    "gpu-check": ("minibert.tools.gpu_check", "on a CUDA machine: check precision, syncs, speed, memory, compile, resume"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "usage: python -m minibert <command> [args]   (or: minibert <command>)\n\ncommands:\n" + "\n".join(lines) + \
        "\n\n`python -m minibert <command> --help` tells more."


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    sys.argv[0] = f"python -m minibert {argv[0]}"
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
