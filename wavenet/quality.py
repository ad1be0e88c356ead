"""How a vocoder is measured in the field: the Griffin-Lim baseline from the same mel, and
PESQ (wide band) and STOI of a re-synthesis against its source; and how close free-running
samples are to the data (`sample_quality`).

PESQ and STOI come from PyPI's `pesq` (ITU-T P.862 in C, compiled at install) and `pystoi`;
both are in the `speech` extra (`pip install wavenet[speech]`, which `make install` tries).
Without them the log-mel distance is still reported.
"""

from __future__ import annotations

import numpy as np
import torch

from wavenet.errors import UserError
from wavenet.features import DB_PER_NEPER, MelConfig, framed_input, log_mel, log_mel_distance_db

PESQ_RATE = 16000  # wide-band PESQ is defined at 16 kHz


def griffin_lim(mel: np.ndarray, sample_rate: int, cfg: MelConfig, length: int,
                n_iter: int = 32) -> np.ndarray:
    """Phase reconstruction from log-mel frames (n_mels, F) computed as `features.log_mel`
    does: librosa's mel inversion (non-negative least squares onto linear frequencies, then
    Griffin-Lim), the baseline every vocoder is compared with. Returns float32 (length,)."""
    import librosa

    magnitudes = np.exp(np.asarray(mel, dtype=np.float64))
    audio = librosa.feature.inverse.mel_to_audio(
        magnitudes, sr=sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        win_length=cfg.win_length, center=True, pad_mode="reflect", power=1.0, n_iter=n_iter,
        fmin=cfg.f_min, fmax=cfg.f_max, htk=False, norm="slaney")
    # F centred frames span (F - 1)·hop samples; the last frame's hop is taken as silence.
    audio = np.pad(audio, (0, max(0, length - len(audio))))[:length]
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def speech_metrics_available() -> str | None:
    """None when PESQ and STOI can be computed, else why not."""
    try:
        import pesq  # noqa: F401
        import pystoi  # noqa: F401
    except ImportError as err:
        return f"{err.name} is not installed (pip install 'wavenet[speech]')"
    return None


def speech_scores(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> dict:
    """PESQ-WB (MOS-LQO, 1.0 … 4.64) and STOI (0 … 1) of `estimate` against `reference`,
    both (T,) float at `sample_rate`. PESQ runs at 16 kHz (resampled if needed); a signal it
    cannot score (e.g. no speech detected) gets None."""
    from pesq import PesqError, pesq
    from pystoi import stoi

    from wavenet.audio import resample

    ref = np.asarray(reference, dtype=np.float32)
    est = np.asarray(estimate, dtype=np.float32)[: len(ref)]
    scores = {"stoi": float(stoi(ref, est, sample_rate, extended=False))}
    ref16, est16 = (resample(x, sample_rate, PESQ_RATE) for x in (ref, est))
    try:
        scores["pesq_wb"] = float(pesq(PESQ_RATE, ref16, est16, "wb"))
    except PesqError:
        scores["pesq_wb"] = None
    return scores


def score_resyntheses(references: list[np.ndarray], estimates: list[np.ndarray],
                      sample_rate: int, cfg: MelConfig) -> dict:
    """Mean log-mel distance (dB), and mean PESQ-WB and STOI where available, over pairs."""
    result = {"mel_distance_db": float(np.mean([
        log_mel_distance_db(r, e, sample_rate, cfg) for r, e in zip(references, estimates,
                                                                   strict=True)]))}
    if speech_metrics_available() is None:
        scores = [speech_scores(r, e, sample_rate) for r, e in zip(references, estimates,
                                                                  strict=True)]
        for key in ("pesq_wb", "stoi"):
            values = [s[key] for s in scores if s[key] is not None]
            result[key] = float(np.mean(values)) if values else None
    return result


# Sample quality: how far generated audio is from the data, as Fréchet distances between
# Gaussians fitted to per-frame features (FAD's measure, on hand-made features instead of a
# learned embedding, so it needs no download). Three views of a frame, because log-mel bands
# alone see the spectral envelope but hardly the harmonics (noise shaped like each real frame
# of the demo data scored 1.1-1.2x their floor): band flatness sees whether each octave is
# tonal or noisy, and the cepstral peak whether the frame has a pitch.

SCORE_MEL = MelConfig(log_floor=1e-4)  # bands 80 dB down count as silent, not as -100 dB
# Flatness is taken in octave bands from 250 Hz up, as MPEG-7's AudioSpectrumFlatness starts
# there: lower octaves hold few FFT bins and depend on which bass notes a piece plays (from
# 62.5 Hz, real piano from other pieces scored half as much again).
FLATNESS_FROM_HZ = 250.0
# Pitches whose period the cepstral peak is looked for at: voices and most of a piano. Up to
# 2 kHz, the shortest quefrencies catch the envelope's own cepstrum, and noise with a speech
# envelope scored a quarter as far from speech.
PITCH_HZ = (60.0, 1000.0)
FLOOR_DRAWS = 32  # random deals averaged: one deal's floor is often off by half or more


def mel_frames(clips: list[np.ndarray], sample_rate: int, cfg: MelConfig) -> np.ndarray:
    """Log-mel frames in dB of every clip (T,), stacked: (frames, n_mels) float64."""
    return np.concatenate([log_mel(np.asarray(c, dtype=np.float32), sample_rate, cfg).numpy().T
                           for c in clips]).astype(np.float64) * DB_PER_NEPER


def power_frames(clip: np.ndarray, cfg: MelConfig) -> torch.Tensor:
    """Power spectrogram of a clip (T,), framed as `features.log_mel` frames and floored at its
    floor squared: (n_fft // 2 + 1, T // hop + 1) float64."""
    import torchaudio

    x, frames = framed_input(clip, cfg)
    power = torchaudio.transforms.Spectrogram(
        n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length, power=2.0,
        center=True, pad_mode="reflect")(x)[:, :frames]
    return power.double().clamp(min=cfg.log_floor ** 2)


def octave_bands(sample_rate: int, n_fft: int) -> list[tuple[int, int]]:
    """FFT bin ranges [lo, hi) of octave bands from FLATNESS_FROM_HZ up; the last band ends at
    (and includes) the Nyquist bin. Bands of fewer than 2 bins are left out."""
    nyquist = sample_rate / 2
    lowest = min(FLATNESS_FROM_HZ, nyquist / 2)
    hz = lowest * 2.0 ** np.arange(max(1, round(np.log2(nyquist / lowest))) + 1)
    hz[-1] = nyquist
    edges = np.round(hz * n_fft / sample_rate).astype(int)
    edges[-1] += 1
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi - lo >= 2]


def flatness_frames(clips: list[np.ndarray], sample_rate: int, cfg: MelConfig) -> np.ndarray:
    """Spectral flatness per octave band (`octave_bands`) of every clip's frames, stacked:
    (frames, bands) float64 in dB.

    Flatness is the geometric over the arithmetic mean of a band's power: about -2.5 dB for
    white noise, -12 to -20 dB on average for the demo piano. Digital silence is flat (0 dB).
    """
    bands = octave_bands(sample_rate, cfg.n_fft)
    out = []
    for clip in clips:
        power = power_frames(clip, cfg)
        out.append(torch.stack([power[lo:hi].log().mean(0) - power[lo:hi].mean(0).log()
                                for lo, hi in bands], 1).numpy())
    return np.concatenate(out) * DB_PER_NEPER / 2  # a power ratio: 10 dB per decade


def periodicity_frames(clips: list[np.ndarray], sample_rate: int, cfg: MelConfig
                       ) -> np.ndarray:
    """Cepstral peak prominence of every clip's frames, stacked: (frames, 1) float64 in dB.

    The real cepstrum of a frame's log power spectrum (dB) peaks at the pitch period of a
    periodic sound; its height over the periods of PITCH_HZ, above their median, is 0.6 dB for
    noise and 1.5 (demo speech) to 2.1 dB (demo piano) on average.
    """
    lo = max(1, int(sample_rate / PITCH_HZ[1]))
    hi = max(lo + 1, min(cfg.n_fft // 2, int(sample_rate / PITCH_HZ[0])))
    out = []
    for clip in clips:
        cepstrum = torch.fft.irfft(power_frames(clip, cfg).log() * (DB_PER_NEPER / 2),
                                   n=cfg.n_fft, dim=0)[lo:hi]  # (periods, F)
        out.append((cepstrum.max(0).values - cepstrum.median(0).values).numpy()[:, None])
    return np.concatenate(out)


SCORE_FEATURES = {"mel": mel_frames, "flatness": flatness_frames,
                  "periodicity": periodicity_frames}


def gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of the rows of x (N, D), N >= 2."""
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2(Σa Σb)^½) between Gaussians a and b, each (mean, cov)."""
    (mu_a, cov_a), (mu_b, cov_b) = a, b
    w, v = np.linalg.eigh(cov_b)
    root_b = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    # Σa Σb has the eigenvalues of the symmetric Σb^½ Σa Σb^½, so the trace of its square
    # root is theirs, square-rooted and summed: no complex sqrtm of a near-singular product.
    inner = root_b @ cov_a @ root_b
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)))
    distance = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross
    return max(0.0, float(distance))  # equal Gaussians can round to -1e-32


def runs(lengths: list[int], size: int) -> list[np.ndarray]:
    """Row indices of clips of `lengths` frames, stacked, cut into runs of `size` frames
    within each clip (a clip's last run may be shorter)."""
    starts = np.cumsum([0, *lengths[:-1]])
    return [np.arange(s + i, s + min(i + size, n))
            for s, n in zip(starts, lengths, strict=True) for i in range(0, n, size)]


def deal(pieces: list[np.ndarray], n: int, rng: np.random.Generator
         ) -> tuple[np.ndarray, np.ndarray]:
    """Runs in random order: their first n rows, and the rows of the runs after the one that
    reaches n (its remainder is dropped, so that no run is split between the two)."""
    taken, rest, count = [], [], 0
    for k in rng.permutation(len(pieces)):
        if count < n:
            taken.append(pieces[k][: n - count])
            count += len(taken[-1])
        else:
            rest.append(pieces[k])
    return np.concatenate(taken), np.concatenate(rest) if rest else np.zeros(0, dtype=int)


def times(value: float, floor: float) -> float:
    """value in units of floor (inf over a zero floor)."""
    return float(value / floor) if floor > 0 else float("inf")


def sample_quality(generated: list[np.ndarray], real: list[np.ndarray], sample_rate: int,
                   cfg: MelConfig = SCORE_MEL, seed: int = 0) -> dict:
    """How far generated clips are from real ones, in units of what real audio scores.

    For each of `SCORE_FEATURES` (log-mel bands, octave flatness, cepstral peak), the Fréchet
    distance between Gaussians fitted to the generated frames and to a random part of the real
    frames; its floor is the same distance for another, disjoint part of the real frames, as
    many as the generated ones and dealt in runs as long as the generated clips (a perfect
    model's clips are that many independent stretches of the source, so both sides carry the
    same small-sample bias); both are averaged over FLOOR_DRAWS deals. The ceiling is white
    noise at the real audio's RMS level, clipped like the generated clips.

    Args:
        generated: clips (T,) float in [-1, 1].
        real: held-out clips (T,) of the data, best with twice the generated frames or more
            (with fewer, each side takes half of the real frames and as many generated ones).
    Returns:
        {"frechet_mel", "floor", "ceiling": log-mel distances (dB²) of the generated clips, the
        real part and the white noise; "frechet_X", "floor_X", "ceiling_X" for X = flatness,
        periodicity (dB²); "ratio_X" for X = mel, flatness, periodicity: each score over its
        floor; "ratio": the largest, the score (real audio scores about 1, white noise
        "ceiling_ratio"); "frames": generated frames}.
    """
    rng = np.random.default_rng(seed)
    rms = float(np.sqrt(np.mean(np.concatenate([np.square(c) for c in real]))))
    noise = [np.clip(rng.standard_normal(len(c)) * rms, -1, 1) for c in generated]
    sets = {"ours": generated, "theirs": real, "noise": noise}
    frames = {k: [len(c) // cfg.hop_length + 1 for c in v] for k, v in sets.items()}
    n = min(sum(frames["ours"]), sum(frames["theirs"]) // 2)
    if n < 2:
        raise UserError(f"sample quality needs 2 or more generated frames and 4 or more real "
                        f"ones (hop {cfg.hop_length}), not {sum(frames['ours'])} and "
                        f"{sum(frames['theirs'])}")
    # Adjacent frames are near copies (one note, one syllable), so the floor deals runs as long
    # as a generated clip: 4 x 4 s of demo speech scored up to 4.3x the floor of 53 s of other
    # speech with 2 s runs, up to 1.6x with 4 s runs. Runs shrink for short real audio, so that
    # a deal still mixes several.
    size = max(1, min(int(np.median(frames["ours"])), sum(frames["theirs"]) // 4))
    pieces = {k: runs(v, size) for k, v in frames.items()}
    features = {name: {k: frames_of(v, sample_rate, cfg) for k, v in sets.items()}
                for name, frames_of in SCORE_FEATURES.items()}
    sums = {name: np.zeros(3) for name in features}  # score, floor, ceiling
    for _ in range(FLOOR_DRAWS):
        held, reference = deal(pieces["theirs"], n, rng)
        ours, noisy = deal(pieces["ours"], n, rng)[0], deal(pieces["noise"], n, rng)[0]
        for name, x in features.items():
            ref = gaussian(x["theirs"][reference])
            sums[name] += [frechet(gaussian(x[k][rows]), ref)
                           for k, rows in (("ours", ours), ("theirs", held), ("noise", noisy))]
    result = {}
    for name, (score, floor, ceiling) in sums.items():
        suffix = "" if name == "mel" else f"_{name}"
        result |= {f"frechet_{name}": float(score) / FLOOR_DRAWS,
                   f"floor{suffix}": float(floor) / FLOOR_DRAWS,
                   f"ceiling{suffix}": float(ceiling) / FLOOR_DRAWS,
                   f"ratio_{name}": times(score, floor), f"ceiling_ratio_{name}":
                   times(ceiling, floor)}
    # The worst view decides: a perfect envelope must not make up for missing harmonics.
    result["ratio"] = max(result[f"ratio_{name}"] for name in features)
    result["ceiling_ratio"] = max(result.pop(f"ceiling_ratio_{name}") for name in features)
    return {**result, "frames": sum(frames["ours"])}
