"""Calibration table of the sample-quality score (`wavenet.quality.sample_quality`).

Scores clips of known quality as `wavenet evaluate` scores generated audio: each condition is
4 clips x 4 s at 16 kHz made from the demo data's TRAIN split, scored against all its VALID
files. From other real audio (about 1) through 8-bit mu-law, white noise added at 20 and 10 dB
SNR, noise with each real frame's envelope (no harmonics) or the corpus's long-term spectrum, to
white noise at the data's level; with --checkpoint, also 4 x 4 s generated from it (seed 0,
temperature 1). Cells: ratio (ratio_mel, ratio_flatness, ratio_periodicity). Seeded.

    python scripts/quality_score_check.py [--checkpoint outputs/demo] [--out table.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import istft, stft

import wavenet
from wavenet.audio import mu_law_decode, mu_law_encode
from wavenet.quality import sample_quality

DATA = Path(__file__).resolve().parent.parent / "data" / "demo"
DOMAINS = ("piano", "speech")
RATE = 16000
CLIP = 4 * RATE  # samples per clip, as `evaluate` generates
N_FFT, HOP = 1024, 256  # STFT used to shape noise


def load_split(domain: str, split: str) -> list[np.ndarray]:
    """Every audio file of data/demo/<domain>/<split>, sorted by path: list of (T,) float32."""
    files = [sf.read(p, dtype="float32") for p in sorted((DATA / domain / split).rglob("*.flac"))]
    if any(rate != RATE or audio.ndim != 1 for audio, rate in files):
        raise SystemExit(f"{DATA / domain / split}: expected mono {RATE} Hz audio")
    return [audio for audio, _ in files]


def clips_from(files: list[np.ndarray], n: int, seed: int) -> list[np.ndarray]:
    """n clips (CLIP,), like n generated streams: each starts at a random point of a random
    file and runs on into other random files if that one ends first."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        first = files[rng.integers(len(files))]
        parts = [first[rng.integers(0, max(1, len(first) - CLIP)):]]
        while sum(map(len, parts)) < CLIP:
            parts.append(files[rng.integers(len(files))])
        out.append(np.concatenate(parts)[:CLIP].copy())
    return out


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def at_level(x: np.ndarray, level: float) -> np.ndarray:
    """x (T,) scaled to RMS `level` and clipped to [-1, 1]: (T,) float32."""
    return np.clip(x * level / max(rms(x), 1e-12), -1, 1).astype(np.float32)


def spec(x: np.ndarray) -> np.ndarray:
    """Complex STFT of x (T,): (N_FFT // 2 + 1, frames)."""
    return stft(x, nperseg=N_FFT, noverlap=N_FFT - HOP, window="hann")[2]


def unspec(z: np.ndarray, length: int) -> np.ndarray:
    """Inverse of `spec`: (N_FFT // 2 + 1, frames) -> (length,)."""
    return istft(z, nperseg=N_FFT, noverlap=N_FFT - HOP, window="hann")[1][:length]


def with_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """x (T,) plus white noise `snr_db` below its RMS, clipped: (T,) float32."""
    noise = rng.standard_normal(len(x)) * rms(x) * 10 ** (-snr_db / 20)
    return np.clip(x + noise, -1, 1).astype(np.float32)


def envelope(x: np.ndarray, lifter: int = 16) -> np.ndarray:
    """x's (T,) magnitude envelope per frame, log|X| cepstrally smoothed to its first `lifter`
    quefrencies so that harmonics are smoothed away: (N_FFT // 2 + 1, frames)."""
    cepstrum = np.fft.irfft(np.log(np.abs(spec(x)) + 1e-7), axis=0)  # (N_FFT, frames)
    cepstrum[lifter:-lifter + 1] = 0.0
    return np.exp(np.fft.rfft(cepstrum, axis=0).real)


def shaped_noise(x: np.ndarray, magnitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White noise shaped by `magnitude` (N_FFT // 2 + 1, frames or 1), at x's (T,) RMS: (T,)."""
    noise = spec(rng.standard_normal(len(x)))
    return at_level(unspec(noise * magnitude, len(x)), rms(x))


def conditions(train: list[np.ndarray], valid: list[np.ndarray], seed: int = 0
               ) -> dict[str, list[np.ndarray]]:
    """{condition: 4 clips (CLIP,)} made from train files; white noise at the valid RMS."""
    rng = np.random.default_rng(seed)  # one generator, drawn row by row
    real = clips_from(train, 4, seed)
    power = np.mean(np.concatenate([np.abs(spec(f)) ** 2 for f in train], axis=1), axis=1)
    spectrum = np.sqrt(power)[:, None]  # the corpus's long-term magnitude spectrum
    level = rms(np.concatenate(valid))
    return {
        "real (other train clips)": real,
        # 8-bit mu-law is what a perfect 256-class model gives at best
        "real, 8-bit mu-law": [mu_law_decode(mu_law_encode(x)) for x in real],
        "real + noise 20 dB": [with_noise(x, 20, rng) for x in real],
        "real + noise 10 dB": [with_noise(x, 10, rng) for x in real],
        "envelope noise (no harmonics)": [shaped_noise(x, envelope(x), rng) for x in real],
        "long-term-spectrum noise": [shaped_noise(x, spectrum, rng) for x in real],
        "white noise": [at_level(rng.standard_normal(CLIP), level) for _ in real],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="also score samples of this checkpoint file or run "
                        "folder (e.g. outputs/demo)")
    parser.add_argument("--checkpoint-domain", choices=DOMAINS, default="piano",
                        help="the data the checkpoint was trained on (default: piano)")
    parser.add_argument("--out", type=Path, help="also write the full scores as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # light on the CPU: the whole table takes seconds

    table: dict[str, dict[str, dict]] = {}
    for domain in DOMAINS:
        train, valid = load_split(domain, "train"), load_split(domain, "valid")
        clips = conditions(train, valid)
        if args.checkpoint and domain == args.checkpoint_domain:
            model = wavenet.load(args.checkpoint, device="cpu")
            samples = model.generate(seconds=4, n=4, temperature=1.0, seed=0)  # (4, 4 s)
            clips["checkpoint samples"] = list(samples)
        for name, generated in clips.items():
            table.setdefault(name, {})[domain] = sample_quality(generated, valid, RATE)

    print("| condition | " + " | ".join(f"{d}: ratio (mel, flatness, periodicity)"
                                        for d in DOMAINS) + " |")
    print("|---" * (len(DOMAINS) + 1) + "|")
    for name, row in table.items():
        cells = [f"**{s['ratio']:.2f}** ({s['ratio_mel']:.2f}, {s['ratio_flatness']:.2f}, "
                 f"{s['ratio_periodicity']:.2f})" if (s := row.get(d)) else "" for d in DOMAINS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
