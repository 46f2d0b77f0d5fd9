"""Short digests of bytes and files: what identifies a model (its plans, dataset.json and checkpoints) and, in the
request record of a label file (batch/request_record.py), an input and the options."""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Iterable

DIGEST_HEX = 10  # 40 bits: the request record compares a handful of files, not a population


def short_digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little") + data)  # lengths first: ("ab", "c") is not ("a", "bc")
    return h.hexdigest()[:DIGEST_HEX]


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), remembered per path, size and modification time: a fold ensemble's
    checkpoints are hashed once per process, however many phases and backends ask."""
    stat = os.stat(path)
    return _file_sha256(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


def model_digest(folder: str | os.PathLike, checkpoint_files: Iterable[str | os.PathLike]) -> str:
    """What makes a model folder's predictions: its plans, its dataset.json (labels) and its checkpoints' bytes;
    not where it lies."""
    folder = Path(folder)
    return short_digest(*(file_digest(folder / name) for name in ("plans.json", "dataset.json")),
                        *(file_digest(c) for c in checkpoint_files))
