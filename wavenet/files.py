"""Writing files so that a crash, kill -9 or Ctrl-C never leaves a torn one under their name:
each is written beside its name and renamed over it when complete."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write the file to (hidden, ending in .tmp<pid>, so that
    a cleanup can tell whether its writer is gone); it replaces `path` when the block ends, and
    is removed if the block raises. Writers that infer a format from the suffix must be told."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, text: str) -> None:
    """`Path.write_text`, all or nothing."""
    with replacing(path) as tmp:
        tmp.write_text(text)
