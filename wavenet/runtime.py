"""Device, thread and RNG helpers shared by the jobs."""

from __future__ import annotations

import torch

from wavenet.errors import UserError


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name!r} but no CUDA GPU is visible; use device=cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"device={name!r}: use auto, cpu or cuda")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def progress_bar(**kwargs):
    """A tqdm bar; redrawn at most every 30 s when stderr is a log file rather than a terminal."""
    import sys

    from tqdm import tqdm

    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(dynamic_ncols=True, **kwargs)
