"""Audio I/O, preprocessing and mu-law companding.

Every waveform here is float32 in [-1, 1]. Library functions take numpy arrays of shape (T,) for
a mono signal; mu-law works on numpy arrays or torch tensors of any shape.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from wavenet import checks
from wavenet.errors import UserError

log = logging.getLogger(__name__)


def audio_extensions() -> set[str]:
    """Extensions libsndfile reads here (lower case, with the dot), e.g. {'.wav', '.flac'}."""
    exts = {"." + fmt.lower() for fmt in sf.available_formats()}
    # available_formats() names containers, not every common suffix they use.
    aliases = {".aiff": [".aif", ".aifc"], ".ogg": [".oga", ".opus"], ".wav": [".wave"]}
    for fmt, extra in aliases.items():
        if fmt in exts:
            exts.update(extra)
    return exts


class AudioError(UserError):
    """An audio file that cannot be used; the message names the file and what to do."""


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read any format libsndfile knows and downmix to mono.

    Returns:
        (audio, sample_rate): float32 array (T,) in [-1, 1] and the file's own rate.
    """
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err}); re-encode or remove it") from err
    if not np.isfinite(data).all():
        # Float files can hold NaN or inf: no level, trim or resampling of them is meaningful.
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError(f"{path}: {bad} samples are NaN or infinite; repair or remove the file")
    return data.mean(axis=1), int(rate)


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr, through librosa); returns float32 (T',)."""
    if orig_rate == target_rate:
        return audio
    import librosa  # deferred: librosa's import costs about a second

    return librosa.resample(audio, orig_sr=orig_rate, target_sr=target_rate).astype(np.float32)


@dataclass
class AudioConfig:
    """How source audio is turned into the training signal.

    Attributes:
        sample_rate: rate every file is resampled to (Hz).
        trim_db: trim leading/trailing audio quieter than this many dB below the file's peak;
            None keeps everything.
        normalize: "peak" scales each file to `peak_level`, "rms" scales it to `rms_level_db`
            dBFS (then limits the peak to `peak_level`), None leaves levels alone.
        peak_level: target (or ceiling) absolute peak, 0..1.
        rms_level_db: target RMS level in dBFS for "rms".
    """

    sample_rate: int = 16000
    trim_db: float | None = 40.0
    normalize: str | None = "peak"
    peak_level: float = 0.95
    rms_level_db: float = -20.0

    def __post_init__(self):
        k = "data.audio."
        checks.integer(k + "sample_rate", self.sample_rate, 1000, 384000)
        checks.number(k + "trim_db", self.trim_db, 0, lo_open=True, optional=True)
        checks.choice(k + "normalize", self.normalize, ("peak", "rms", None))
        checks.number(k + "peak_level", self.peak_level, 0, 1, lo_open=True)
        checks.number(k + "rms_level_db", self.rms_level_db, -100, 0)


def trim_silence(audio: np.ndarray, top_db: float, min_keep: int) -> np.ndarray:
    """Trim leading and trailing silence, never leaving fewer than `min_keep` samples.

    A file that is silence throughout (or would shrink below `min_keep`) is returned untrimmed so
    that trimming never silently drops a file; the caller decides what to do with a quiet file.
    """
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio
    loud = np.flatnonzero(np.abs(audio) >= peak * 10.0 ** (-top_db / 20.0))
    start, stop = int(loud[0]), int(loud[-1]) + 1
    if stop - start < min_keep:
        return audio
    return audio[start:stop]


def normalize_level(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Scale one file's level as `cfg.normalize` says; silence stays silence."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if cfg.normalize is None or peak == 0.0:
        return audio
    if cfg.normalize == "peak":
        gain = cfg.peak_level / peak
    elif cfg.normalize == "rms":
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        gain = min(10.0 ** (cfg.rms_level_db / 20.0) / rms, cfg.peak_level / peak)
    else:
        raise UserError(f"data.audio.normalize={cfg.normalize!r}: use peak, rms or null")
    return (audio * gain).astype(np.float32)


def load_for_training(path: str | Path, cfg: AudioConfig) -> np.ndarray:
    """Read, downmix, resample, trim and normalize one file. Returns float32 (T,).

    Trimming never leaves less than a tenth of a second (it keeps such a file whole): a rule of
    the audio config alone, so that one cache serves every model trained on it.
    """
    audio, rate = read_audio(path)
    audio = resample(audio, rate, cfg.sample_rate)
    if cfg.trim_db is not None:
        audio = trim_silence(audio, cfg.trim_db, max(1, cfg.sample_rate // 10))
    return normalize_level(audio, cfg)


def mu_law_encode(audio, quantization_channels: int = 256):
    """Companding and quantization as in the WaveNet paper (agrees with torchaudio's).

    Args:
        audio: float array or tensor in [-1, 1], any shape.
    Returns:
        integer classes in [0, quantization_channels - 1], same shape (int64).
    """
    mu = quantization_channels - 1
    if isinstance(audio, torch.Tensor):
        x = audio.clamp(-1.0, 1.0)
        y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
        return ((y + 1) / 2 * mu + 0.5).to(torch.int64)
    x = np.clip(audio, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    return ((y + 1) / 2 * mu + 0.5).astype(np.int64)


def _class_amplitude(position, mu: int):
    """Amplitude at a (fractional) class position, inverting `mu_law_encode`'s companding.

    Keeps its argument's kind and float dtype: numpy array or tensor.
    """
    y = position / mu * 2 - 1
    if isinstance(y, torch.Tensor):
        return torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu
    return np.sign(y) * np.expm1(np.abs(y) * math.log1p(mu)) / mu


def mu_law_decode(classes, quantization_channels: int = 256):
    """Inverse of `mu_law_encode`: integer classes -> float32 waveform in [-1, 1]."""
    mu = quantization_channels - 1
    if isinstance(classes, torch.Tensor):
        return _class_amplitude(classes.to(torch.float32), mu)
    return _class_amplitude(np.asarray(classes, dtype=np.float32), mu).astype(np.float32)


def mu_law_edges(quantization_channels: int = 256) -> np.ndarray:
    """(Q + 1,) float64 amplitudes bounding each class of `mu_law_encode`: class k holds
    [edges[k], edges[k + 1]) (the end classes also hold everything beyond ±1)."""
    edges = _class_amplitude(np.arange(quantization_channels + 1) - 0.5, quantization_channels - 1)
    edges[0], edges[-1] = -1.0, 1.0
    return edges


def class_entropy_bits(classes: np.ndarray, n_classes: int) -> float:
    """Entropy (bits) of the histogram of quantized samples: the NLL of a memoryless model."""
    counts = np.bincount(np.asarray(classes).ravel(), minlength=n_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())
