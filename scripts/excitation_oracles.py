"""What excitation a mel-conditioned vocoder needs: hand-made excitations fed to the preset's
synthesis filters (pre-emphasis 0.85, a 16th-order predictor from each mel frame), scored as
`evaluate` scores copy synthesis. No network is involved; the pitch comes from pYIN on the
audio (an oracle), from the mel frames alone (harmonic combs), or from pYIN on Griffin-Lim's
reconstruction; the voicing from pYIN or from how well the mel frames match a harmonic comb;
the level from the true residual or from the mel frames' predictor. The README's vocoder
section quotes its output.

    python scripts/excitation_oracles.py                    # the bundled held-out speech
    python scripts/excitation_oracles.py --files 'wavs/*.wav'
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import librosa
import numpy as np
import torch

from wavenet.audio import read_audio, resample
from wavenet.features import MelConfig, log_mel
from wavenet.quality import griffin_lim, score_resyntheses
from wavenet.whitening import Colouring, MelPredictor, lpc_from_log_mel, whiten

RATE, HOP, ORDER, EMPHASIS = 16000, 256, 16, 0.85
F0_RANGE = (60.0, 500.0)
VOICED_MATCH = 0.5  # voiced where the bands match a comb this well (84% of frames agree with pYIN)


def comb_pitch(mel: np.ndarray, top: float = 1500.0) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's pitch (F,) Hz from its log-mel bands (n_mels, F) alone, and how well they
    match it (F,) (−1 … 1): the bands below `top`, their 5-band moving average removed,
    matched (normalized correlation) against the same filterbank's response to harmonic combs
    at 25-cent steps."""
    from scipy.ndimage import uniform_filter1d

    basis = librosa.filters.mel(sr=RATE, n_fft=1024, n_mels=mel.shape[0], norm="slaney")
    freqs = np.arange(basis.shape[1]) * RATE / 1024
    low = freqs[basis.argmax(1)] < top
    pitches = F0_RANGE[0] * 2 ** (np.arange(48 * np.log2(F0_RANGE[1] / F0_RANGE[0])) / 48)
    combs = np.array([basis[low] @ sum(np.exp(-0.5 * ((freqs - h * f0) / 20.0) ** 2)
                                       for h in range(1, int(top // f0) + 1))
                      for f0 in pitches])
    combs = np.log(combs + 1e-3 * combs.max(1, keepdims=True))
    combs -= uniform_filter1d(combs, 5, axis=1)
    combs /= np.linalg.norm(combs, axis=1, keepdims=True)
    detail = mel[low] - uniform_filter1d(mel[low], 5, axis=0)
    detail /= np.linalg.norm(detail, axis=0, keepdims=True) + 1e-9
    match = combs @ detail
    return pitches[match.argmax(0)], match.max(0)


def pyin(audio: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """pYIN's pitch (Hz, 0 where unvoiced) and voicing per mel frame."""
    f0, voiced, _ = librosa.pyin(audio, fmin=F0_RANGE[0], fmax=F0_RANGE[1], sr=RATE,
                                 frame_length=1024, hop_length=HOP)
    return np.nan_to_num(f0[:frames]), voiced[:frames]


def pulses(level: np.ndarray, f0: np.ndarray, voiced: np.ndarray, noise: np.ndarray,
           share: float = 1.0):
    """One pulse per period where voiced, noise elsewhere, at energy level² per sample; in
    voiced frames, `share` of that energy is in the pulses and the rest is noise."""
    out, phase = np.zeros(len(noise)), 0.0
    for t in range(len(noise)):
        j = t // HOP
        if voiced[j] and f0[j] > 0:
            out[t] = level[j] * np.sqrt(1 - share) * noise[t]
            phase += f0[j] / RATE
            if phase >= 1.0:
                phase -= 1.0
                out[t] += level[j] * np.sqrt(share * RATE / f0[j])
        else:
            out[t] = level[j] * noise[t]
    return out


def repeated_period(level, f0, voiced, noise, gain=0.9):
    """e(t) = g·e(t − P)·(level ÷ the last period's RMS) + √(1 − g²)·level·noise where voiced."""
    out = np.zeros(len(noise))
    for t in range(len(noise)):
        j = t // HOP
        out[t] = level[j] * noise[t]
        if voiced[j] and f0[j] > 0:
            period = int(round(RATE / f0[j]))
            if t >= period:
                rms = np.sqrt(np.mean(out[t - period:t] ** 2)) + 1e-12
                out[t] = (gain * out[t - period] / rms * level[j]
                          + np.sqrt(1 - gain**2) * level[j] * noise[t])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--files", default=str(here / "data/demo/speech/valid/*/*.flac"))
    args = parser.parse_args()
    cfg = MelConfig(sample_rate=RATE)
    rows: dict[str, tuple[list, list]] = {}
    cents: list[float] = []  # the mel frames' pitch against pYIN's, voiced frames
    agree: list[float] = []  # share of frames where the mel frames' voicing is pYIN's
    for path in sorted(glob.glob(args.files)):
        audio, rate = read_audio(path)
        audio = resample(audio, rate, RATE)
        n = len(audio) // HOP * HOP
        audio = audio[:n]
        mel = log_mel(audio, RATE, cfg)[None]

        predictor = MelPredictor(EMPHASIS, ORDER, 0.0, cfg)

        def coefficients(first, length, past, mel=mel, predictor=predictor):
            return predictor.whitening(mel, first, length)

        residual = whiten(torch.from_numpy(audio)[None],
                          coefficients(0, n, None))[0].double().numpy()
        frames = n // HOP
        level = np.sqrt(np.mean(residual.reshape(frames, HOP) ** 2, axis=1)) + 1e-12
        noise = np.random.default_rng(0).standard_normal(n)
        f0, voiced = pyin(audio, frames)
        gl_f0, gl_voiced = pyin(griffin_lim(mel[0].numpy(), RATE, cfg, n), frames)
        mel_f0, match = (x[:frames] for x in comb_pitch(mel[0].numpy()))
        mel_voiced = match >= VOICED_MATCH
        # the level the frames' predictor expects (its error power): no audio needed
        mel_level = lpc_from_log_mel(mel, cfg, ORDER, EMPHASIS, predictor.inverse)[1]
        mel_level = mel_level[0, :frames].double().numpy()
        agree.append(np.mean(mel_voiced == voiced))
        both = voiced & (f0 > 0)
        cents.extend(1200 * np.abs(np.log2(mel_f0[both] / f0[both])))
        excitations = {
            "noise at the true level": level.repeat(HOP) * noise,
            "period repeated, g = 0.9, pYIN's pitch": repeated_period(level, f0, voiced, noise),
            "pulses at pYIN's pitch": pulses(level, f0, voiced, noise),
            "pulses at the mel frames' pitch, pYIN's voicing": pulses(level, mel_f0, voiced,
                                                                      noise),
            "pulses at pYIN's pitch of Griffin-Lim": pulses(level, gl_f0, gl_voiced, noise),
            "pulses at the mel frames' pitch, voicing and level (the mel alone)":
                pulses(mel_level, mel_f0, mel_voiced, noise),
            "… 70% of the voiced frames' energy in the pulses, 30% noise":
                pulses(mel_level, mel_f0, mel_voiced, noise, share=0.7),
            "… 44% in the pulses (the true residual's share)":
                pulses(mel_level, mel_f0, mel_voiced, noise, share=0.44),
        }
        for name, excitation in excitations.items():
            made = Colouring(coefficients, 1, ORDER + 1)(excitation[None])[0]
            refs, outs = rows.setdefault(name, ([], []))
            refs.append(audio)
            outs.append(made)
        print(f"{path}: done", flush=True)
    print(f"pitch from the mel frames against pYIN's: median {np.median(cents):.0f} cents, "
          f"{np.mean(np.asarray(cents) > 100):.0%} of voiced frames off by more than a semitone; "
          f"voicing (match >= {VOICED_MATCH}) agrees with pYIN's on {np.mean(agree):.0%} of "
          "frames")
    print("| excitation | log-mel distance (dB) | PESQ-WB | STOI |\n|---|---:|---:|---:|")
    for name, (refs, outs) in rows.items():
        s = score_resyntheses(refs, outs, RATE, cfg)
        print(f"| {name} | {s['mel_distance_db']:.2f} | {s.get('pesq_wb') or float('nan'):.2f} "
              f"| {s.get('stoi') or float('nan'):.3f} |")


if __name__ == "__main__":
    main()
