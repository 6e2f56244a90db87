"""Files written atomically and read back safely: what the core (checkpoints) and the rings around it share.

Every writer in minibert goes through `atomic`: the new content lands under a temporary name and is renamed
over the old file, so a crash (or kill -9) leaves the old file or the new one, never half of one. A file that is
nevertheless damaged (a disk filled up, a hand edit) is reported with its path and read as missing.
"""
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


@contextmanager
def atomic(path):
    """Yield a temporary path beside `path` to write to; on success it is renamed over `path`.

    The name carries the process id, so processes writing the same file at once (grid shards) never
    share a temporary file; on an error the temporary file is removed. The file gets the mode a plain
    open() gives (0644 under the usual umask), also when the writer made it 0600 (safetensors does), so
    that a shared filesystem's other users can read it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj, indent: int | None = 2) -> None:
    """Write `obj` as JSON atomically (NaN and inf are refused: they are not JSON)."""
    write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def write_jsonl(path, rows: list) -> None:
    """Write one JSON object per line, atomically."""
    write_text(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))


# ---- reading ------------------------------------------------------------------------------------

def load_json(path) -> tuple[object, str | None]:
    """(parsed JSON, None); (None, None) when `path` is missing; (None, why) when it is damaged."""
    try:
        return json.loads(Path(path).read_text()), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as e:  # ValueError: bad JSON, and bytes that are not UTF-8
        return None, str(e)


def read_json(path):
    """The parsed JSON of `path`; None when it is missing, or damaged (then a warning names the file)."""
    obj, why = load_json(path)
    if why is not None:
        print(f"warning: {path} is damaged ({why}); treating it as missing", file=sys.stderr)
    return obj
