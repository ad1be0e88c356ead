"""Spectrogram pictures of audio, for files and for TensorBoard."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wavenet.files import replacing  # noqa: E402


def spectrogram_figure(audio: np.ndarray, sample_rate: int, title: str = ""):
    """A log-magnitude STFT picture of a mono waveform (T,), as a matplotlib Figure."""
    import librosa
    import librosa.display

    n_fft = 1024 if sample_rate > 16000 else 512
    spec = np.abs(librosa.stft(audio.astype(np.float32), n_fft=n_fft, hop_length=n_fft // 4))
    db = librosa.amplitude_to_db(spec, ref=np.max, top_db=80.0)
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    img = librosa.display.specshow(db, sr=sample_rate, hop_length=n_fft // 4, x_axis="time",
                                   y_axis="hz", ax=ax, cmap="magma")
    fig.colorbar(img, ax=ax, format="%+.0f dB")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_spectrogram(path: str | Path, audio: np.ndarray, sample_rate: int,
                     title: str = "") -> None:
    fig = spectrogram_figure(audio, sample_rate, title)
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
