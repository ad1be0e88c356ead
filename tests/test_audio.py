import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from wavenet.audio import (
    AudioConfig,
    AudioError,
    class_entropy_bits,
    load_for_training,
    mu_law_decode,
    mu_law_edges,
    mu_law_encode,
    normalize_level,
    read_audio,
    trim_silence,
)


def test_mu_law_agrees_with_torchaudio():
    x = torch.linspace(-1, 1, 20001)
    for q in (256, 1024):
        ours = mu_law_encode(x, q)
        assert torch.equal(ours, AF.mu_law_encoding(x, q))
        assert np.array_equal(mu_law_encode(x.numpy(), q), ours.numpy())
        classes = torch.arange(q)
        torch.testing.assert_close(mu_law_decode(classes, q), AF.mu_law_decoding(classes, q))


def test_mu_law_round_trip():
    classes = torch.arange(256)
    assert torch.equal(mu_law_encode(mu_law_decode(classes)), classes)
    x = np.linspace(-1, 1, 1001, dtype=np.float32)
    err = np.abs(mu_law_decode(mu_law_encode(x)) - x)
    assert err.max() < 0.035 and err[np.abs(x) < 0.01].max() < 3e-4  # fine steps near zero


def test_read_any_format_downmixes_to_mono(tmp_path):
    stereo = np.stack([np.full(800, 0.5), np.full(800, -0.1)], axis=1).astype(np.float32)
    for ext in ("wav", "flac", "ogg", "aiff"):
        path = tmp_path / f"a.{ext}"
        sf.write(path, stereo, 8000)
        audio, rate = read_audio(path)
        assert rate == 8000 and audio.ndim == 1
        assert abs(float(np.median(audio)) - 0.2) < 0.02


def test_undecodable_file_names_itself(tmp_path):
    bad = tmp_path / "fake.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="fake.wav"):
        read_audio(bad)


def test_resample_trim_and_normalize(tmp_path):
    rate = 22050
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    x = np.concatenate([np.zeros(rate // 2), tone, np.zeros(rate // 2)]).astype(np.float32)
    sf.write(tmp_path / "t.wav", x, rate)
    out = load_for_training(tmp_path / "t.wav", AudioConfig(sample_rate=16000, trim_db=40))
    assert abs(len(out) - 16000) < 50  # silence trimmed, one second of tone left, resampled
    assert abs(np.abs(out).max() - 0.95) < 1e-4


def test_trimming_never_drops_a_whole_file():
    quiet = np.zeros(1000, np.float32)
    assert len(trim_silence(quiet, 40, min_keep=10)) == 1000
    click = np.zeros(1000, np.float32)
    click[500] = 1.0
    assert len(trim_silence(click, 40, min_keep=100)) == 1000  # would leave 1 sample: keep all


def test_rms_normalization_respects_peak_ceiling():
    x = (0.01 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    y = normalize_level(x, AudioConfig(normalize="rms", rms_level_db=-20))
    assert abs(20 * np.log10(np.sqrt(np.mean(y**2))) + 20) < 0.1
    spiky = np.zeros(8000, np.float32)
    spiky[::100] = 0.01
    assert np.abs(normalize_level(spiky, AudioConfig(normalize="rms"))).max() <= 0.95 + 1e-6


def test_histogram_entropy():
    assert class_entropy_bits(np.arange(256), 256) == pytest.approx(8.0)
    assert class_entropy_bits(np.zeros(10, int), 256) == 0.0


@pytest.mark.parametrize("classes", [256, 1024])
def test_mu_law_edges_bound_each_class(classes):
    edges = mu_law_edges(classes)
    assert edges[0] == -1 and edges[-1] == 1 and np.all(np.diff(edges) > 0)
    x = np.linspace(-1, 1, 200001)
    np.testing.assert_array_equal(mu_law_encode(x, classes),
                                  np.searchsorted(edges, x, side="right").clip(1, classes) - 1)
    centres = mu_law_decode(np.arange(classes), classes)
    assert np.all((edges[:-1] <= centres + 1e-7) & (centres - 1e-7 <= edges[1:]))
