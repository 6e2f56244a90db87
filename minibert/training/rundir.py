"""A run directory: the files one `train.py` run writes, written atomically and read back safely.

    <out>/config.json      every argument (under "args"), versions, device, precision, data sizes, where the run
                           was started (origin) and what it saw (seen: CUDA_VISIBLE_DEVICES, device name, threads)
    <out>/corruption.json  what the corruption touched
    <out>/metrics.jsonl    one line per epoch: test weighted/macro F1, accuracy, loss, the share of the most predicted
                           class; train loss, tokens/s; "drift": each layer's relative weight change since the start
                           of fine-tuning, and with track_cka "cka": each layer's CKA with the clean pre-trained
                           encoder (minibert/training/dynamics.py); val_* with select_on="val"
    <out>/result.json      "status": "done" once the run has finished; the best epoch and its metrics, the majority
                           baseline, `diverged`, `collapsed`, `convergence` (minibert/training/convergence.py), sizes
    <out>/model/           the best epoch's classifier, with --save-model (a sweep: in its best lr's sub-run)
    <out>/checkpoint.pt    the training state while unfinished (save_state: model, optimiser, scheduler, loss
                           scaler, every rank's RNG states, the history so far)
    <out>/run.lock         held (flock) by the one process training in the folder; see hold()

Every file is written atomically (minibert/files.py). A file that is nevertheless damaged (a disk filled up, a
hand edit) is reported with its path and read as missing: the run counts as unfinished and reruns, instead of
failing the same way forever.
"""
import json
import os
import pickle
import platform
import shutil
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import torch.distributed as dist

from ..checkpoint import TOKENIZER_FILES, save_pretrained
from ..files import TMP, atomic, load_json, nbytes, read_json, size_text, write_json, write_jsonl, write_text  # noqa: F401
from ..locks import claim, holder
from .inputs import Prepared, device_kind
from .optim import settings

CONFIG, RESULT, METRICS, CORRUPTION, CHECKPOINT, MODEL, LOCK = (
    "config.json", "result.json", "metrics.jsonl", "corruption.json", "checkpoint.pt", "model", "run.lock")
# config.json keys written here: the folder the run was started in, relative to the run folder (relative paths among
# the arguments mean what they meant there), and what the process saw (see seen())
ORIGIN, SEEN = "origin", "seen"


# ---- reading ------------------------------------------------------------------------------------

def read_config(run_dir, resolve: bool = True) -> dict | None:
    """config.json of a run (a dict with "args"), or None when there is none or it is damaged.

    The file keeps the paths a run was given as they were typed (what a committed study needs: `$MINIBERT_DATA/...`,
    hub ids, places relative to the repository). With `resolve`, the relative ones among what a reader must find
    again (--model when it is a folder, --data-dir, --cache-dir, and the checkpoint folder the run loaded) are made
    absolute from the folder the run was started in (ORIGIN), so a run is read the same from any working folder."""
    config = read_json(Path(run_dir) / CONFIG)
    if not (isinstance(config, dict) and isinstance(config.get("args"), dict)):
        return None
    return _resolved(config, Path(run_dir)) if resolve else config


def _resolved(config: dict, run_dir: Path) -> dict:
    """config with its relative paths made absolute from the run's ORIGIN (runs older than ORIGIN: kept as typed)."""
    if not isinstance(config.get(ORIGIN), str):
        return config
    start = (run_dir.resolve() / config[ORIGIN]).resolve()

    def absolute(path, always: bool = True):
        if not isinstance(path, str) or path.startswith("$") or Path(path).is_absolute():
            return path  # `$MINIBERT_DATA/...` is expanded where it is read
        # --model is a folder only when there is one (train reads it the same way); else a hub id or preset
        return str(start / path) if always or (start / path).is_dir() else path

    args = config["args"]
    paths = {"model": absolute(args.get("model"), always=False),
             **{k: absolute(args.get(k)) for k in ("data_dir", "cache_dir")}}
    # the checkpoint folder is loaded as it reads: a `$MINIBERT_DATA/...` one (see portable()) is expanded here
    checkpoint = {"checkpoint": absolute(os.path.expandvars(config["checkpoint"]))} if "checkpoint" in config else {}
    return {**config, "args": {**args, **paths}, **checkpoint}


