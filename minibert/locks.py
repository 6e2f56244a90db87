"""One process at a time: OS file locks (flock) on a run folder, a grid cell or a shared file.

    lock = claim(path)        # None: another process holds it; holder(path) says who ('pid 12 on host since ...')
    with lock: ...            # released at the end, or when the process ends, however it ends (kill -9 too)
    with locked(path): ...    # wait for the lock: a short read-modify-write of a shared file

The kernel drops a lock when its holder exits, so there are never stale locks to clean: a lock file left behind
holds no lock, only the last holder's pid and host for the message. flock works across machines on NFS (Linux maps
it to NFS byte-range locks); Lustre needs `-o flock`.
"""
import errno
import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path


def me() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"


class Lock:
    """A held flock on an open lock file; release() (or the holder's exit) drops it."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def note(self, text: str):
        """Record who holds the lock (read by holder() in other processes); the flock is what counts."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)

    def release(self):
        os.close(self.fd)  # closing the last descriptor of the open file drops the flock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _flock(path: Path, flags: int) -> int | None:
    """An open descriptor of `path` holding its exclusive flock, or None when another process holds it."""
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise OSError(f"cannot lock {path} ({e.strerror}): the grid folder's filesystem has no file locks "
                      "(on Lustre mount it with -o flock); use a local or NFS folder") from None
    return fd


def claim(path: Path) -> Lock | None:
    """Take the lock at `path` without waiting; None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _flock(path, os.O_RDWR | os.O_CREAT)
    if fd is None:
        return None
    lock = Lock(path, fd)
    lock.note(me())
    return lock


def holder(path: Path) -> str | None:
    """Who holds the lock at `path` ('pid 12 on host since ...'), or None when nobody does. Writes nothing."""
    if not path.is_file():
        return None
    fd = _flock(path, os.O_RDONLY)
    if fd is not None:
        os.close(fd)
        return None
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextmanager
def locked(path: Path):
    """Hold the lock at `path` for a short read-modify-write of a shared file, waiting for it if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
