"""Spectral whitening of the modelled signal, as LPCNet does: the model predicts the excitation
e = W(z)·s of the audio s, and generation turns drawn excitation back into audio with 1/W(z).

W(z) = 1 + Σ_k w_k z^-k is a pre-emphasis filter (1 − β z^-1, a fixed tilt), times, for
vocoders, a linear predictor A(z) of the (pre-emphasized) spectrum each mel frame describes
(`MelPredictor`), or, for any model, one fitted to the audio's own recent past (`PastPredictor`).
Sampling noise in e is then shaped by 1/W(z) like the audio itself: it follows the formants and
the spectral tilt instead of filling the valleys between them with white hiss. The model's
job becomes the excitation (pitch pulses and noise), which is far easier to learn than the
waveform: the predictor takes 20–26 dB of the bundled speech's energy before any training.

The predictor's error power also says how loud each frame's excitation is. With a target
level κ (`WaveNetConfig.excitation_rms`), the model's values are e / g with g = σ_e / κ, σ_e
that frame's predicted excitation RMS: every frame, loud or quiet, speech or pause, then asks
the model for the same thing (the excitation's shape at RMS about κ), and the mel alone sets
its level, pauses included.

All filters are causal and start from silence: sample t of a stretch uses that stretch's
samples before t only, and frame j's predictor covers samples j·hop … (j+1)·hop − 1 (the
alignment `WaveNet.mel_features` uses); a past predictor's block j, samples j·hop …
(j+1)·hop − 1 of the stretch, is fitted to the window before it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from wavenet.features import MelConfig, frame_window, frames_for

LAG_WINDOW_HZ = 50.0  # Gaussian lag window: smooths the envelope so that it never fits a pitch
NOISE_FLOOR = 1e-4  # white noise added to the autocorrelation: well-conditioned predictors


def inverse_filterbank(cfg: MelConfig) -> torch.Tensor:
    """The pseudo-inverse (n_freqs, n_mels) float64 of `features.log_mel`'s mel filterbank."""
    import torchaudio.functional

    bank = torchaudio.functional.melscale_fbanks(
        cfg.n_fft // 2 + 1, cfg.f_min,
        cfg.f_max if cfg.f_max is not None else cfg.sample_rate / 2, cfg.n_mels,
        cfg.sample_rate, norm="slaney", mel_scale="slaney")  # (n_freqs, n_mels)
    return torch.linalg.pinv(bank.double().t())


class Filter(NamedTuple):
    """The whitening filter of a stretch of samples: model value = (W(z)·s) / gain.

    w: (B or 1, q, T or 1) w_1 … w_q of W(z) = 1 + Σ w_k z^-k per sample;
    gain: (B or 1, 1, T or 1) divisor per sample (ones when the excitation is not normalized).
    """

    w: torch.Tensor
    gain: torch.Tensor


