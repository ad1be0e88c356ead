"""Spectral whitening of the modelled signal, as LPCNet does: the model predicts the excitation
e = W(z)·s of the audio s, and generation turns drawn excitation back into audio with 1/W(z).

W(z) = 1 + Σ_k w_k z^-k is a pre-emphasis filter (1 − β z^-1, a fixed tilt), times, for
vocoders, a linear predictor A(z) of the (pre-emphasized) spectrum each mel frame describes.
Sampling noise in e is then shaped by 1/W(z) like the audio itself: it follows the formants and
the spectral tilt instead of filling the valleys between them with white hiss. The model's
job becomes the excitation (pitch pulses and noise), which is far easier to learn than the
waveform: the predictor takes 20–26 dB of the bundled speech's energy before any training.

All filters are causal and start from silence: sample t of a stretch uses that stretch's
samples before t only, and frame j's predictor covers samples j·hop … (j+1)·hop − 1 (the
alignment `WaveNet.mel_features` uses).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from wavenet.features import MelConfig, frame_window, frames_for

LAG_WINDOW_HZ = 50.0  # Gaussian lag window: smooths the envelope so that it never fits a pitch
NOISE_FLOOR = 1e-4  # white noise added to the autocorrelation: well-conditioned predictors


@functools.lru_cache(maxsize=8)
def _inverse_filterbank(n_fft: int, n_mels: int, f_min: float, f_max: float | None,
                        sample_rate: int) -> torch.Tensor:
    """The pseudo-inverse (n_freqs, n_mels) of `features.log_mel`'s mel filterbank."""
    import torchaudio.functional

    bank = torchaudio.functional.melscale_fbanks(
        n_fft // 2 + 1, f_min, f_max if f_max is not None else sample_rate / 2, n_mels,
        sample_rate, norm="slaney", mel_scale="slaney")  # (n_freqs, n_mels)
    return torch.linalg.pinv(bank.double().t())


def lpc_from_log_mel(mel: torch.Tensor, cfg: MelConfig, order: int,
                     pre_emphasis: float = 0.0) -> torch.Tensor:
    """Linear-prediction coefficients of the spectrum each frame describes.

    The mel magnitudes are mapped back to linear frequencies (the filterbank's pseudo-inverse),
    squared, tilted by the pre-emphasis filter's response, and turned into an autocorrelation
    (inverse FFT), which a lag window and a noise floor regularize before Levinson-Durbin.

    Args:
        mel: (B, n_mels, F) natural-log mel magnitudes (`features.log_mel`).
    Returns:
        (B, order, F) float32 a_1 … a_order of A(z) = 1 + Σ a_k z^-k, minimum phase.
    """
    inverse = _inverse_filterbank(cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max, cfg.sample_rate)
    magnitude = torch.einsum("fm,bmt->bft", inverse.to(mel.device), mel.double().exp())
    power = magnitude.clamp(min=0).square()
    if pre_emphasis:
        omega = torch.linspace(0, math.pi, power.shape[1], dtype=torch.float64,
                               device=mel.device)
        power = power * (1 + pre_emphasis**2 - 2 * pre_emphasis * torch.cos(omega))[:, None]
    r = torch.fft.irfft(power, n=cfg.n_fft, dim=1)[:, :order + 1]  # (B, order+1, F)
    lags = torch.arange(order + 1, dtype=torch.float64, device=mel.device)
    r = r * torch.exp(-0.5 * (2 * math.pi * LAG_WINDOW_HZ * lags / cfg.sample_rate) ** 2)[:, None]
    r[:, 0] = r[:, 0] * (1 + NOISE_FLOOR) + 1e-12
    return levinson(r).float()


def levinson(r: torch.Tensor) -> torch.Tensor:
    """Levinson-Durbin recursion: autocorrelations (B, p+1, F) -> a_1 … a_p (B, p, F) of the
    minimum-phase predictor A(z) = 1 + Σ a_k z^-k, for every (B, F) at once."""
    order = r.shape[1] - 1
    a = r.new_zeros(r.shape[0], order, r.shape[2])
    error = r[:, 0]
    for i in range(order):
        acc = r[:, i + 1] + (a[:, :i] * r[:, 1:i + 1].flip(1)).sum(1)
        k = -acc / error
        a_prev = a[:, :i].clone()
        a[:, :i] = a_prev + k[:, None] * a_prev.flip(1)
        a[:, i] = k
        error = error * (1 - k * k)
    return a


