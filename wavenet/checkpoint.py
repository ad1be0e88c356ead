"""One self-describing checkpoint file: config, weights, optimizer, EMA, step, RNG states.

Files are written atomically (temporary file, fsync, rename), so a crash or Ctrl-C never leaves
a half-written checkpoint under a checkpoint's name. They load with `weights_only=True`.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import torch

from wavenet.audio import AudioConfig
from wavenet.config import TrainConfig, TrainJob
from wavenet.data import DataConfig
from wavenet.errors import UserError
from wavenet.files import replacing
from wavenet.model import WaveNet, WaveNetConfig

FORMAT = "wavenet-checkpoint-v1"
STEP_FILE = re.compile(r"step-(\d+)\.pt$")


class CheckpointError(UserError):
    """A file that is not a usable checkpoint; the message names it."""


def save_atomic(obj: dict, path: Path) -> None:
    """Write `obj` to a temporary file beside `path`, then rename it over `path`.

    A crash, kill -9 or full disk at any moment leaves either the old file or the new one,
    never a torn one. The checkpoint is serialized in memory first so that a failed write is a
    plain OSError naming the file (torch.save would wrap it in a RuntimeError).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        try:
            _write(tmp, buffer.getbuffer())
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(path)) from err
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write(path: Path, data: memoryview) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load(path: str | Path, map_location="cpu") -> dict:
    """Load and sanity-check a checkpoint file (no code runs from it)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, not a torch file at all
        raise CheckpointError(f"{path} is not a readable wavenet checkpoint "
                              f"({err.__class__.__name__}); pick another file from the run's "
                              "checkpoints/ folder") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a wavenet checkpoint (format {FORMAT} expected)")
    return ckpt


def job_from_dict(d: dict) -> TrainJob:
    """Rebuild the TrainJob dataclass stored in a checkpoint."""
    data = dict(d["data"])
    data["audio"] = AudioConfig(**data["audio"])
    return TrainJob(name=d["name"], model=WaveNetConfig(**d["model"]), data=DataConfig(**data),
                    train=TrainConfig(**d["train"]))


def step_checkpoints(folder: Path) -> list[Path]:
    """step-*.pt files in `folder`, oldest step first."""
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.pt")
             if (m := STEP_FILE.search(p.name))]
    return [p for _, p in sorted(found)]


def set_aside_after(folder: Path, step: int) -> Path | None:
    """Move what a run folder's checkpoints/ holds from beyond `step` (step files past it, and
    best.pt if it was written past it) into folder/superseded-<step>/.

    A resume from an earlier checkpoint of the same run starts another history at `step`; left
    in place, the later files would outrank its new checkpoints (pruning keeps the highest
    steps, resume=auto and sampling pick them up). Nothing is deleted.

    Returns:
        The folder the files went to, or None when there were none.
    """
    later = [p for p in step_checkpoints(folder)
             if int(STEP_FILE.search(p.name).group(1)) > step]
    if not later:
        return None
    best = folder / "best.pt"
    if best.is_file():
        try:
            beyond = load(best).get("step", 0) > step
        except CheckpointError:  # unreadable: keep it, out of the way
            beyond = True
        if beyond:
            later.append(best)
    aside, n = folder / f"superseded-{step:08d}", 1
    while aside.exists():  # resumed from this step before: keep that history too
        n += 1
        aside = folder / f"superseded-{step:08d}-{n}"
    aside.mkdir()
    for path in later:
        os.replace(path, aside / path.name)
    return aside


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a run folder -> its best.pt, else its newest step checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        if (folder / "best.pt").is_file():
            return folder / "best.pt"
        steps = step_checkpoints(folder)
        if not steps:
            raise CheckpointError(f"no checkpoint (best.pt or step-*.pt) in {folder}")
        return steps[-1]
    return path


def newest(path: str | Path) -> Path:
    """A checkpoint file, or a run folder -> its newest step checkpoint (what a resume wants;
    `resolve` picks best.pt for sampling)."""
    path = Path(path).expanduser()
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        steps = step_checkpoints(folder)
        if not steps:
            raise CheckpointError(f"no step checkpoint (step-*.pt) in {folder}")
        return steps[-1]
    return path


def load_model(path: str | Path, use_ema: bool = True, device="cpu") -> tuple[WaveNet, dict]:
    """Build the model stored in a checkpoint, with its EMA weights when asked and present.

    Returns:
        (model in eval mode, the checkpoint dict).
    """
    ckpt = load(resolve(path))
    model = WaveNet(WaveNetConfig(**ckpt["config"]["model"]))
    weights = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(weights)
    return model.to(device).eval(), ckpt
