"""Device, thread and RNG helpers shared by the jobs."""

from __future__ import annotations

import contextlib
import functools

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


PRECISIONS = ("auto", "fp32", "tf32", "bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX-512 BF16 or AMX BF16), where autocast
    to bf16 trains faster than fp32; elsewhere it emulates it and may be slower."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def training_precision(device: torch.device, name: str) -> str:
    """`train.precision` as it runs: "auto" is bf16 on a CPU with native bf16 (measured: 1.3-1.7x
    the steps per minute and lower held-out NLL at the same wall clock) and fp32 elsewhere (on
    CUDA until the GPU matrix of `make bench` is measured)."""
    if name != "auto":
        return name
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


@contextlib.contextmanager
def precision(device: torch.device, name: str):
    """The arithmetic of a training forward: "fp32" (strict, TF32 off on CUDA), "tf32" (CUDA
    matmuls and convolutions on TF32 tensor cores; the CPU has none, so it is fp32 there) or
    "bf16" (autocast: bf16 compute, fp32 weights and loss); "auto" as `training_precision`
    resolves it. Restores the TF32 flags after."""
    name = training_precision(device, name)
    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = [f.allow_tf32 for f in flags]
    try:
        if device.type == "cuda":
            for f in flags:
                f.allow_tf32 = name == "tf32"
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=name == "bf16"):
            yield
    finally:
        for f, value in zip(flags, saved, strict=True):
            f.allow_tf32 = value
