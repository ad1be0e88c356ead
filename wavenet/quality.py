"""How a vocoder is measured in the field: the Griffin-Lim baseline from the same mel, and
PESQ (wide band) and STOI of a re-synthesis against its source.

PESQ and STOI come from PyPI's `pesq` (ITU-T P.862 in C, compiled at install) and `pystoi`;
both are in the `speech` extra (`pip install wavenet[speech]`, which `make install` tries).
Without them the log-mel distance is still reported.
"""

from __future__ import annotations

import numpy as np

from wavenet.features import MelConfig, log_mel_distance_db

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


# Sample quality: how far generated audio's log-mel frames are from the data's, as a Fréchet
# distance between Gaussians fitted to each (FAD's measure, on log-mels instead of a learned
# embedding, so it needs no download).


def mel_frames(clips: list[np.ndarray], sample_rate: int, cfg: MelConfig) -> np.ndarray:
    """Log-mel frames in dB of every clip (T,), stacked: (frames, n_mels) float64."""
    from wavenet.features import DB_PER_NEPER, log_mel

    return np.concatenate([log_mel(np.asarray(c, dtype=np.float32), sample_rate, cfg).numpy().T
                           for c in clips]).astype(np.float64) * DB_PER_NEPER


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2(Σa Σb)^½) between Gaussians fitted to rows of a (N, D)
    and b (M, D); in the rows' units squared (dB² for `mel_frames`)."""
    from scipy.linalg import sqrtm

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(root):  # numerical noise in a product of nearly singular matrices
        root = root.real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))


SCORE_MEL = MelConfig(log_floor=1e-4)  # bands 80 dB down count as silent, not as -100 dB


def sample_quality(generated: list[np.ndarray], real: list[np.ndarray], sample_rate: int,
                   cfg: MelConfig = SCORE_MEL, seed: int = 0) -> dict:
    """The Fréchet log-mel distance of generated clips to real ones, with its scale.

    Returns:
        {"frechet_mel": generated vs real, "floor": the first half of the real frames vs the
        second (what other audio of the same source scores), "ceiling": white noise at the real
        audio's RMS level vs real, "frames": generated frames}; all in dB². Near the floor, the
        samples' spectra are distributed like the data's.
    """
    ours, theirs = mel_frames(generated, sample_rate, cfg), mel_frames(real, sample_rate, cfg)
    dealt = np.arange(len(theirs)) < len(theirs) // 2
    rms = float(np.sqrt(np.mean(np.concatenate([np.square(c) for c in real]))))
    rng = np.random.default_rng(seed)
    noise = [np.clip(rng.standard_normal(len(c)) * rms, -1, 1) for c in generated]
    return {"frechet_mel": frechet_distance(ours, theirs),
            "floor": frechet_distance(theirs[dealt], theirs[~dealt]),
            "ceiling": frechet_distance(mel_frames(noise, sample_rate, cfg), theirs),
            "frames": len(ours)}
