"""Domain checks for config values, run when a job's dataclasses are built (before any work).

Each check raises a `UserError` whose one line names the key, the value and what is allowed, e.g.
`train.lr=-0.001: must be > 0`. Paths get `~` expanded here, once, for every job.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re

import numpy as np

from wavenet.errors import UserError


def shown(value) -> str:
    """A value as it is written in an override (None is null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _fail(key: str, value, allowed: str):
    raise UserError(f"{key}={shown(value)}: {allowed}")


def integer(key: str, value, lo: int, hi: int | None = None, optional: bool = False) -> None:
    """An int in [lo, hi] (None allowed if optional)."""
    if value is None and optional:
        return
    if value is None or isinstance(value, (bool, np.bool_)) \
            or not isinstance(value, numbers.Integral) or value < lo \
            or (hi is not None and value > hi):
        span = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
        _fail(key, value, f"must be {span}" + (" or null" if optional else ""))


def number(key: str, value, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False, optional: bool = False,
           hint: str = "") -> None:
    """A finite number within the bounds (open or closed); None allowed if optional."""
    if value is None and optional:
        return
    ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
          and math.isfinite(value))
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if ok:
        return
    if lo is not None and hi is not None:
        span = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        span = f"{'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        span = f"{'<' if hi_open else '<='} {hi:g}"
    else:
        span = "a finite number"
    _fail(key, value, f"must be {span}" + (" or null" if optional else "")
          + (f" ({hint})" if hint else ""))


def choice(key: str, value, options: tuple) -> None:
    if value not in options:
        _fail(key, value, "use " + ", ".join(shown(o) for o in options))


def device(key: str, value: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(value)):
        _fail(key, value, "use auto, cpu, cuda or cuda:N")


def writable_file(key: str, value: str | None) -> None:
    """A result file's path: checked before the work whose result it holds."""
    if value is not None and os.path.isdir(value):
        raise UserError(f"{key}={value} is a folder: give a file path, e.g. {key}={value}/"
                        "result.json")


def path(value: str | None) -> str | None:
    """A path field with `~` expanded (None and the mandatory marker ??? pass through)."""
    return None if value is None else os.path.expanduser(value)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(key: str, value: str | None) -> float | None:
    """"90s", "10m", "2h", "1h30m", "1.5h", "1d" or plain seconds ("600") -> seconds."""
    if value is None:
        return None
    text = str(value).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d*)?", text):
        seconds = float(text)
    elif re.fullmatch(r"(\d+(\.\d*)?[smhd])+", text):
        seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d*)?)([smhd])",
                                                                  text))
    else:
        seconds = -1.0
    if not seconds > 0:
        _fail(key, value, "must be a positive duration such as 90s, 10m, 2h, 1h30m or 1d")
    return seconds


def validate(job) -> None:
    """Check a job dataclass again, nested ones first: fields set after it was built (from
    Python) get the same checks as values from the command line."""
    for f in dataclasses.fields(job):
        value = getattr(job, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value)
    if hasattr(job, "__post_init__"):
        job.__post_init__()
