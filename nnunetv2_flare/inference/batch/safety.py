"""Batches that lose nothing: a writable output folder checked before any work, one process per case, clean stops.

- Output folder: created and probed with a real file before the first case, so "not writable" is one line up front.
- Per-case claim: `.lock-<case>` held with `flock` while the case is predicted. A second process on the same output
  folder skips a case that is claimed (it is being written) and, after claiming, re-checks whether the output
  appeared meanwhile; so each case is predicted once and the outputs are complete files (atomic rename, atomic_io).
  The kernel drops a flock when its process dies, so a killed run leaves no lock that blocks the next one. (flock on
  NFS depends on the server; local disks are fine.)
- Temporaries of a case are removed only while holding its claim: never another live process's file.
- Ctrl-C / SIGTERM: KeyboardInterrupt unwinds through the writers (temporary removed) and the claim (released);
  finished outputs stay, a rerun skips them.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import uuid
from pathlib import Path
from typing import Iterator

from nnunetv2_flare.atomic_io import TMP_PREFIX

LOCK_PREFIX = ".lock-"


class OutputFolderError(RuntimeError):
    """The output folder cannot be used; one line, said before any case is read."""


def check_output_location(folder: str | os.PathLike) -> None:
    """The checks of `prepare_output_folder` that need no write: run with the other checks, before any model loads,
    so that a refused command leaves no folder behind."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        if existing == folder:
            raise OutputFolderError(f"output {folder} exists and is not a folder; give a folder with -o.")
        raise OutputFolderError(f"cannot create the output folder {folder} ({existing} is a file); give a folder "
                                f"with -o.")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputFolderError(f"the output folder {folder} cannot be created or written in ({existing} is not "
                                f"writable); choose another -o or fix the permissions.")


def prepare_output_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputFolderError(f"output {folder} exists and is not a folder; give a folder with -o.") from None
    except OSError as e:
        raise OutputFolderError(f"cannot create the output folder {folder} ({e.strerror}); choose another -o or "
                                f"fix the permissions.") from None
    probe = folder / f"{TMP_PREFIX}probe-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as e:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise OutputFolderError(f"the output folder {folder} is not writable ({e.strerror}); choose another -o or "
                                f"fix the permissions / free space.") from None
    return folder


def remove_case_temporaries(folder: Path, output_name: str) -> None:
    """Temporaries that a killed process left for this output (call only while holding the case's claim)."""
    for p in folder.glob(f"{TMP_PREFIX}*-{output_name}"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _acquire(lock: Path) -> int | None:
    """An open descriptor holding the flock of `lock`, or None when another live process holds it."""
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return None
            raise
        try:  # the file may have been released and unlinked between our open and flock: then try again
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


# a Ctrl-C (or SIGTERM, turned into one) between creating the lock file and reaching the clean-up that removes it
# would leave the file behind: the claim is taken with these held back, and they arrive inside the clean-up's reach
_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def claim_case(folder: Path, case_name: str) -> Iterator[bool]:
    """Yields True while this process holds the case's claim, False if another live process holds it."""
    lock = folder / f"{LOCK_PREFIX}{case_name}"
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        fd = _acquire(lock)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    if fd is None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        yield False
        return
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # while still holding the flock: nobody else can own this inode now
        os.close(fd)


def error_summary(error: BaseException) -> str:
    """A failed case's error in one line: a refusal as it is, an OSError as `Type: reason (file)`, anything else as
    `Type: its last non-empty line` (the line of a multi-line message that says what went wrong)."""
    from nnunetv2_flare.inference.inputs.checks import InputRefused

    if isinstance(error, InputRefused):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        where = f" ({Path(error.filename).name})" if error.filename else ""
        return f"{type(error).__name__}: {error.strerror}{where}"
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return f"{type(error).__name__}: {lines[-1][:300] if lines else repr(error)}"


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, a scheduler's stop) unwinds like Ctrl-C, so the same cleanup runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
