"""Vocoding a folder: every audio file (copy synthesis) or .npy log-mel array below it becomes a
WAV at the same relative path, generated in batches of similar lengths."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from wavenet.api import Model, write_wav
from wavenet.audio import AudioError, audio_extensions
from wavenet.features import frame_window
from wavenet.quantize import DEFAULT_PRECISION
from wavenet.runtime import progress_bar

log = logging.getLogger(__name__)


def vocodable_files(root: Path) -> list[Path]:
    """Audio files and .npy arrays below root (hidden folders skipped), sorted."""
    kinds = audio_extensions() | {".npy"}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in kinds
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise AudioError(f"mel_from={root} holds no audio files or .npy arrays to vocode")
    return files


def _frames_hint(path: Path, model: Model) -> int:
    """About how many frames a file has, to batch files of similar length."""
    try:
        if path.suffix.lower() == ".npy":
            return int(np.load(path, mmap_mode="r").shape[0])
        info = sf.info(str(path))
        samples = info.frames * model.sample_rate / info.samplerate
        return int(samples) // model.net.cfg.mel.hop_length
    except (OSError, ValueError, RuntimeError, IndexError):
        return 0  # unreadable: its own error comes when it is loaded


def vocode_folder(model: Model, root: Path, out_dir: Path, batch: int, temperature: float,
                  seed: int, method: str, threads: int | None, speaker: str | int | None,
                  progress: bool = True, precision: str = DEFAULT_PRECISION) -> list[Path]:
    """Vocode every file below `root` into out_dir/<relative path>.wav, `batch` at a time.

    Files are sorted by length so that a batch's streams are about as long as each other; the
    shorter ones are padded with silence frames and cut back to their own length. Batch b is
    drawn with seed + b.
    """
    hop = model.net.cfg.mel.hop_length
    files = sorted(vocodable_files(root), key=lambda p: (_frames_hint(p, model), str(p)))
    written: list[Path] = []
    made, start = 0, time.perf_counter()
    with progress_bar(total=len(files), unit="file", disable=not progress,
                      desc="vocoding") as bar:
        for b, first in enumerate(range(0, len(files), batch)):
            group = files[first:first + batch]
            feats = [torch.from_numpy(model.load_mel(p, "mel_from")[0]) for p in group]
            longest = max(f.shape[1] for f in feats)
            padded = np.stack([frame_window(f, 0, longest, model.net.cfg.mel.log_floor).numpy()
                               for f in feats])
            audio = model.generate(mel=padded, temperature=temperature, seed=seed + b,
                                   method=method, threads=threads, speaker=speaker,
                                   precision=precision)
            for path, f, stream in zip(group, feats, audio, strict=True):
                out = out_dir / path.relative_to(root).with_suffix(".wav")
                written.append(write_wav(out, stream[: f.shape[1] * hop], model.sample_rate))
                made += f.shape[1] * hop
            bar.update(len(group))
            seconds = made / model.sample_rate
            bar.set_postfix(audio=f"{seconds:.1f}s",
                            rtf=f"{(time.perf_counter() - start) / max(seconds, 1e-9):.2f}")
    elapsed = time.perf_counter() - start
    print(f"vocoded {len(written)} files ({made / model.sample_rate:.1f} s of audio) from {root} "
          f"into {out_dir} in {elapsed:.1f} s: real-time factor "
          f"{elapsed * model.sample_rate / max(made, 1):.2f} with batches of {batch}")
    return written
