"""Whitening (pre-emphasis and linear prediction from mel frames): the filter, its exact
inverse in generation, and what it does to a model's values."""

import numpy as np
import pytest
import scipy.linalg
import scipy.signal
import torch

from wavenet.features import MelConfig, log_mel
from wavenet.model import WaveNet, WaveNetConfig
from wavenet.whitening import Colouring, levinson, lpc_from_log_mel, whiten

RATE = 16000
MEL = MelConfig(sample_rate=RATE)  # the vocoder preset's features


def resonant(seconds: float, seed: int, poles=((700, 0.97), (2200, 0.95))) -> np.ndarray:
    """White noise through two resonances (formants), with a pause: speech-like spectra."""
    rng = np.random.default_rng(seed)
    a = np.array([1.0])
    for freq, radius in poles:
        a = np.convolve(a, [1, -2 * radius * np.cos(2 * np.pi * freq / RATE), radius**2])
    x = scipy.signal.lfilter([1.0], a, rng.standard_normal(int(seconds * RATE)))
    x[len(x) // 3:len(x) // 2] *= 0.01
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def vocoder(pre_emphasis: float, lpc_order: int, excitation_rms: float = 0.0) -> WaveNet:
    return WaveNet(WaveNetConfig(layers_per_cycle=2, cycles=1, residual_channels=4,
                                 gate_channels=4, skip_channels=4, mel=MEL,
                                 pre_emphasis=pre_emphasis, lpc_order=lpc_order,
                                 excitation_rms=excitation_rms))


@pytest.mark.parametrize("columns", [1, 40])  # one by one, and all at once (LOOP_BELOW)
def test_levinson_solves_the_normal_equations(columns):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4000))
    x = scipy.signal.lfilter([1.0], [1, -1.2, 0.8, -0.1], x)
    r = np.stack([np.correlate(s, s, "full")[len(s) - 1:len(s) + 8] for s in x])  # (3, 9)
    a, error = levinson(torch.from_numpy(r)[:, :, None].expand(-1, -1, columns))
    assert a.shape == (3, 8, columns) and error.shape == (3, columns)
    a, error = a[:, :, -1].numpy(), error[:, -1].numpy()
    for row, coeffs in zip(r, a, strict=True):
        expected = scipy.linalg.solve_toeplitz(row[:-1], -row[1:])
        np.testing.assert_allclose(coeffs, expected, rtol=1e-8, atol=1e-10)
    # The error power is what the predictor leaves of r_0: r_0 + Σ a_k r_k.
    np.testing.assert_allclose(error, r[:, 0] + (a * r[:, 1:]).sum(1), rtol=1e-8)