# what every finished result.json holds; one without them was damaged from outside
RESULT_KEYS = ("best", "best_epoch", "diverged", "lr", "seconds")
NUMBER = (int, float)
# the type of each entry a report reads, when present (best's scores: numbers; its loss may be null)
RESULT_TYPES = {"best": dict, "best_epoch": int, "diverged": bool, "lr": NUMBER, "seconds": NUMBER,
                "majority_f1": (*NUMBER, type(None)), "collapsed": (bool, type(None)),
                "convergence": (dict, type(None)), "num_train": (int, type(None)), "num_test": (int, type(None)),
                "run_dir": str}


def _type_problem(result: dict) -> str | None:
    """The first entry of a finished result whose type a report cannot read, said with its value."""
    entries = [(k, result[k], t) for k, t in RESULT_TYPES.items() if k in result]
    if isinstance(result.get("best"), dict):
        entries += [(f"best.{k}", v, (*NUMBER, type(None)) if k == "loss" else NUMBER)
                    for k, v in result["best"].items()]
        if "weighted_f1" not in result["best"]:
            return "best has no weighted_f1"
    for key, value, kind in entries:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{key} is {json.dumps(value)[:40]}, not {_kind_text(kind)}"
    return None


def _kind_text(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = ["a number"] if float in kinds else ["a whole number"] if int in kinds else []
    names = {dict: "an object", bool: "true or false", str: "a string", type(None): "null"}
    return " or ".join(words + [names[k] for k in kinds if k in names])


def result_problem(path) -> str | None:
    """Why the result file at `path` cannot be read, or None when it is readable or absent."""
    result, why = load_json(path)
    if why is not None:
        return why
    if result is None:
        return None
    if not isinstance(result, dict) or (result.get("status") == "done" and not all(k in result for k in RESULT_KEYS)):
        return f"not a run result (need a JSON object with {', '.join(RESULT_KEYS)})"
    if result.get("status") == "done" and (problem := _type_problem(result)) is not None:
        return f"not a run result: {problem}"
    return None


def read_result(run_dir) -> dict | None:
    """result.json of a finished run, else None (missing, damaged or unfinished)."""
    path = Path(run_dir) / RESULT
    if (why := result_problem(path)) is not None:
        print(f"warning: {path} is damaged ({why}); treating it as missing", file=sys.stderr)
        return None
    result, _ = load_json(path)
    return result if result is not None and result.get("status") == "done" else None


def damaged_results(run_dir: Path) -> list[tuple[Path, str]]:
    """The result.json files of a cell (and of its lr sweep's sub-runs) that exist but cannot be read, and why."""
    paths = [run_dir / "result.json", *sorted(run_dir.glob("lr_*/result.json"))]
    return [(path, why) for path in paths if (why := result_problem(path)) is not None]


def set_aside_damaged(run_dir: Path) -> list[str]:
    """Move damaged result files to <name>.damaged so that train.py --resume runs the cell again; one note each.

    A result file is written atomically, so one that does not read was damaged from outside (a full disk, a bad copy):
    the run it described cannot be trusted, and rerunning costs one cell, never the grid."""
    notes = []
    for path, why in damaged_results(run_dir):
        os.replace(path, path.with_name(path.name + ".damaged"))
        notes.append(f"{path} is damaged ({why}); moved to {path.name}.damaged, rerunning the cell")
    return notes


def read_metrics(run_dir) -> list[dict]:
    """metrics.jsonl of a run: one dict per finished epoch ([] when there is none)."""
    path = Path(run_dir) / METRICS
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
    except ValueError as e:
        print(f"warning: {path} is damaged ({e}); treating it as missing", file=sys.stderr)
        return []


def status(run_dir) -> str:
    """done | partial (the folder exists, unfinished) | pending (no folder)."""
    if read_result(run_dir) is not None:
        return "done"
    return "partial" if Path(run_dir).exists() else "pending"


def saved_model(run_dir, result: dict | None = None) -> Path | None:
    """The best epoch's saved classifier of a run (a sweep keeps it in its best lr's sub-run), if saved."""
    run_dir = Path(run_dir)
    result = read_result(run_dir) if result is None else result
    candidate = run_dir / (result or {}).get("run_dir", ".") / MODEL
    return candidate if (candidate / "config.json").is_file() else None


# ---- the output folder of a new run -------------------------------------------------------------

def check_writable(out, flag: str = "--out", file: str | None = None) -> None:
    """Refuse a folder argument (`flag`, --out by default) that cannot become a folder, before any expensive work;
    with `file` (an example name), a file argument that cannot become a file.

    Writes a temporary file in the nearest existing folder: the only test that is true for every reason
    a write fails (read-only filesystem, permissions, and root on a filesystem like /proc).
    """
    out = Path(out)
    if file is not None and out.is_dir():
        raise ValueError(f"{flag} {out} is a folder; give a file name such as {out / file}")
    if file is None and out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is a file, not a folder; pick another {flag}")
    existing = next(p for p in (*([] if file else [out]), *out.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise ValueError(f"{flag} {out} lies under {existing}, which is a file; pick another {flag}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {out}: cannot write in {existing} ({e.strerror or e}); "
                         f"pick a writable {flag}") from None


@contextmanager
def hold(out):
    """Hold <out>/run.lock while a run works in `out`: a second process on the folder is refused, naming the first.

    The lock is minibert/locks.py's flock, which the kernel drops when its holder exits, however it exits (kill -9
    too): no stale lock is ever left to clean. A grid holds its own lock on <grid>/logs/<cell>.lock, another
    file, so its `train` child takes this one beside it. A folder this call made and nothing else wrote to
    (the run failed on its input) is removed again, while the lock is still held.
    """
    out = Path(out)
    made = [p for p in (out, *out.parents) if not p.exists()]  # what mkdir makes, innermost first
    out.mkdir(parents=True, exist_ok=True)
    lock = claim(out / LOCK)
    if lock is None:
        raise ValueError(f"--out {out} is in use by {holder(out / LOCK) or 'another process'}; "
                         "wait for it to end, or pick another --out")
    try:
        remove_leftovers(out)
        yield lock
    finally:
        if made and [p.name for p in out.iterdir()] == [LOCK]:
            (out / LOCK).unlink()
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:  # a parent another run has written to meanwhile stays
                    break
        lock.release()


def remove_leftovers(out: Path) -> None:
    """Remove the temporary files (.checkpoint.pt.<pid>.tmp, ...) that a run killed mid-write left in its folder, its
    sweep's sub-runs and their saved models, with a note. Only the holder of <out>/run.lock writes there, so none of
    them is being written."""
    folders = [out, *out.glob("lr_*")]
    found = [p for d in folders for f in (d, d / MODEL) if f.is_dir() for p in f.iterdir()
             if TMP.fullmatch(p.name) and p.is_file()]
    if not found:
        return
    size = sum(p.stat().st_size for p in found)
    for p in found:
        p.unlink(missing_ok=True)
    print(f"note: removed {len(found)} temporary file(s) ({size_text(size)}) that an interrupted write left in {out}: "
          f"{', '.join(str(p.relative_to(out)) for p in found[:3])}{' ...' if len(found) > 3 else ''}", file=sys.stderr)


# the run folder's own names: each must be a file (model: a folder) for the run to write it
FILES = (CONFIG, RESULT, METRICS, CORRUPTION, CHECKPOINT)


def check_names(out: Path) -> None:
    """Refuse a run folder where one of the files a run writes is a folder (or model/ a file): found now, not after
    an epoch of training, when the write fails."""
    for folder in (out, *sorted(out.glob("lr_*"))):
        for name in FILES:
            if (folder / name).is_dir():
                raise ValueError(f"{folder / name} is a folder, where train.py writes its {name} file; move it out of "
                                 f"{folder} and rerun")
        if (folder / MODEL).exists() and not (folder / MODEL).is_dir():
            raise ValueError(f"{folder / MODEL} is a file, where train.py saves the model (a folder); move it out "
                             f"of {folder} and rerun")


def identity_of(run_dir, not_identity) -> dict | None:
    """The run's identity as its config.json records it: the arguments that define what it computes (all but
    `not_identity`; its paths as typed), which checkpoint.pt carries so that a copy in another run's folder is known."""
    config = read_config(run_dir, resolve=False)
    return None if config is None else {k: v for k, v in config["args"].items() if k not in not_identity}


def check_out_dir(out, args: dict, resume: bool, announce: bool = True) -> dict | None:
    """Refuse a folder that holds something else; return the result of an identical finished run.

    `args` are the arguments that define what a run computes; an existing run must match them all.
    """
    out = Path(out)
    check_writable(out)
    if not out.is_dir() or not any(p.name != LOCK for p in out.iterdir()):
        return None
    check_names(out)
    config = read_config(out, resolve=False)  # compared with the arguments as typed
    if config is None:
        raise ValueError(f"--out {out} is not empty and holds no minibert run (no readable {CONFIG}); "
                         "pick a new --out")
    old = config["args"]
    diff = [f"{k} {old.get(k)!r} vs {v!r}" for k, v in args.items() if old.get(k) != v]
    if diff:
        raise ValueError(f"--out {out} holds a different run ({'; '.join(diff[:3])}); pick a new --out")
    if (result := read_result(out)) is not None:
        if announce:
            print(f"{out} holds this run, finished: reporting it, not rerunning")
        return result
    if not resume:
        raise ValueError(f"--out {out} holds an unfinished run of this configuration; "
                         "pass --resume to continue it, or pick a new --out")
    return None


def start_out_dir(out, config: dict) -> None:
    """Create the run folder and record its config.json (kept as it is when resuming), with where the run was started
    (ORIGIN, see read_config) and what the process saw (SEEN: CUDA_VISIBLE_DEVICES, the device's name, threads)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if read_config(out, resolve=False) is None:
        write_json(out / CONFIG, {**config, ORIGIN: os.path.relpath(Path.cwd().resolve(), out.resolve()),
                                  SEEN: seen(config)})


def seen(config: dict) -> dict:
    """What a run's process saw: the grid gives each child one GPU (CUDA_VISIBLE_DEVICES) or a share of the cores."""
    return {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device_name": config.get("gpu") or _cpu_name(), "threads": torch.get_num_threads()}


def _cpu_name() -> str:
    try:  # Linux names the CPU model here; platform.processor() says only "x86_64" there
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


# ---- what a run writes besides its JSON files: config.json's content, checkpoint.pt, the saved model --------

def run_info(cfg, data: Prepared) -> dict:
    """config.json: the arguments, the recipe's resolved values, sizes, device and versions."""
    def v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None
    device = data.device
    return {"args": asdict(cfg), "recipe": asdict(settings(cfg)), "device": str(device), "world_size": data.world,
            "precision": data.precision, "gpu": device_kind(data) if device.type == "cuda" else None,
            "max_length": data.max_length, "num_train": len(data.train), "num_test": len(data.test),
            "num_val": len(data.val) if data.val is not None else None,
            "label_names": data.dataset.label_names, "dataset_notes": data.dataset.notes,
            "checkpoint": portable(data.checkpoint), "command": sys.argv,
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                         **{p: v(p) for p in ("minibert", "numpy", "scikit-learn", "tokenizers")}}}


def portable(path) -> str:
    """A path as config.json (and a committed study's cell) names it: relative to the working folder when inside it
    (a study runs from the repository), `$MINIBERT_DATA/...` when under the data folder that variable names, else
    absolute. Links are kept, not followed: weights/<model> names the same model on any machine that links it."""
    path, here = Path(os.path.abspath(path)), Path.cwd()
    if path.is_relative_to(here):
        return str(path.relative_to(here))
    data = os.environ.get("MINIBERT_DATA")
    if data and path.is_relative_to(os.path.abspath(data)):
        return str(Path("$MINIBERT_DATA") / path.relative_to(os.path.abspath(data)))
    return str(path)


def _peek(path: Path) -> dict | None:
    """checkpoint.pt's small entries (epoch, identity, ...) without reading the weights (mmap); None when there is
    none or it cannot be read (load_state names a damaged one in its own words)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None


def checkpoint_epoch(run_dir) -> int:
    """The epoch <run_dir>/checkpoint.pt holds, read from the file (0 when it holds none): what a resume starts after.
    Read, not remembered: a signal can land between the checkpoint's rename and any record of it, and the file is
    the truth."""
    state = _peek(Path(run_dir) / CHECKPOINT)
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return epoch if isinstance(epoch, int) else 0


def check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint.pt that another run wrote (copied in from another run folder): its identity (identity_of:
    corruption and seed among them) must be this folder's config.json's. A checkpoint from before identities were
    recorded is resumed as it always was."""
    state = _peek(path)
    theirs = state.get("identity") if isinstance(state, dict) else None
    config = read_config(path.parent, resolve=False)
    if not isinstance(theirs, dict) or config is None:
        return
    ours = config["args"]
    diff = [f"{k} {v!r}, this run's {ours.get(k)!r}" for k, v in theirs.items() if ours.get(k) != v]
    if diff:
        raise ValueError(f"{path} belongs to another run ({'; '.join(diff[:3])}); move it out of {path.parent} and "
                         f"rerun with --resume (this run then starts from its first epoch)")


def rng_states(device, world: int = 1) -> list[dict]:
    """Every torchrun rank's random number generator states (the CPU's and its GPU's), in rank order. Each rank
    draws its own dropout masks, so a resumed run needs each rank's own states back. Collective: every rank
    calls it."""
    mine = {"rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device).cpu() if device.type == "cuda" else None}
    if world == 1:
        return [mine]
    states = [None] * world
    dist.all_gather_object(states, mine)
    return states


def save_state(path: Path, clf, optimizer, scheduler, scaler, rngs: list[dict], progress: dict) -> None:
    """checkpoint.pt: everything a resumed run needs to continue bit for bit, plus `progress` (epoch, history).
    rngs: rng_states(), one per rank."""
    state = {"model": clf.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None, **rngs[0], "rank_rngs": rngs,
             **progress}
    # into a file object: a full disk is then an OSError that atomic() names, not torch's "unexpected pos"
    try:
        with atomic(path, size=nbytes(state)) as tmp, open(tmp, "wb") as f:
            torch.save(state, f)
    except RuntimeError as e:  # Ctrl-C or SIGTERM mid-write: torch's zip writer then fails to close, hiding it
        if isinstance(e.__context__, KeyboardInterrupt):
            raise e.__context__ from None  # the run says which epoch the previous, intact checkpoint holds
        raise


# what torch.load and load_state_dict raise on a truncated, overwritten or foreign checkpoint.pt
DAMAGED = (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile)


def _damaged(path: Path, e: Exception) -> ValueError:
    return ValueError(f"{path} is damaged ({type(e).__name__}); delete it and rerun with --resume to start "
                      "this run again from its first epoch")


def load_state(path: Path, clf, optimizer, scheduler, scaler, device, rank: int = 0) -> dict:
    """Restore what save_state wrote, with this rank's own RNG states; returns its `progress`. A damaged file is a
    one-line error."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        clf.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except DAMAGED as e:
        raise _damaged(path, e) from None
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    ranks = state.get("rank_rngs") or [state]  # a checkpoint from before every rank's states were kept: rank 0's
    rng = ranks[rank] if rank < len(ranks) else ranks[0]  # more ranks than saved: they were not resumable anyway
    torch.set_rng_state(rng["rng"].cpu())
    if device.type == "cuda" and rng["cuda_rng"] is not None:
        torch.cuda.set_rng_state(rng["cuda_rng"].cpu(), device)
    return {k: state[k] for k in ("epoch", "history", "seconds", "train_tokens", "train_seconds")}


def load_model_state(path: Path, clf) -> int:
    """Only the model of what save_state wrote (a finished run's kept checkpoint); returns its epoch."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        clf.load_state_dict(state["model"])
        return state["epoch"]
    except DAMAGED as e:
        raise _damaged(path, e) from None


def save_model(clf, directory: Path, data: Prepared):
    """The classifier as HF-compatible safetensors, with the tokenizer files beside it."""
    save_pretrained(clf, directory, data.dataset.label_names)
    for name in (*TOKENIZER_FILES, "special_tokens_map.json"):
        if (data.checkpoint / name).is_file():
            shutil.copyfile(data.checkpoint / name, directory / name)
