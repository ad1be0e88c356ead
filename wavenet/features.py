"""Log-mel features: one function for training, copy synthesis and evaluation alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wavenet import checks


@dataclass
class MelConfig:
    """Log-mel spectrogram parameters (the sample rate is the data's).

    Frame i is centred on sample i·hop_length; a signal of T samples has T // hop_length + 1
    frames. Values are natural-log magnitudes (power 1, Slaney mel scale and area
    normalization), floored at `log_floor` before the log.

    Attributes:
        n_fft: FFT size.
        win_length: window length; None uses n_fft.
        hop_length: samples between frames; the upsampler's scales multiply to this.
        n_mels: mel bands.
        f_min, f_max: band edges in Hz; f_max None is half the sample rate.
        log_floor: magnitudes below this are clamped before the log.
        sample_rate: the audio's rate; training fills it in from data.audio.sample_rate, so
            that a checkpoint's features are fully described (linear prediction needs it).
    """

    n_fft: int = 1024
    win_length: int | None = None
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    log_floor: float = 1e-5
    sample_rate: int | None = None

    def __post_init__(self):
        k = "model.mel."
        checks.integer(k + "n_fft", self.n_fft, 8, 65536)
        checks.integer(k + "win_length", self.win_length, 1, self.n_fft, optional=True)
        checks.integer(k + "hop_length", self.hop_length, 1, 65536)
        checks.integer(k + "n_mels", self.n_mels, 1, self.n_fft // 2 + 1)
        checks.number(k + "f_min", self.f_min, 0)
        checks.number(k + "f_max", self.f_max, self.f_min, lo_open=True, optional=True)
        checks.number(k + "log_floor", self.log_floor, 0, 1, lo_open=True, hi_open=True)
        checks.integer(k + "sample_rate", self.sample_rate, 1, optional=True)


DB_PER_NEPER = 20.0 / np.log(10.0)  # a natural-log magnitude ratio in dB


def framed_input(audio, cfg: MelConfig) -> tuple[torch.Tensor, int]:
    """Audio (…, T) (numpy or torch) as a float tensor ready for centred STFT frames, and how
    many frames it has: T // hop_length + 1 (the STFT's output is cut to that many).

    Centred frames reflect-pad by n_fft/2, which needs more samples than that: a shorter
    signal is taken as followed by silence."""
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not torch.is_tensor(audio)
                        else audio).float()
    frames = x.shape[-1] // cfg.hop_length + 1
    if x.shape[-1] <= cfg.n_fft // 2:
        x = torch.nn.functional.pad(x, (0, cfg.n_fft // 2 + 1 - x.shape[-1]))
    return x, frames


def log_mel(audio, sample_rate: int, cfg: MelConfig) -> torch.Tensor:
    """Log-mel spectrogram.

    Args:
        audio: (T,) or (B, T) float waveform in [-1, 1] (numpy or torch).
    Returns:
        (n_mels, frames) or (B, n_mels, frames) float32, frames = T // hop_length + 1.
    """
    import torchaudio  # deferred: only conditioned models need it

    x, frames = framed_input(audio, cfg)
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
        hop_length=cfg.hop_length, f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels,
        power=1.0, center=True, norm="slaney", mel_scale="slaney").to(x.device)
    return torch.log(transform(x).clamp(min=cfg.log_floor))[..., :frames]


def frames_for(first: int, last: int, hop: int, context: int) -> tuple[int, int]:
    """The frames lo … hi-1 that condition samples first … last (inclusive) exactly as the
    whole utterance does: those covering them (frame j covers samples j·hop … (j+1)·hop - 1)
    and `context` more on each side (`WaveNetConfig.mel_context_frames`)."""
    return first // hop - context, last // hop + 1 + context


def frame_window(frames: torch.Tensor, first: int, stop: int, log_floor: float
                 ) -> torch.Tensor:
    """Frames first … stop-1 of an utterance's frames (…, n_mels, F); frames outside 0 … F-1
    are outside the utterance, and are silence (the log floor).

    Returns:
        (…, n_mels, stop - first).
    """
    silence = float(np.log(log_floor))
    lo, hi = max(first, 0), min(stop, frames.shape[-1])
    if hi <= lo:  # wholly outside the utterance
        return frames.new_full((*frames.shape[:-1], stop - first), silence)
    window = frames[..., lo:hi]
    if lo - first or stop - hi:
        window = torch.nn.functional.pad(window, (lo - first, stop - hi), value=silence)
    return window


def log_mel_distance_db(reference, synthesized, sample_rate: int, cfg: MelConfig) -> float:
    """Log-mel spectral distance in dB between two waveforms (T,) (or (B, T)).

    Per frame, the RMS over mel bands of the difference of the two spectra in dB (20·log10 of
    magnitudes); then the mean over frames (and over the batch).
    """
    a = log_mel(reference, sample_rate, cfg)
    b = log_mel(synthesized, sample_rate, cfg)
    n = min(a.shape[-1], b.shape[-1])
    diff_db = (a[..., :n] - b[..., :n]) * DB_PER_NEPER
    return float(diff_db.pow(2).mean(dim=-2).sqrt().mean())
