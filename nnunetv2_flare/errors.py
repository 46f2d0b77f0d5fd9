"""The package's own error for a request it refuses: `UsageError`, one line that names the problem and the fix.

Library code (the inference API, dataset checks, atomic writes) raises it; only the commands map it to an exit code
(cli_errors.run_command: exit 2)."""
from __future__ import annotations


class UsageError(ValueError):
    """Misuse found before any work: the message is one line that names the problem and the fix.

    A ValueError, so callers of the Python API that already catch ValueError keep working."""

    def __init__(self, message: object) -> None:
        super().__init__(one_line(message))


def one_line(message: object) -> str:
    """Collapse any whitespace (ITK and nnU-Net put line breaks into their messages) into single spaces."""
    return " ".join(str(message).split())
