"""The operating-system side of running a grid: claiming a cell, the slots cells run in (a GPU, or a share of the CPU
cores), and `minibert train` children that die with the grid.

    lock = claim(out / "logs" / f"{cell}.lock")   # None: another process holds it; holder() says who
    with Children() as children:                  # SIGTERM / SIGINT to the grid stop every child first
        children.start(cmd, log, lock, slot.env)  # own process group, killed with the grid, even by kill -9
        child = children.wait_any()               # the next child to end (child.returncode)

A cell is claimed with an OS file lock (minibert/locks.py) on <out>/logs/<cell>.lock, taken without waiting. One
lock per cell (not per grid or per shard) is what lets several grids, shards or job-array tasks on one shared folder
share the work: each runs the cells nobody else holds and skips, naming the holder, the ones that are running
elsewhere.

Each child runs in its own process group, so a Ctrl-C at the terminal reaches only the grid, which then stops the
groups of all its children. If the grid is killed outright (kill -9), Linux's parent-death signal (prctl
PR_SET_PDEATHSIG) kills the children too, and each child shares its cell's lock, so the cell stays claimed until
both are gone: no child keeps running and writing after its grid, and no second one starts beside it.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import torch

from ..locks import Lock, me

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_SECONDS = 0.2  # how often the grid looks for a child that has ended; a cell runs for seconds to hours


# ---- slots: where the cells that run at once run --------------------------------------------------------------

@dataclass
class Slot:
    """Where one cell at a time runs: `env` is added to the child's environment (CUDA_VISIBLE_DEVICES, threads)."""
    name: str
    env: dict = field(default_factory=dict)


def visible_devices() -> list[str] | None:
    """The GPUs this process may use as CUDA_VISIBLE_DEVICES lists them (indices, UUIDs or MIG ids), or None when the
    variable is unset (every GPU of the machine is visible)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return None if value is None else [d.strip() for d in value.split(",") if d.strip()]


def _indices(devices: str) -> list[int]:
    try:
        indices = [int(d) for d in devices.split(",") if d.strip()]
    except ValueError:
        indices = []
    if not indices or min(indices) < 0 or len(set(indices)) < len(indices):
        raise ValueError(f"--devices {devices!r}: give distinct GPU indices separated by commas, e.g. 0,1,2,3")
    return indices


def slots(devices: str | None = None, workers: int | None = None) -> list[Slot]:
    """One Slot per cell that runs at once (see the grid's --devices and --workers).

    --devices names indices into the visible GPUs (CUDA_VISIBLE_DEVICES when set, as inside a Slurm allocation;
    else the machine's), one cell per GPU, each child seeing only its own. Without --devices, an allocation's
    GPUs (CUDA_VISIBLE_DEVICES set) are the default. --workers N runs N cells at once on the CPU. With several
    slots, each child gets an equal share of the CPU cores as OMP_NUM_THREADS, unless that variable is set: then
    it is the threads of each child. One slot with nothing changed runs the cells one by one, as `train` alone."""
    visible = visible_devices()
    if devices is not None and workers is not None:
        raise ValueError("--devices and --workers: give one (--devices runs one cell per GPU, --workers N cells at "
                         "once on the CPU)")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if devices is not None:
        indices = _indices(devices)
        count = len(visible) if visible is not None else torch.cuda.device_count()
        if (visible is not None or count) and max(indices) >= count:
            seen = f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}" if visible is not None else "this machine"
            raise ValueError(f"--devices {devices}: {seen} makes {count} GPU(s) visible (indices 0-{count - 1}); "
                             "name indices among them")
        gpus = [visible[i] if visible is not None else str(i) for i in indices]
    elif workers is None and visible:
        gpus = visible  # inside an allocation: the GPUs it gave us
    else:
        gpus = [None] * (workers or 1)
    if len(gpus) == 1 and gpus[0] is None:
        return [Slot("this machine")]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, cores // len(gpus)))
    return [Slot(f"CUDA_VISIBLE_DEVICES={gpu}" if gpu is not None else f"worker {i}",
                 {"OMP_NUM_THREADS": threads, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})})
            for i, gpu in enumerate(gpus)]


# ---- children ---------------------------------------------------------------------------------------------------

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


class Children:
    """The grid's running children. Inside `with`, SIGTERM or SIGINT to the grid stops every child's group (SIGTERM,
    a second signal SIGKILL); once they have ended, leaving `with` ends the grid as that signal would. A signal
    while no child runs acts at once (SIGINT: KeyboardInterrupt)."""

    def __init__(self):
        self.running: list[subprocess.Popen] = []
        self.stopped: list[int] = []  # the process groups signalled, killed outright once their leaders end
        self.stopping: list[int] = []  # the signals received

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _forward(self, sig, frame):
        # The main thread may be inside poll() or sleep() here: only signal the groups and let wait_any() see the
        # children end (waiting in a handler can deadlock).
        if not self.running:
            self._restore()
            if sig == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), sig)
            return
        for child in self.running:
            _signal_group(child.pid, signal.SIGKILL if self.stopping else signal.SIGTERM)
            self.stopped.append(child.pid)
        self.stopping.append(sig)

    def start(self, cmd: list[str], log, lock: Lock, env: dict) -> subprocess.Popen:
        """Start `cmd` with stdout and stderr into the open file `log`, in its own process group, holding `lock`
        too, with `env` added to the grid's environment."""
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                 start_new_session=True, pass_fds=(lock.fd,), preexec_fn=_die_with_parent())
        lock.note(f"{me()}, train pid {child.pid}")
        self.running.append(child)
        return child

    def wait_any(self) -> subprocess.Popen:
        """Wait for the next running child to end and return it (its returncode set)."""
        while True:
            for child in self.running:
                if child.poll() is not None:
                    self.running.remove(child)
                    return child
            time.sleep(POLL_SECONDS)

    def __exit__(self, kind, error, trace):
        if kind is not None:  # the grid itself failed: its children go with it
            for child in self.running:
                _signal_group(child.pid, signal.SIGKILL)
                child.wait()
        self._restore()
        if self.stopping:
            for pgid in self.stopped:
                _signal_group(pgid, signal.SIGKILL)  # anything a child started that is still in its group
            signal.signal(self.stopping[0], signal.SIG_DFL)
            os.kill(os.getpid(), self.stopping[0])  # end the grid as the signal would have
