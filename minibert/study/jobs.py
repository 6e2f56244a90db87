"""The operating-system side of running a grid: claiming a cell, and a train.py child that dies with the grid.

    lock = claim(out / "logs" / f"{cell}.lock")   # None: another process holds it; holder() says who
    with lock:                                    # released at the end (or when the process ends, however)
        rc = run_child(cmd, log, lock, cwd)       # own process group, killed with the grid, even by kill -9

A cell is claimed with an OS file lock (flock) on <out>/logs/<cell>.lock, taken without waiting. The kernel
drops the lock when its holder exits, however it exits, so there are never stale locks to clean: a lock file
left behind holds no lock, only the last holder's pid and host for the message. One lock per cell (not per
grid or per shard) is what lets several grids, shards or job-array tasks on one shared folder share the work:
each runs the cells nobody else holds and skips, naming the holder, the ones that are running elsewhere.
flock works across machines on NFS (Linux maps it to NFS byte-range locks); Lustre needs `-o flock`.

The child runs in its own process group, so a Ctrl-C at the terminal reaches only the grid, which then stops
the whole group. If the grid is killed outright (kill -9), Linux's parent-death signal (prctl
PR_SET_PDEATHSIG) kills the child too, and the child shares the lock, so the cell stays claimed until both
are gone: no train.py keeps running and writing after its grid, and no second one starts beside it.
"""
import ctypes
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _me() -> str:
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
    lock.note(_me())
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


def _die_with_parent():
    """The child's preexec_fn: ask Linux to SIGKILL it when the grid dies, and go if the grid already has."""
    parent = os.getpid()  # runs in the grid, when the function is made: the pid to outlive

    if not sys.platform.startswith("linux"):
        return None  # elsewhere the grid's signal handlers (SIGTERM, SIGINT) are what stops the child
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it

    def preexec():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the grid died between fork and prctl: nobody would signal us
            os._exit(1)
    return preexec


def _signal_group(pgid: int, sig: int):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group has already gone


def run_child(cmd: list[str], log, lock: Lock, cwd: Path) -> int:
    """Run `cmd` with stdout and stderr into the open file `log`, in its own process group, holding `lock` too.

    SIGTERM or SIGINT to the grid stops the child's group (SIGTERM, then SIGKILL for what is left) and then
    ends the grid as that signal would; kill -9 of the grid kills the child through the parent-death signal.
    Returns the child's exit status.
    """
    child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                             pass_fds=(lock.fd,), preexec_fn=_die_with_parent())
    lock.note(f"{_me()}, train.py pid {child.pid}")

    stopping = []

    def forward(sig, frame):
        # The main thread is inside child.wait() here: only signal the group and let that wait see the child
        # end (a second wait in a handler deadlocks). A second signal escalates to SIGKILL.
        _signal_group(child.pid, signal.SIGKILL if stopping else signal.SIGTERM)
        stopping.append(sig)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        _signal_group(child.pid, signal.SIGKILL)  # anything train.py started that is still in its group
        signal.signal(stopping[0], signal.SIG_DFL)
        os.kill(os.getpid(), stopping[0])  # end the grid as the signal would have
    return rc
