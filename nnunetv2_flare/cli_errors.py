"""One error type and one exit path for every console command of the package.

Exit codes (the same for every command, documented in docs/command-errors.md):
- 0: done;
- 1: the command ran, but some case of a batch failed (the others were still processed);
- 2: misuse, refused before any work: one line on stderr, `<command>: <what is wrong>; <the fix>`, no traceback;
- 130: interrupted (Ctrl-C / SIGTERM), after the command's own clean-up.

Commands and the library raise `UsageError` (errors.py; or return 1 for failed cases); `run_command` turns it into
the exit code and the one line. Unexpected exceptions (bugs) keep their traceback: hiding those would hide the bug.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn

from nnunetv2_flare.errors import UsageError, one_line

__all__ = ["EXIT_FAILED_CASES", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "FlareArgumentParser", "UsageError",
           "run_command"]

EXIT_OK = 0
EXIT_FAILED_CASES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class FlareArgumentParser(argparse.ArgumentParser):
    """argparse with the package's conventions: no prefix matching (-part_id must never be read as -p art_id) and
    errors as one line (argparse's default prints the whole usage block first)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {one_line(message)} (see {self.prog} -h)\n")
        sys.exit(EXIT_USAGE)


def run_command(prog: str, body: Callable[[], int | None], usage_errors: tuple[type[BaseException], ...] = (),
                interrupted: str | Callable[[], str] = "interrupted") -> int:
    """Run a command's body and map its outcome to the package's exit codes.

    `usage_errors`: further exception types that mean misuse for this command (e.g. a library's own error for a
    dataset that does not exist); they are reported like `UsageError`. `interrupted`: the line shown on Ctrl-C (or a
    function that makes it, for messages that name what was parsed)."""
    try:
        code = body()
    except (UsageError, *usage_errors) as e:
        print(f"{prog}: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        message = interrupted() if callable(interrupted) else interrupted
        print(f"{prog}: {one_line(message)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else int(code)