def whitening_coefficients(pre_emphasis: float, lpc_order: int, mel_cfg: MelConfig | None,
                           mel: torch.Tensor | None, first: int, length: int) -> torch.Tensor:
    """w_1 … w_q of W(z) for each of samples first … first + length − 1 of the utterance.

    Args:
        mel: (B, n_mels, F) frames of the utterance (needed when lpc_order > 0); frames outside
            them are silence.
    Returns:
        (B, q, length), or (1, q, 1) when the filter is the same for every sample.
    """
    emphasis = torch.tensor([[[-pre_emphasis]]])
    if not lpc_order:
        return emphasis
    hop = mel_cfg.hop_length
    lo, hi = frames_for(first, first + length - 1, hop, 0)
    frames = frame_window(mel, lo, hi, mel_cfg.log_floor)
    a = lpc_from_log_mel(frames, mel_cfg, lpc_order, pre_emphasis)  # (B, p, frames)
    if pre_emphasis:  # W(z) = A(z)·(1 − β z^-1)
        a = F.pad(a, (0, 0, 0, 1)) - pre_emphasis * F.pad(a, (0, 0, 1, 0))
        a[:, 0] -= pre_emphasis
    start = first - lo * hop
    return a.repeat_interleave(hop, dim=2)[:, :, start:start + length]


def whiten(audio: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """e_t = s_t + Σ_k w_k(t)·s_{t−k}, silence before the stretch.

    Args:
        audio: (B, T) float; w: (B or 1, q, T or 1) from `whitening_coefficients`.
    Returns:
        (B, T) float32.
    """
    s, w = audio.float(), w.to(audio.device)
    q = w.shape[1]
    padded = F.pad(s, (q, 0))
    e = s.clone()
    for k in range(1, q + 1):
        e = e + w[:, k - 1] * padded[:, q - k:padded.shape[1] - k]
    return e


class Colouring:
    """The inverse of `whiten`, a stretch at a time: s_t = e_t − Σ_k w_k(t)·s_{t−k}.

    It holds the last q samples of each stream and the position in the utterance, so that
    generated excitation can be turned into audio as it arrives (streaming, progress).

    Args:
        coefficients: f(first, length) -> (B or 1, q, length or 1), the whitening filter of
            those samples (`WaveNet.whitening` bound to the utterance).
        history: (B, P) audio before the first sample (e.g. a prime), or None for silence.
    """

    def __init__(self, coefficients, batch: int, order: int, history: np.ndarray | None = None):
        self.coefficients, self.t = coefficients, 0
        self.past = np.zeros((batch, order))  # s_{t-1}, s_{t-2}, …: newest first
        if history is not None and order:
            tail = np.asarray(history, dtype=np.float64)[:, ::-1][:, :order]
            self.past[:, :tail.shape[1]] = tail

    def __call__(self, excitation: np.ndarray) -> np.ndarray:
        """(B, n) excitation -> (B, n) float32 audio, clipped to [−1, 1]."""
        from scipy.signal import lfilter, lfiltic

        e = np.asarray(excitation, dtype=np.float64)
        n = e.shape[1]
        out = np.empty_like(e)
        w = self.coefficients(self.t, n).double().cpu().numpy()  # (B|1, q, n|1)
        # Runs of samples that share one filter (a whole frame, or everything) are filtered
        # together; the filter's memory carries over between runs.
        changes = [0] if w.shape[2] == 1 else [0, *np.flatnonzero(
            np.any(w[:, :, 1:] != w[:, :, :-1], axis=(0, 1))) + 1]
        for lo, hi in zip(changes, [*changes[1:], n], strict=True):
            for b in range(e.shape[0]):
                a = np.concatenate([[1.0], w[min(b, w.shape[0] - 1), :, lo]])
                zi = lfiltic([1.0], a, self.past[b])
                out[b, lo:hi], _ = lfilter([1.0], a, e[b, lo:hi], zi=zi)
                self.past[b] = np.concatenate([out[b, lo:hi][::-1], self.past[b]])[:len(a) - 1]
        self.t += n
        return np.clip(out, -1.0, 1.0).astype(np.float32)
