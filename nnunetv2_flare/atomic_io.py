"""Write files so that readers only ever see a complete old file or a complete new one.

Every writer goes to a hidden temporary file in the destination folder (same file system, same extension so that
SimpleITK picks the right format) and is renamed into place with `os.replace`, which is atomic on POSIX.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import SimpleITK as sitk

TMP_PREFIX = ".tmp-"


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A unique hidden name next to `path` that ends like `path` (".nii.gz" stays ".nii.gz")."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `path`, on any error it is removed."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def write_image_atomic(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=compress))


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    def _write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, _write)


def refuse_to_replace(path: str | os.PathLike, is_ours: Callable[[Any], bool], option: str, kind: str) -> None:
    """A command writes a JSON file (`option` names it, `kind` says what it is) only over nothing or over one of its
    own (`is_ours` of its content): never over a file it did not write for this purpose. UsageError otherwise."""
    from nnunetv2_flare.errors import UsageError

    path = Path(path)
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:  # not JSON: a CT or a label map is never read whole
            data = json.loads(path.read_text()) if f.read(4096).lstrip().startswith(b"{") else None
        problem = "is not a JSON file" if data is None else None if is_ours(data) else "is a JSON file of another kind"
    except (OSError, ValueError):  # a folder, unreadable, not JSON after all
        problem = "is not a JSON file"
    if problem:
        raise UsageError(f"{option} {path} exists and {problem}, not {kind} of this command, and is never written "
                         f"over; choose another name.")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporaries left by a killed process (e.g. Ctrl-C between write and rename)."""
    removed = []
    for p in Path(folder).glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed
