"""Fetch checkpoints once, ahead of time, for machines without internet.

    python -m minibert download base large distil          # presets -> weights/base, weights/large, ...
    python -m minibert download sentence-transformers/all-MiniLM-L6-v2   # -> weights/<owner>--<name>
    python -m minibert download --list                     # what is already there, with sizes

Only the files minibert reads are fetched (config.json, model.safetensors, tokenizer.json, vocab.txt,
tokenizer_config.json), with huggingface_hub: progress bars, finished files skipped on a rerun. Each
result is loaded once to prove it works. Afterwards `load_pretrained("base")` finds weights/base first
and needs no network.
"""
import sys
from pathlib import Path

from ..checkpoint import download, load_pretrained, local_dir_for, weights_dir
from ..cli import Parser, main_wrapper
from ..config import PRESETS
from ..tokenizer import tokenizer_from_dir
from ..training.rundir import check_writable


def fetch(name: str, root=None, progress: bool = True) -> Path:
    """Download a preset or hub id into root (default weights/) and check that model and tokenizer load."""
    repo_id = PRESETS[name][0] if name in PRESETS else name
    target = local_dir_for(name) if root is None else Path(root) / name.replace("/", "--")
    path = download(repo_id, target, need_weights=True, progress=progress)
    model = load_pretrained(path)
    tokenizer_from_dir(path)
    cfg = model.config
    print(f"{name}: ok, {cfg.flavour} with {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
          f"{model.num_parameters() / 1e6:.1f}M parameters, in {path}")
    return path


def listing(root=None) -> list[tuple[str, list[tuple[str, int]]]]:
    """(folder, [(file, bytes), ...]) for every checkpoint folder under root (default weights/)."""
    root = weights_dir() if root is None else Path(root)
    if not root.is_dir():
        return []
    return [(d.name, sorted((f.name, f.stat().st_size) for f in d.iterdir() if f.is_file()))
            for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_listing(root=None) -> str:
    root = weights_dir() if root is None else Path(root)
    entries = listing(root)
    if not entries:
        return f"{root}: no checkpoints yet (python -m minibert download base)"
    lines = [f"{root}:"]
    for name, files in entries:
        names = {f for f, _ in files}
        complete = "config.json" in names and bool(names & {"model.safetensors", "pytorch_model.bin"})
        lines.append(f"  {name}/  {_size(sum(s for _, s in files))}{'' if complete else '  (incomplete)'}")
        lines += [f"    {f:<24} {_size(s):>10}" for f, s in files]
    return "\n".join(lines)


@main_wrapper
def main(argv=None) -> int:
    parser = Parser(prog="python -m minibert download",
                    description="Fetch the files minibert needs from the Hugging Face Hub.")
    parser.add_argument("models", nargs="*", help=f"presets ({', '.join(PRESETS)}) or hub ids")
    parser.add_argument("--dir", default=None,
                        help="where to put them (default weights/, or $MINIBERT_WEIGHTS; loading by preset "
                             "name looks there)")
    parser.add_argument("--list", action="store_true", help="show what is already downloaded, with sizes")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad flag (Parser printed its one line) or --help: main() returns the status
        return e.code
    if args.dir is not None:  # before any download: a --dir that cannot hold folders fails now, in one line
        if args.list or not args.models:
            if Path(args.dir).exists() and not Path(args.dir).is_dir():
                raise ValueError(f"--dir {args.dir} is a file, not a folder; pick another --dir")
        else:
            check_writable(args.dir, "--dir")
    if args.list or not args.models:
        print(format_listing(args.dir))
        return 0
    for name in args.models:
        fetch(name, args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
