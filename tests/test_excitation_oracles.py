"""The measurement tool behind the README's excitation table (scripts/excitation_oracles.py):
its mel-only pitch and its hand-made excitations."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from wavenet.features import MelConfig, log_mel

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "excitation_oracles.py"


@pytest.fixture(scope="module")
def oracles():
    spec = importlib.util.spec_from_file_location("excitation_oracles", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("f0", [95.0, 150.0, 230.0])
def test_the_pitch_of_a_harmonic_tone_is_found_in_its_mel_frames(oracles, f0):
    rate = oracles.RATE
    t = np.arange(int(0.5 * rate)) / rate
    # A voice-like tone: harmonics falling at 6 dB per octave, up to 4 kHz.
    tone = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, int(4000 // f0)))
    mel = log_mel((0.1 * tone).astype(np.float32), rate, MelConfig(sample_rate=rate)).numpy()
    found, match = (x[3:-3] for x in oracles.comb_pitch(mel))  # windows inside the tone
    cents = 1200 * np.abs(np.log2(found / f0))
    assert np.median(cents) < 30  # the candidates are 25 cents apart
    assert np.all(match >= oracles.VOICED_MATCH)  # a harmonic tone is voiced...


def test_noise_does_not_match_a_harmonic_comb(oracles):
    rate = oracles.RATE
    noise = np.random.default_rng(0).standard_normal(rate // 2).astype(np.float32)
    _, match = oracles.comb_pitch(log_mel(0.1 * noise, rate, MelConfig(sample_rate=rate)).numpy())
    assert np.median(match) < oracles.VOICED_MATCH  # ... and white noise mostly is not


def test_pulses_come_once_a_period_with_the_frame_level_and_noise_elsewhere(oracles):
    hop, rate = oracles.HOP, oracles.RATE
    frames = 8
    level = np.full(frames, 0.1)
    f0 = np.full(frames, 200.0)
    voiced = np.array([True] * 4 + [False] * 4)
    noise = np.random.default_rng(0).standard_normal(frames * hop)
    e = oracles.pulses(level, f0, voiced, noise)
    voiced_part = e[:4 * hop]
    peaks = np.flatnonzero(voiced_part)
    gaps = np.diff(peaks)  # one pulse a period (80 samples), to the nearest sample
    assert set(gaps) <= {79, 80, 81} and np.mean(gaps) == pytest.approx(rate / 200, abs=0.2)
    # Each pulse carries a period's energy at the frame's level.
    assert np.mean(voiced_part**2) == pytest.approx(0.1**2, rel=0.1)
    np.testing.assert_array_equal(e[4 * hop:], 0.1 * noise[4 * hop:])


def test_a_pulse_share_splits_the_voiced_energy_between_pulses_and_noise(oracles):
    hop = oracles.HOP
    frames = 40
    level, f0 = np.full(frames, 0.1), np.full(frames, 200.0)
    noise = np.random.default_rng(0).standard_normal(frames * hop)
    e = oracles.pulses(level, f0, np.ones(frames, bool), noise, share=0.7)
    at = np.abs(e) > 0.1 * np.sqrt(0.7 * 80) / 2  # the pulses stand far above the noise
    assert np.sum(e[at] ** 2) / np.sum(e**2) == pytest.approx(0.7, abs=0.05)
    assert np.mean(e**2) == pytest.approx(0.1**2, rel=0.1)