def test_predictors_from_mel_frames_are_stable_and_take_most_of_the_energy():
    x = resonant(1.0, seed=0)
    mel = log_mel(x, RATE, MEL)[None]
    a, rms = lpc_from_log_mel(mel, MEL, 16)
    assert a.shape == (1, 16, mel.shape[2]) and rms.shape == (1, mel.shape[2])
    for frame in a[0].T.double().numpy():
        assert np.abs(np.roots(np.concatenate([[1.0], frame]))).max() < 1  # minimum phase
    model = vocoder(0.0, 16)
    e = whiten(torch.from_numpy(x)[None], model.whitening(mel, 0, len(x)))
    loud = slice(0, len(x) // 3)
    gain_db = 10 * np.log10(x[loud].var() / e[0, loud].var().item())
    assert gain_db > 15  # the two resonances are predicted from the frames alone
    # The expected error RMS is the residual's own, within 2 dB, from the frames alone.
    frames = slice(4, len(x) // 3 // MEL.hop_length - 4)
    true_rms = e[0, :len(x) // 3 // MEL.hop_length * MEL.hop_length].view(
        -1, MEL.hop_length).square().mean(1).sqrt()
    level_db = 20 * np.log10(true_rms[frames] / rms[0, frames])
    assert np.abs(np.median(level_db.numpy())) < 2


def test_a_normalized_excitation_is_at_the_same_level_in_speech_and_in_pauses():
    x = resonant(1.0, seed=5)  # a pause at −40 dB from a third to half of it
    mel = log_mel(x, RATE, MEL)[None]
    plain = whiten(torch.from_numpy(x)[None], vocoder(0.85, 16).whitening(mel, 0, len(x)))[0]
    scaled = whiten(torch.from_numpy(x)[None],
                    vocoder(0.85, 16, 0.1).whitening(mel, 0, len(x)))[0]

    def rms(e, lo, hi):
        return e[int(lo * len(x)) + 512:int(hi * len(x)) - 512].square().mean().sqrt().item()

    assert rms(plain, 0.34, 0.5) < rms(plain, 0, 0.33) / 30
    for part in ((0, 0.33), (0.34, 0.5), (0.5, 1)):
        assert 0.1 / 1.6 < rms(scaled, *part) < 0.1 * 1.6


@pytest.mark.parametrize("pre_emphasis, lpc_order, excitation_rms",
                         [(0.85, 0, 0), (0.0, 16, 0), (0.85, 16, 0), (0.85, 16, 0.1)])
def test_colouring_inverts_whitening_a_stretch_at_a_time(pre_emphasis, lpc_order,
                                                         excitation_rms):
    audio = np.stack([resonant(0.5, seed=1), resonant(0.5, seed=2)])
    mel = log_mel(audio, RATE, MEL)
    model = vocoder(pre_emphasis, lpc_order, excitation_rms)
    w = model.whitening(mel, 0, audio.shape[1])
    assert w.w.shape[1] == model.cfg.whitening_order == lpc_order + (pre_emphasis > 0)
    e = whiten(torch.from_numpy(audio), w).numpy()
    assert not np.allclose(e, audio, atol=1e-3)
    colour = Colouring(lambda first, n, past: model.whitening(mel, first, n), 2,
                       model.cfg.whitening_order)
    # Stretches that split frames anywhere, shorter and longer than the filter.
    cuts = [0, 3, 100, 256, 1000, 1001, 5000, audio.shape[1]]
    rebuilt = np.concatenate([colour(e[:, lo:hi]) for lo, hi in zip(cuts, cuts[1:], strict=False)],
                             axis=1)
    np.testing.assert_allclose(rebuilt, audio, atol=1e-4)


def test_pre_emphasis_is_the_first_order_filter_and_needs_no_mel():
    model = WaveNet(WaveNetConfig(layers_per_cycle=2, cycles=1, pre_emphasis=0.85))
    audio = torch.tensor([[0.5, 0.25, -0.5, 0.0]])
    e = whiten(audio, model.whitening(None, 0, 4))
    np.testing.assert_allclose(e.numpy(), [[0.5, 0.25 - 0.425, -0.5 - 0.2125, 0.425]])
    assert torch.equal(model.encode_audio(audio), model.dist.encode(e))
    decoded = model.audio_decoder()(model.encode_audio(audio))
    np.testing.assert_allclose(decoded, audio.numpy(), atol=0.02)  # 8-bit mu-law


def test_a_crop_is_whitened_exactly_as_in_the_whole_file(tmp_path):
    """Crops carry the samples before them that the filter reaches: their values are the whole
    file's; without them, the first q differ."""
    import soundfile as sf

    from wavenet.audio import AudioConfig
    from wavenet.data import Conditioning, CropDataset, file_item, open_cache

    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "x.wav", resonant(0.5, seed=3), RATE)
    model = vocoder(0.85, 16)
    cache = open_cache(tmp_path / "a", AudioConfig(sample_rate=RATE, trim_db=None,
                                                  normalize=None), tmp_path / "c", mel=MEL)
    cond = Conditioning.for_model(model.cfg)
    assert cond.history == model.cfg.whitening_order == 17
    whole = file_item(cache, 0, cond)
    values = model.encode_audio(whole["audio"][None], whole["mel"][None],
                                int(whole["mel_offset"]), whole["before"][None])
    crops = CropDataset(cache, [0], 2048, seed=0, cond=cond)
    starts = set()
    for i in range(8):
        item, (_, start) = crops[i], crops.locate(i)
        starts.add(start)
        args = item["audio"][None], item["mel"][None], int(item["mel_offset"])
        crop = model.encode_audio(*args, item["before"][None])
        assert torch.equal(crop[0], values[0, start:start + crops.crop_length])
        if start:
            assert not torch.equal(model.encode_audio(*args)[0, :17], crop[0, :17])
    assert len(starts) > 2
    first = file_item(cache, 0, cond, 0, 2048)  # at the file's start: silence before it
    assert not first["before"].any()
    crop = model.encode_audio(first["audio"][None], first["mel"][None],
                              int(first["mel_offset"]), first["before"][None])
    assert torch.equal(crop[0], values[0, :2048])
def test_a_continuation_is_coloured_from_the_primes_last_samples():
    model = WaveNet(WaveNetConfig(layers_per_cycle=2, cycles=1, pre_emphasis=0.85))
    audio = torch.from_numpy(resonant(0.1, seed=4))[None]
    values = model.encode_audio(audio)
    whole = model.audio_decoder()(values)
    cut = 300  # in the loud part
    rest = model.audio_decoder(history=whole[:, :cut])(values[:, cut:])
    np.testing.assert_allclose(rest, whole[:, cut:], atol=1e-5)
    cold = model.audio_decoder()(values[:, cut:])
    assert np.abs(cold - whole[:, cut:]).max() > 1e-2  # the history matters


def test_waveform_classes_as_excitation_intervals():
    """A whitening model's NLL of the audio's own mu-law classes: each sample's class is the
    interval of excitation values that, coloured from the true audio before it, lands in it."""
    from wavenet.evaluate import waveform_bins

    audio = torch.from_numpy(resonant(0.25, seed=5))[None]
    plain = WaveNet(WaveNetConfig(layers_per_cycle=2, cycles=1))
    lo, hi = waveform_bins(plain, audio, None, 0)
    own = plain.dist.bins(audio)
    assert torch.equal(lo, own[0]) and torch.equal(hi, own[1])

    emphasis = WaveNet(WaveNetConfig(layers_per_cycle=2, cycles=1, pre_emphasis=0.85))
    lo, hi = waveform_bins(emphasis, audio, None, 0)  # e = s − 0.85·s₋₁
    before = 0.85 * torch.cat([torch.zeros(1, 1), audio[:, :-1]], dim=1).double()
    torch.testing.assert_close(lo, own[0] - before, atol=1e-6, rtol=0)
    torch.testing.assert_close(hi, own[1] - before, atol=1e-6, rtol=0)

    model = vocoder(0.85, 16, excitation_rms=0.1)
    mel = log_mel(audio[0], RATE, MEL)[None]
    e = model.excitation(audio, mel, 0)[0].double().numpy()
    lo, hi = waveform_bins(model, audio, mel, 0)
    classes = model.dist.encode(audio)[0]
    for t in (5, 900, 1500, 2600, 3999):  # loud, the pause, across frames
        for inside in (0.1, 0.5, 0.9):
            probe = e[:, :t + 1].copy()
            probe[0, t] = lo[0, t] + inside * (hi[0, t] - lo[0, t])
            made = Colouring(lambda first, n, past: model.whitening(mel, first, n), 1,
                             model.cfg.whitening_order)(probe)
            assert model.dist.encode(torch.from_numpy(made[:, t]))[0] == classes[t]


def tones(seconds: float, seed: int, f0: float = 220.0) -> np.ndarray:
    """Two decaying harmonic notes (the second an octave and a fifth up) over faint noise:
    what a backward-adaptive predictor is for."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n // 2) / RATE
    notes = []
    for pitch in (f0, 3 * f0):
        note = sum(np.sin(2 * np.pi * k * pitch * t + rng.uniform(0, 2 * np.pi)) / k
                   for k in range(1, int(4000 / pitch)))
        notes.append(note * np.exp(-3 * t))
    x = np.concatenate(notes)
    x = x + 1e-3 * rng.standard_normal(len(x))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def adaptive(order=16, window=256, hop=64, gamma=0.99, pre_emphasis=0.85) -> WaveNet:
    return WaveNet(WaveNetConfig(layers_per_cycle=2, cycles=1, residual_channels=4,
                                 gate_channels=4, skip_channels=4, pre_emphasis=pre_emphasis,
                                 adaptive_lpc_order=order, adaptive_lpc_window=window,
                                 adaptive_lpc_hop=hop, adaptive_lpc_gamma=gamma))


def reference_fit(past: np.ndarray, order: int, gamma: float, beta: float) -> np.ndarray:
    """w_1 … w_q of W(z) = A(z)·(1 − β z^-1) for a window of past audio, by the textbook:
    pre-emphasis, a Hann window, the autocorrelation, the normal equations."""
    u = past.astype(np.float64).copy()
    u[1:] -= beta * past[:-1]
    u *= np.hanning(len(u))
    r = np.correlate(u, u, "full")[len(u) - 1:len(u) + order]
    r[0] = r[0] * (1 + 1e-4) + 1e-12
    a = scipy.linalg.solve_toeplitz(r[:-1], -r[1:]) * gamma ** np.arange(1, order + 1)
    return np.convolve(np.concatenate([[1.0], a]), [1.0, -beta])[1:]


@pytest.mark.parametrize("history", [0, 100, 256])
def test_a_past_predictor_is_fitted_to_the_window_before_each_block(history):
    model = adaptive()
    audio = torch.from_numpy(tones(0.1, seed=0))[None]
    w = model.cfg.past_predictor().whitening(audio, history).w
    assert w.shape == (1, 17, audio.shape[1]) and not w[:, :, :history].any()
    padded = np.concatenate([np.zeros(256), audio[0].numpy()])
    for block in (0, 1, 7, (audio.shape[1] - history - 1) // 64):
        t0 = history + 64 * block
        expected = reference_fit(padded[t0:t0 + 256], 16, 0.99, 0.85)
        for t in (t0, min(t0 + 63, audio.shape[1] - 1)):  # the same for the whole block
            np.testing.assert_allclose(w[0, :, t].double().numpy(), expected, atol=2e-5)


def test_a_past_predictor_takes_most_of_a_notes_energy_and_its_poles_are_damped():
    model = adaptive(order=32, window=512, hop=128)
    x = tones(1.0, seed=1)
    e = model.excitation(torch.from_numpy(x)[None])[0][0].numpy()
    emphasized = x[1:] - 0.85 * x[:-1]
    settled = slice(2000, 7000)  # inside the first note, away from its onset
    gain_db = 10 * np.log10(emphasized[settled].var() / e[1:][settled].var())
    assert gain_db > 12, gain_db  # measured 17.7 dB; a fixed tilt cannot follow the notes
    w = model.cfg.past_predictor().fit(torch.from_numpy(x[4000:4512])[None, None])
    poles = np.roots(np.concatenate([[1.0], w[0, :, 0].double().numpy()]))
    assert np.abs(poles).max() <= 0.99 + 1e-6  # γ's radius (and β's zero-free pole at 0.85)
    silent = model.cfg.past_predictor().fit(torch.zeros(1, 1, 512))
    np.testing.assert_allclose(silent[0, :, 0].numpy(), [-0.85] + [0.0] * 32, atol=1e-7)


@pytest.mark.parametrize("gamma, pre_emphasis", [(0.99, 0.85), (0.95, 0.0)])
def test_colouring_refits_the_past_predictor_to_the_audio_it_makes(gamma, pre_emphasis):
    """Generation fits the predictor to the audio it has made, a block at a time, whatever
    the stretches it is fed: whitening what colouring made gives back the excitation it was
    fed, real-valued or decoded from classes, and the first blocks rebuild the audio itself.

    (Further on, colouring the excitation of true audio drifts from it: each refit reads audio
    rebuilt from float32 excitation, and a fit to a few clean partials is sensitive to its
    input, so rounding grows, measured 3e-5 at γ = 0.99 and 8e-4 at γ = 1 after 4,000
    samples. Generation has no true audio to drift from. At γ = 1 the quantization noise of
    the classes rings at the partials until the audio clips.)"""
    model = adaptive(gamma=gamma, pre_emphasis=pre_emphasis)
    audio = torch.from_numpy(np.stack([tones(0.25, seed=2), tones(0.25, seed=3, f0=330)]))
    e = model.excitation(audio)[0].numpy()
    assert 10 * np.log10(audio.var().item() / e.var()) > 10  # it does whiten
    cuts = [0, 3, 64, 100, 128, 1000, 1001, audio.shape[1]]
    colour = model.colouring(batch=2)
    made = np.concatenate([colour(e[:, lo:hi]) for lo, hi in zip(cuts, cuts[1:], strict=False)],
                          axis=1)
    np.testing.assert_allclose(made[:, :200], audio.numpy()[:, :200], atol=1e-6)
    again = model.excitation(torch.from_numpy(made))[0].numpy()
    np.testing.assert_allclose(again, e, atol=1e-5)

    values = model.encode_audio(audio)
    decode = model.audio_decoder(batch=2)
    generated = np.concatenate([decode(values[:, lo:hi])
                                for lo, hi in zip(cuts, cuts[1:], strict=False)], axis=1)
    again = model.excitation(torch.from_numpy(generated))[0]
    torch.testing.assert_close(again, model.dist.decode(values), atol=1e-5, rtol=0)


def test_a_past_predictor_needs_a_window_longer_than_its_taps():
    from wavenet.errors import UserError

    with pytest.raises(UserError, match="adaptive_lpc_window=32 is no longer than "
                                        "model.adaptive_lpc_order=32"):
        WaveNetConfig(adaptive_lpc_order=32, adaptive_lpc_window=32)


def test_a_crop_carries_the_window_its_past_predictor_is_fitted_to(tmp_path):
    """A crop brings the window before it, so its first block is fitted to its true past: a
    crop that starts on a block of the whole file is whitened as the whole file is."""
    import soundfile as sf

    from wavenet.audio import AudioConfig
    from wavenet.data import Conditioning, file_item, open_cache

    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "x.wav", tones(0.5, seed=4), RATE)
    model = adaptive()
    cache = open_cache(tmp_path / "a", AudioConfig(sample_rate=RATE, trim_db=None,
                                                  normalize=None), tmp_path / "c")
    cond = Conditioning.for_model(model.cfg)
    assert cond.history == model.cfg.whitening_history == 256
    whole = file_item(cache, 0, cond)
    values = model.encode_audio(whole["audio"][None], before=whole["before"][None])
    for start in (0, 64, 640, 3008):
        crop = file_item(cache, 0, cond, start, 1024)
        assert crop["before"].shape == (256,)
        ours = model.encode_audio(crop["audio"][None], before=crop["before"][None])
        assert torch.equal(ours[0], values[0, start:start + 1024])
        if start:
            assert not torch.equal(model.encode_audio(crop["audio"][None])[0], ours[0])
