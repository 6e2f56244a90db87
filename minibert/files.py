"""Files written atomically and read back safely: what the core (checkpoints) and the rings around it share.

Every writer in minibert goes through `atomic`: the new content lands under a temporary name and is renamed
over the old file, so a crash (or kill -9) leaves the old file or the new one, never half of one. A file that is
nevertheless damaged (a disk filled up, a hand edit) is reported with its path and read as missing. A write that
finds no room (a full disk, a quota, a file size limit) is one OSError (OutOfSpace) that names the folder and the
size, and leaves the old file as it was.
"""
import errno
import json
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

try:
    import resource  # Unix: the file size limit (ulimit -f) a write may run into
except ImportError:
    resource = None

# what a write answers when there is no room: a full disk, a full quota, a file over the size limit (ulimit -f)
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class OutOfSpace(OSError):
    """A write that found no room; its message names the file, the folder, the size it needed and what to do."""

    def __str__(self) -> str:
        return self.strerror


def size_text(n: int) -> str:
    """Bytes as a person reads them: 512 B, 47.3 MB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def nbytes(obj) -> int:
    """The bytes of the arrays (tensors) in a nested dict / list: about what writing them takes."""
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return int(getattr(obj, "nbytes", 0))


def _no_room(e: BaseException) -> int | None:
    """The errno of a write that found no room, looking through what torch and safetensors wrap it in, else None.

    torch.save into a Python file object raises RuntimeError("... unexpected pos ...") with the OSError as its
    context; safetensors' Rust error carries it as "(os error 28)" in its message."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_ROOM:
            return e.errno
        if (m := re.search(r"\(os error (\d+)\)", str(e))) and int(m[1]) in NO_ROOM:
            return int(m[1])
        e = e.__cause__ or e.__context__
    return None


def _free(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _out_of_space(path: Path, code: int, size: int | None, existed: bool) -> OutOfSpace:
    folder, need = path.parent, f"it needs {size_text(size)}" if size else "it needs more room"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource is not None else None
    if code == errno.EFBIG and limit not in (None, getattr(resource, "RLIM_INFINITY", None)):
        why, fix = f"{need}, over the file size limit of {size_text(limit)} (ulimit -f)", "raise the limit (ulimit -f)"
    elif code == errno.EFBIG:
        why, fix = f"{need}, more than this filesystem allows in one file", "use a folder on another filesystem"
    else:
        free = _free(folder)
        why = f"{need}, {size_text(free)} free" if free is not None else need
        fix = "free some space"
    kept = f"; the previous {path.name} is intact" if existed else ""
    return OutOfSpace(code, f"no room to write {path.name} in {folder} ({why}): {fix}{kept}", str(path))


def check_room(folder, size: int, path) -> None:
    """Refuse, before writing anything, the `size` bytes of `path` that `folder`'s disk has no room for (OutOfSpace)."""
    free = _free(Path(folder))
    if free is not None and size > free:
        raise _out_of_space(Path(path), errno.ENOSPC, size, Path(path).exists())


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


TMP = re.compile(r"\..+\.\d+\.tmp")  # atomic()'s temporary names: .<name>.<pid>.tmp


@contextmanager
def atomic(path, size: int | None = None):
    """Yield a temporary path beside `path` to write to; on success it is renamed over `path`.

    The name carries the process id, so processes writing the same file at once (grid shards) never
    share a temporary file; on an error the temporary file is removed. The file gets the mode a plain
    open() gives (0644 under the usual umask), also when the writer made it 0600 (safetensors does), so
    that a shared filesystem's other users can read it. `size`, the bytes the write takes when known, is
    checked against the free space first; a write that finds no room is an OutOfSpace naming the folder.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if size is not None:
        check_room(path.parent, size, path)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except Exception as e:
        if not isinstance(e, OutOfSpace) and (code := _no_room(e)) is not None:
            raise _out_of_space(path, code, size, path.exists()) from None
        if isinstance(e, OSError) and e.filename in (str(tmp), tmp):  # name the file asked for, not our temporary one
            raise OSError(f"cannot write {path} ({e.strerror})") from None
        raise
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
