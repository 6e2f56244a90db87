"""The operating-system side of running a grid: claiming a cell, and a train.py child that dies with the grid.

    lock = claim(out / "logs" / f"{cell}.lock")   # None: another process holds it; holder() says who
    with lock:                                    # released at the end (or when the process ends, however)
        rc = run_child(cmd, log, lock, cwd)       # own process group, killed with the grid, even by kill -9

A cell is claimed with an OS file lock (minibert/locks.py) on <out>/logs/<cell>.lock, taken without waiting. One
lock per cell (not per
grid or per shard) is what lets several grids, shards or job-array tasks on one shared folder share the work:
each runs the cells nobody else holds and skips, naming the holder, the ones that are running elsewhere.

The child runs in its own process group, so a Ctrl-C at the terminal reaches only the grid, which then stops
the whole group. If the grid is killed outright (kill -9), Linux's parent-death signal (prctl
PR_SET_PDEATHSIG) kills the child too, and the child shares the lock, so the cell stays claimed until both
are gone: no train.py keeps running and writing after its grid, and no second one starts beside it.
"""
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..locks import Lock, me

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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
    lock.note(f"{me()}, train.py pid {child.pid}")

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
