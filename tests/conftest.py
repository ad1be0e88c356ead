"""Shared fixtures: tiny synthetic audio folders and composed Hydra configs, all under tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavenet.cli import REPO_ROOT, compose

torch.set_num_threads(1)  # determinism and fair sharing on CI's 2 cores


@pytest.fixture(scope="session", autouse=True)
def _caches_under_tmp(tmp_path_factory):
    """The compiled generation step and any cache a test leaves to its defaults go under the
    session's temporary folder (subprocesses inherit it), never into the user's ~/.cache."""
    import os

    folder = tmp_path_factory.mktemp("cache")
    saved = {k: os.environ.get(k) for k in ("WAVENET_CACHE", "XDG_CACHE_HOME")}
    os.environ["WAVENET_CACHE"] = str(folder / "wavenet")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def write_tone_folder(folder: Path, n_files: int = 4, seconds: float = 0.5, rate: int = 8000,
                      f0: float = 250.0, seed: int = 0) -> Path:
    """Harmonic tones with a little noise, one WAV per file, slightly different levels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(n_files):
        x = (0.5 * np.sin(2 * np.pi * f0 * t + i) + 0.25 * np.sin(2 * np.pi * 2 * f0 * t)
             + 0.01 * rng.standard_normal(t.size))
        sf.write(folder / f"tone_{i}.wav", (x * (0.6 + 0.1 * i)).astype(np.float32), rate)
    return folder


@pytest.fixture
def tone_folder(tmp_path) -> Path:
    return write_tone_folder(tmp_path / "audio")


def run_script(name: str, *overrides: str, cwd: Path, timeout: int = 300):
    """`python scripts/<name>.py <overrides>` in a subprocess, output captured."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / f"{name}.py"), *overrides],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def compose_job(config_name: str, overrides: list[str]):
    """The dataclass job that `python scripts/<config_name>.py <overrides>` would run."""
    return compose(config_name, overrides)


def tiny_train_overrides(root: Path, tmp_path: Path, steps: int = 4) -> list[str]:
    return [
        "model=debug", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.crop_samples=200", "data.num_workers=0", "data.audio.sample_rate=8000",
        f"train.max_steps={steps}", "train.batch_size=2", "train.warmup_steps=2",
        "train.eval_every=2", "train.eval_max_seconds=0.2", "train.sample_every=null",
        "train.checkpoint_every=2", "train.log_every=1", "train.progress=false",
    ]