def lpc_from_log_mel(mel: torch.Tensor, cfg: MelConfig, order: int, pre_emphasis: float = 0.0,
                     inverse: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear-prediction coefficients of the spectrum each frame describes.

    The mel magnitudes are mapped back to linear frequencies (the filterbank's pseudo-inverse),
    squared, tilted by the pre-emphasis filter's response, and turned into an autocorrelation
    (inverse FFT), which a lag window and a noise floor regularize before Levinson-Durbin.

    Args:
        mel: (B, n_mels, F) natural-log mel magnitudes (`features.log_mel`).
        inverse: `inverse_filterbank(cfg)`, for callers that fit many times (computed here
            when None).
    Returns:
        (B, order, F) float32 a_1 … a_order of A(z) = 1 + Σ a_k z^-k, minimum phase, and
        (B, F) float32 the RMS of the (pre-emphasized) frame's prediction error: the power left
        after prediction, per sample of the analysis window.
    """
    if inverse is None:
        inverse = inverse_filterbank(cfg)
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
    a, error = levinson(r)
    # r_0 = Σ_n (window_n · s_n)² (Parseval), so power per sample divides by Σ window².
    window = torch.hann_window(cfg.win_length or cfg.n_fft, dtype=torch.float64)
    return a.float(), (error / window.square().sum()).sqrt().float()


LOOP_BELOW = 16  # columns: fewer are solved one at a time by SciPy's compiled recursion


def levinson(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Levinson-Durbin recursion: autocorrelations (B, p+1, F) -> a_1 … a_p (B, p, F) of the
    minimum-phase predictor A(z) = 1 + Σ a_k z^-k, and the prediction error power (B, F), for
    every (B, F), in float64. Generation fits one block at a time, where the per-operation
    cost of a vectorized recursion dominates: fewer than LOOP_BELOW columns go one by one
    through `scipy.linalg.solve_toeplitz` (the same recursion, compiled), more all at once."""
    import scipy.linalg

    x = r.detach().cpu().double().numpy()
    order = x.shape[1] - 1
    if order and x.shape[0] * x.shape[2] < LOOP_BELOW:
        a = np.array([[scipy.linalg.solve_toeplitz(x[b, :-1, f], -x[b, 1:, f])
                       for f in range(x.shape[2])] for b in range(x.shape[0])]).transpose(0, 2, 1)
        error = x[:, 0] + np.einsum("bkf,bkf->bf", a, x[:, 1:])
    else:
        a = np.zeros((x.shape[0], order, x.shape[2]))
        error = x[:, 0].copy()
        for i in range(order):
            k = -(x[:, i + 1] + np.einsum("bjf,bjf->bf", a[:, :i], x[:, i:0:-1])) / error
            if i:
                a[:, :i] += k[:, None] * a[:, i - 1::-1].copy()
            a[:, i] = k
            error *= 1 - k * k
    return (torch.from_numpy(a).to(r.device, r.dtype),
            torch.from_numpy(error).to(r.device, r.dtype))


class MelPredictor:
    """The whitening filter a vocoder's mel frames describe: pre-emphasis (1 − β z^-1), times,
    with `order` > 0, the linear predictor of each frame's spectrum (`lpc_from_log_mel`), and
    with `excitation_rms` κ > 0 a gain per frame that scales its excitation to RMS κ. It holds
    the filterbank's pseudo-inverse, which generation would otherwise rebuild every block.
    """

    def __init__(self, pre_emphasis: float, order: int, excitation_rms: float,
                 mel_cfg: MelConfig | None):
        self.pre_emphasis, self.order, self.excitation_rms = pre_emphasis, order, excitation_rms
        self.mel_cfg = mel_cfg
        self.inverse = inverse_filterbank(mel_cfg) if order else None

    def whitening(self, mel: torch.Tensor | None, first: int, length: int) -> Filter:
        """W(z) and the gain for each of samples first … first + length − 1 of the utterance.

        Args:
            mel: (B, n_mels, F) frames of the utterance (needed when order > 0); frames outside
                them are silence.
        Returns:
            w (B, q, length) and gain (B, 1, length), or (1, ·, 1) when the filter is the same
            for every sample.
        """
        emphasis = torch.tensor([[[-self.pre_emphasis]]])
        if not self.order:
            return Filter(emphasis, torch.ones(1, 1, 1))
        hop = self.mel_cfg.hop_length
        lo, hi = frames_for(first, first + length - 1, hop, 0)
        frames = frame_window(mel, lo, hi, self.mel_cfg.log_floor)
        a, rms = lpc_from_log_mel(frames, self.mel_cfg, self.order, self.pre_emphasis,
                                  self.inverse)  # (B, p, frames)
        a = emphasized(a, self.pre_emphasis)
        gain = (rms / self.excitation_rms if self.excitation_rms
                else torch.ones_like(rms))[:, None]
        start = first - lo * hop
        return Filter(*(x.repeat_interleave(hop, dim=2)[:, :, start:start + length]
                        for x in (a, gain)))


def emphasized(a: torch.Tensor, pre_emphasis: float) -> torch.Tensor:
    """a_1 … a_p (B, p, N) of A(z) -> w_1 … w_q (B, q, N) of W(z) = A(z)·(1 − β z^-1)
    (q = p + 1; a itself when β = 0)."""
    if not pre_emphasis:
        return a
    w = F.pad(a, (0, 0, 0, 1)) - pre_emphasis * F.pad(a, (0, 0, 1, 0))
    w[:, 0] -= pre_emphasis
    return w


class PastPredictor(NamedTuple):
    """A backward-adaptive linear predictor, as ITU-T G.728 uses: every `hop` samples it is
    fitted again to the last `window` samples of the audio itself (pre-emphasized, Hann
    windowed, autocorrelation method), so that it needs no conditioning and generation can
    fit the same predictor to the audio it has made. Pitched sounds leave most of their
    energy to it: the model's job becomes what the recent past does not predict.

    Its poles are pulled in to radius γ (a_k·γ^k, bandwidth expansion): a predictor fitted to
    a few clean partials has poles on the unit circle, and a drawn excitation would ring at
    their frequencies for ever.
    """

    order: int
    window: int
    hop: int
    gamma: float
    pre_emphasis: float

    def fit(self, past: torch.Tensor) -> torch.Tensor:
        """Windows (B, N, window) of past audio, oldest first -> w_1 … w_q (B, q, N) of
        W(z) = A(z)·(1 − β z^-1) fitted to each (all zeros for silence but β's tap)."""
        x = past.double()
        u = torch.cat([x[..., :1], x[..., 1:] - self.pre_emphasis * x[..., :-1]], dim=-1)
        u = u * torch.hann_window(self.window, periodic=False, dtype=torch.float64,
                                  device=x.device)
        spectrum = torch.fft.rfft(u, n=2 * self.window)
        r = torch.fft.irfft(spectrum.abs().square(), n=2 * self.window)[..., :self.order + 1]
        r = r.transpose(1, 2).contiguous()  # (B, order+1, N)
        r[:, 0] = r[:, 0] * (1 + NOISE_FLOOR) + 1e-12
        a, _ = levinson(r)
        powers = self.gamma ** torch.arange(1, self.order + 1, dtype=torch.float64,
                                            device=x.device)
        return emphasized(a * powers[:, None], self.pre_emphasis).float()

    def block_filter(self, past: np.ndarray) -> Filter:
        """The filter of the block that follows `past` (B, ≥ window) float, audio oldest
        first: w (B, q, 1), fitted to its last window (what `Colouring` calls per block)."""
        return Filter(self.fit(torch.from_numpy(past[:, None, -self.window:])),
                      torch.ones(1, 1, 1))

    def whitening(self, audio: torch.Tensor, history: int) -> Filter:
        """W(z) of each sample of a stretch: audio (B, history + T) holds `history` samples
        before it (silence before those), and the predictor is fitted at samples 0, hop,
        2·hop, … of the stretch. Returns w (B, q, history + T): the history's own rows
        are zeros (its excitation is not needed)."""
        length = audio.shape[1] - history
        blocks = -(-length // self.hop)
        missing = max(0, self.window - history)
        padded = F.pad(audio, (missing, 0))
        first = missing + history - self.window  # where block 0's window begins
        windows = padded[:, first:first + (blocks - 1) * self.hop + self.window]
        w = self.fit(windows.unfold(1, self.window, self.hop))  # (B, q, blocks)
        w = w.repeat_interleave(self.hop, dim=2)[:, :, :length]
        return Filter(F.pad(w, (history, 0)), torch.ones(1, 1, 1))


def whiten(audio: torch.Tensor, filt: Filter) -> torch.Tensor:
    """e_t = (s_t + Σ_k w_k(t)·s_{t−k}) / gain_t, silence before the stretch.

    Args:
        audio: (B, T) float; filt: from `MelPredictor.whitening` or `PastPredictor.whitening`.
    Returns:
        (B, T) float32.
    """
    s, w = audio.float(), filt.w.to(audio.device)
    q = w.shape[1]
    padded = F.pad(s, (q, 0))
    e = s.clone()
    for k in range(1, q + 1):
        e = e + w[:, k - 1] * padded[:, q - k:padded.shape[1] - k]
    return e / filt.gain[:, 0].to(audio.device)


class Colouring:
    """The inverse of `whiten`, a stretch at a time: s_t = gain_t·e_t − Σ_k w_k(t)·s_{t−k}.

    It holds the last samples of each stream and the position in the utterance, so that
    generated excitation can be turned into audio as it arrives (streaming, progress).

    Args:
        coefficients: f(first, length, past) -> `Filter`, the whitening filter of those
            samples, given the audio before them (B, memory) float64, oldest first
            (`WaveNet.audio_decoder` binds it to the utterance or to the predictor).
        order: taps of the filter (q).
        history: (B, P) audio before the first sample (e.g. a prime), or None for silence.
        memory: samples of past audio `coefficients` reads (at least `order`).
        block: a backward-adaptive filter's hop: `coefficients` is then called once per
            block (samples block·j … block·(j+1) − 1), with the audio made before it, and
            returns one filter (w (B, q, 1)) for the whole block.
    """

    def __init__(self, coefficients, batch: int, order: int, history: np.ndarray | None = None,
                 memory: int = 0, block: int | None = None):
        self.coefficients, self.t, self.block = coefficients, 0, block
        self.filter: Filter | None = None  # the current block's
        self.past = np.zeros((batch, max(order, memory)))  # oldest first
        if history is not None and self.past.shape[1]:
            tail = np.asarray(history, dtype=np.float64)[:, -self.past.shape[1]:]
            self.past[:, self.past.shape[1] - tail.shape[1]:] = tail

    def __call__(self, excitation: np.ndarray) -> np.ndarray:
        """(B, n) excitation -> (B, n) float32 audio, clipped to [−1, 1]."""
        e = np.asarray(excitation, dtype=np.float64)
        if not self.block:
            return self._stretch(e, self.coefficients(self.t, e.shape[1], self.past))
        out, done = [], 0
        while done < e.shape[1]:
            into = self.t % self.block
            if not into:  # a block begins: fit its filter to the audio made before it
                self.filter = self.coefficients(self.t, self.block, self.past)
            n = min(e.shape[1] - done, self.block - into)
            out.append(self._stretch(e[:, done:done + n], self.filter))
            done += n
        return np.concatenate(out, axis=1) if out else np.zeros_like(e, dtype=np.float32)

    def _stretch(self, e: np.ndarray, filt: Filter) -> np.ndarray:
        """Colour e (B, n) with filt (its w and gain constant, or one per sample of e)."""
        from scipy.signal import lfilter

        n = e.shape[1]
        out = np.empty_like(e)
        w = filt.w.double().cpu().numpy()  # (B|1, q, n|1)
        e = e * filt.gain[:, 0].double().cpu().numpy()
        # Runs of samples that share one filter (a whole frame, or everything) are filtered
        # together; the filter's memory carries over between runs.
        changes = [0] if w.shape[2] == 1 else [0, *np.flatnonzero(
            np.any(w[:, :, 1:] != w[:, :, :-1], axis=(0, 1))) + 1]
        for lo, hi in zip(changes, [*changes[1:], n], strict=True):
            for b in range(e.shape[0]):
                a = np.concatenate([[1.0], w[min(b, w.shape[0] - 1), :, lo]])
                zi = initial_state(a, self.past[b, ::-1][:len(a) - 1])
                out[b, lo:hi], _ = lfilter([1.0], a, e[b, lo:hi], zi=zi)
                self.past[b] = np.concatenate([self.past[b], out[b, lo:hi]])[-len(self.past[b]):]
        self.t += n
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def initial_state(a: np.ndarray, past: np.ndarray) -> np.ndarray:
    """The state (q,) of scipy's lfilter([1], a, …) (transposed direct form II) after the
    outputs `past` (q,), newest first: z_m = −Σ_{j≥0} a_{m+1+j}·past_j, what
    `scipy.signal.lfiltic([1], a, past)` computes, without its per-call cost."""
    q = len(a) - 1
    return -np.correlate(a[1:], past, "full")[q - 1:2 * q - 1]
