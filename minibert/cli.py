"""What every command line of minibert shares: a user's mistake is one line on stderr and exit status 2.

    from minibert.cli import Parser, main_wrapper

    @main_wrapper
    def main(argv=None) -> int:
        args = Parser(prog="python -m minibert.x").parse_args(argv)   # bad flags: one line, exit 2
        ...                                                           # ValueError / OSError: one line, exit 2
                                                                      # Ctrl-C: one line, exit 130

A traceback is for a bug in minibert; a wrong flag, a missing file or an unwritable folder is the user's to
fix, so it gets one line that names the problem (the exception's message must name the file and the fix).
Ctrl-C is the user's too: one line, the KeyboardInterrupt's message when it has one (train.py's names the
epoch to resume from), and 130, the shell's status for a process ended by SIGINT. SIGTERM (what `kill`, Slurm and
a job's time limit send) is handled as Ctrl-C is, with the same line, and ends with 143 (128 + SIGTERM).
"""
import argparse
import functools
import signal
import sys
import threading
from contextlib import contextmanager

# What a user can cause and fix: bad values and specs, missing or unreadable files and folders, a missing extra.
USER_ERRORS = (ValueError, OSError, ImportError)


def fail(message: str) -> int:
    """Print `error: message` on stderr and return the exit status for a user's mistake."""
    print(f"error: {message}", file=sys.stderr)
    return 2


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (`error: ... (see --help)`) instead of usage plus message."""

    def error(self, message):
        sys.exit(fail(f"{message} (see --help)"))


@contextmanager
def sigterm_as_ctrl_c(received: list):
    """While the block runs, SIGTERM raises KeyboardInterrupt as Ctrl-C does (and is noted in `received`), so that
    what cleans up after a Ctrl-C (train.py names the epoch to resume from) runs for it too. Only where nobody has
    set a handler already (the main thread of a plain process): an embedding program's own handler stays."""
    def handler(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    mine = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if mine:
        signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if mine:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main_wrapper(main):
    """Decorate a CLI's main(argv) -> int so that USER_ERRORS become one line and exit status 2."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        received = []
        try:
            with sigterm_as_ctrl_c(received):
                return main(*args, **kwargs)
        except USER_ERRORS as e:
            return fail(str(e) or type(e).__name__)
        except KeyboardInterrupt as e:
            print(str(e) or "interrupted", file=sys.stderr)
            return 128 + signal.SIGTERM if received else 130

    return wrapped
