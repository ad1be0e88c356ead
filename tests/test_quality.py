"""The yardsticks: Griffin-Lim from the same mel, PESQ-WB and STOI, and the sample-quality score."""

from __future__ import annotations

import numpy as np
import pytest

from wavenet.audio import AudioConfig, load_for_training
from wavenet.cli import REPO_ROOT
from wavenet.features import MelConfig, log_mel
from wavenet.quality import griffin_lim, score_resyntheses, speech_metrics_available

SPEECH = REPO_ROOT / "data" / "demo" / "speech" / "valid" / "slt" / "slt_s39.flac"
CFG = MelConfig()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """1.5 s of the bundled held-out speech at 16 kHz, a whole number of frames."""
    audio = load_for_training(SPEECH, AudioConfig(sample_rate=16000))
    return audio[: 16000 * 3 // 2 // CFG.hop_length * CFG.hop_length]


def test_griffin_lim_inverts_the_features_the_model_is_conditioned_on(speech):
    mel = log_mel(speech, 16000, CFG)[:, : len(speech) // CFG.hop_length].numpy()
    rebuilt = griffin_lim(mel, 16000, CFG, len(speech))
    assert rebuilt.shape == speech.shape and rebuilt.dtype == np.float32
    noise = np.random.default_rng(0).standard_normal(len(speech)).astype(np.float32) * 0.1
    gl = score_resyntheses([speech], [rebuilt], 16000, CFG)
    white = score_resyntheses([speech], [noise], 16000, CFG)
    assert gl["mel_distance_db"] < 4.0 < 15.0 < white["mel_distance_db"]  # measured 2.5 / 27


@pytest.mark.skipif(speech_metrics_available() is not None,
                    reason=f"PESQ/STOI: {speech_metrics_available()}")
def test_pesq_and_stoi_order_the_original_a_reconstruction_and_noise(speech):
    mel = log_mel(speech, 16000, CFG)[:, : len(speech) // CFG.hop_length].numpy()
    rebuilt = griffin_lim(mel, 16000, CFG, len(speech))
    noise = np.random.default_rng(0).standard_normal(len(speech)).astype(np.float32) * 0.1
    same, gl, white = (score_resyntheses([speech], [x], 16000, CFG)
                       for x in (speech, rebuilt, noise))
    assert same["pesq_wb"] > 4.5 and same["stoi"] > 0.99
    assert same["pesq_wb"] > gl["pesq_wb"] > white["pesq_wb"]  # measured 4.64 > 1.8 > 1.0
    assert same["stoi"] > gl["stoi"] > white["stoi"]  # measured 1.0 > 0.92 > 0.36
    # Scores at another rate are resampled to PESQ's 16 kHz.
    half = score_resyntheses([speech[::2]], [speech[::2]], 8000, MelConfig(n_fft=512,
                                                                           hop_length=128))
    assert half["pesq_wb"] > 4.0


def notes(seconds: float, seed: int, detune: float = 0.0, hiss: float = 0.0,
          rate: int = 16000) -> np.ndarray:
    """Decaying harmonic notes at random pitches, like a piano; `detune` shifts every partial
    by that fraction, `hiss` adds white noise at that fraction of the level."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * rate))
    t = np.arange(rate // 4) / rate
    for start in range(0, len(out) - len(t), len(t)):
        f0 = 220 * 2 ** (rng.integers(0, 8) / 12) * (1 + detune)
        note = sum(np.sin(2 * np.pi * f0 * h * t * (1 + detune * h)) / h for h in range(1, 6))
        out[start:start + len(t)] += 0.3 * note * np.exp(-6 * t)
    out += hiss * 0.3 * rng.standard_normal(len(out))
    return out.astype(np.float32)


def envelope_noise(clip: np.ndarray, seed: int, smooth_hz: float = 500.0,
                   rate: int = 16000) -> np.ndarray:
    """Noise with each frame's spectral envelope and no harmonics: the clip's STFT magnitudes
    averaged over `smooth_hz` (wider than the notes' harmonic spacing), with random phases."""
    from scipy.signal import istft, stft

    rng = np.random.default_rng(seed)
    spectrum = stft(clip, nperseg=1024, noverlap=768)[2]  # (513, frames)
    width = int(smooth_hz * 1024 / rate)
    envelope = np.apply_along_axis(np.convolve, 0, np.abs(spectrum), np.ones(width) / width,
                                   mode="same")
    phases = np.exp(2j * np.pi * rng.random(spectrum.shape))
    return istft(envelope * phases, nperseg=1024, noverlap=768)[1][: len(clip)].astype(
        np.float32)


def test_the_sample_quality_score_orders_noise_a_model_and_the_data():
    from wavenet.quality import sample_quality

    real = [notes(1.0, seed, hiss=0.01) for seed in range(8)]
    same = [notes(1.0, 30 + seed, hiss=0.01) for seed in range(4)]  # a perfect model
    close = [notes(1.0, 10 + seed, hiss=0.02) for seed in range(4)]  # more hiss
    poor = [notes(1.0, 20 + seed, detune=0.03, hiss=0.3) for seed in range(4)]
    shaped = [envelope_noise(clip, seed) for seed, clip in enumerate(same)]
    ours, good, bad, noise = (sample_quality(g, real, 16000) for g in (same, close, poor, shaped))
    # The floor and the ceiling depend on the generated frames' count only, not their content.
    assert ours["floor"] == noise["floor"] and ours["ceiling_ratio"] == noise["ceiling_ratio"]
    assert ours["frames"] == noise["frames"] == 4 * 63
    assert ours["ratio"] < 2.0  # the data itself scores near the floor (measured 1.0)
    assert ours["ratio"] < good["ratio"] < bad["ratio"] < bad["ceiling_ratio"]  # 28, 577, 1087
    # Noise with the notes' envelope fools the log-mel term alone, not the tonal ones.
    assert noise["ratio_mel"] < 10.0 < min(noise["ratio_flatness"], noise["ratio_periodicity"])
    assert 3.0 < noise["ratio"] < noise["ceiling_ratio"]  # measured 937 < 1087
    assert sample_quality(same, real, 16000) == ours  # seeded


def test_the_sample_quality_score_needs_a_few_real_frames():
    from wavenet.errors import UserError
    from wavenet.quality import sample_quality

    with pytest.raises(UserError, match="4 or more real"):
        sample_quality([notes(1.0, 0)], [notes(0.01, 1)], 16000)
    # Real audio shorter than the generated: each side takes half of it.
    short = sample_quality([notes(1.0, 0)], [notes(0.5, 1), notes(0.5, 2)], 16000)
    assert short["frames"] == 63 and short["floor"] > 0


def test_a_small_max_seconds_does_not_shrink_the_real_side_of_the_score(tmp_path):
    """The floor needs real audio several times as long as the samples: max_seconds caps the
    NLL's audio, not that (with 5 s of a 21 s held-out set, a 6.9x model read 414x)."""
    from tests.conftest import compose_job, tiny_train_overrides, write_tone_folder
    from wavenet.evaluate import evaluate
    from wavenet.train import train

    folder = write_tone_folder(tmp_path / "audio")
    ckpt = train(compose_job("train", tiny_train_overrides(folder, tmp_path)), tmp_path / "run")
    common = [f"checkpoint={ckpt}", "sample_streams=2", "sample_seconds=0.1"]
    whole = evaluate(compose_job("evaluate", [*common, f"out={tmp_path / 'a.json'}"]), tmp_path)
    capped = evaluate(compose_job("evaluate", [*common, "max_seconds=0.01",
                                               f"out={tmp_path / 'b.json'}"]), tmp_path)
    assert capped["samples"] == 80 < whole["samples"]  # the NLL is capped ...
    assert capped["sample_quality"] == whole["sample_quality"]  # ... the real side is not
