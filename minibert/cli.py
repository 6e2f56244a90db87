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
epoch to resume from), and 130, the shell's status for a process ended by SIGINT.
"""
import argparse
import functools
import sys

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


def main_wrapper(main):
    """Decorate a CLI's main(argv) -> int so that USER_ERRORS become one line and exit status 2."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as e:
            return fail(str(e) or type(e).__name__)
        except KeyboardInterrupt as e:
            print(str(e) or "interrupted", file=sys.stderr)
            return 130

    return wrapped
