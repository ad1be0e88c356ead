"""Speakers, log-mel conditioning (vocoders) and the mixture-of-logistics output, end to end."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import compose_job, tiny_train_overrides, write_tone_folder
from wavenet import checkpoint
from wavenet.audio import AudioConfig, load_for_training
from wavenet.data import Conditioning, CropDataset, file_item, open_cache
from wavenet.errors import UserError
from wavenet.evaluate import evaluate, heldout_nll
from wavenet.features import MelConfig, log_mel, log_mel_distance_db
from wavenet.generate import generate
from wavenet.model import WaveNet, WaveNetConfig
from wavenet.sample import sample
from wavenet.train import train

RATE = 8000
# A floor at -40 dB: pure tones leave most bands empty, and any synthesis fills them with noise
# that would otherwise dominate the distance.
MEL = MelConfig(n_fft=256, hop_length=32, n_mels=20, log_floor=1e-2)
VOCODER = ["model.mel.n_fft=256", "model.mel.hop_length=32", "model.mel.n_mels=20",
           "model.mel.log_floor=0.01", "model.upsample_scales=[4,8]"]


def switching_tones(path: Path, seconds: float, seed: int) -> None:
    """Segments of silence, 300 Hz or 1200 Hz at random times: only features can tell when."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    freq, level = np.empty(n), np.empty(n)
    pos = 0
    while pos < n:
        span = int(rng.integers(RATE // 20, RATE // 5))
        state = rng.integers(3)
        freq[pos:pos + span] = (300.0, 1200.0, 300.0)[state]
        level[pos:pos + span] = (0.5, 0.5, 0.0)[state]
        pos += span
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (level * np.sin(phase)).astype(np.float32), RATE)


def test_crops_carry_their_frames_with_context_and_stay_aligned(tmp_path):
    switching_tones(tmp_path / "a" / "x.wav", 1.0, seed=0)
    switching_tones(tmp_path / "a" / "y.wav", 0.7, seed=1)
    audio_cfg = AudioConfig(sample_rate=RATE, trim_db=None, normalize=None)
    cache = open_cache(tmp_path / "a", audio_cfg, tmp_path / "cache", mel=MEL)
    silence = np.log(MEL.log_floor)
    for crop_length in (100, 256, 333):
        ds = CropDataset(cache, [0, 1], crop_length, seed=0, cond=Conditioning(hop=32, context=2))
        assert ds.crop_length % 32 == 0 and ds.crop_length >= crop_length
        for i in range(40):
            item = ds[i]
            file_id, start = ds.locate(i)
            assert start % 32 == 0
            assert item["mel"].shape == (20, ds.crop_length // 32 + 4)
            assert int(item["mel_offset"]) == 2 * 32  # audio[0] sits after two context frames
            whole = log_mel(cache.audio(file_id), RATE, MEL)  # features of the whole file
            first = start // 32 - 2
            for j in range(item["mel"].shape[1]):  # the file's frame, or silence outside it
                frame = first + j
                expected = whole[:, frame] if 0 <= frame < whole.shape[1] else silence
                np.testing.assert_allclose(item["mel"][:, j], expected, atol=2e-2)  # float16
            np.testing.assert_array_equal(item["audio"], cache.audio(file_id, start,
                                                                     ds.crop_length))


def test_a_crop_is_conditioned_exactly_as_the_whole_file(tmp_path):
    """Every scored output of a training crop equals the whole file's output at that sample,
    for crops at the file's start, middle and end; without the context frames the crop's last
    outputs differ (what training once did)."""
    switching_tones(tmp_path / "a" / "x.wav", 0.5, seed=0)
    sf.write(tmp_path / "a" / "y.wav", np.sin(np.arange(3990) / 7).astype(np.float32) * 0.5,
             RATE)  # not a whole number of frames
    cache = open_cache(tmp_path / "a", AudioConfig(sample_rate=RATE, trim_db=None,
                                                   normalize=None), tmp_path / "cache", mel=MEL)
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(layers_per_cycle=4, cycles=1, residual_channels=6,
                                  gate_channels=6, skip_channels=6, mel=MEL,
                                  upsample_scales=[4, 8])).eval()
    for conv in model.upsampler.stages:  # far from a box filter: edges matter
        torch.nn.init.normal_(conv.weight)
    rf = model.receptive_field
    cond = Conditioning.for_model(model.cfg)
    assert cond.context == model.cfg.mel_context_frames == 2
    with torch.no_grad():
        for file_id in range(2):
            whole = file_item(cache, file_id, cond)
            x = model.dist.encode(whole["audio"])[None]
            out = model(x[:, :-1], None, whole["mel"][None], int(whole["mel_offset"]))
            n = len(whole["audio"])
            last_start = (n - 256) // 32 * 32
            for start, length in ((0, 256), (0, 96), (64, 160), (320, 256), (last_start, 256),
                                  ((n - 96) // 32 * 32, 96)):
                for context, equal in ((cond.context, True), (0, False)):
                    item = file_item(cache, file_id, replace(cond, context=context), start, length)
                    xc = model.dist.encode(item["audio"])[None]
                    crop = model(xc[:, :-1], None, item["mel"][None], int(item["mel_offset"]),
                                 first_output=rf - 1)
                    expected = out[:, :, start + rf - 1:start + length - 1]
                    assert crop.shape == expected.shape
                    same = torch.allclose(crop, expected, rtol=1e-5, atol=1e-5)
                    assert same == equal, (file_id, start, length, context)
        # Held-out scoring runs in chunks, each conditioned as the whole file is.
        chunked = heldout_nll(model, cache, [0, 1], cond=cond, chunk=100)
        nats = 0.0
        for file_id in range(2):
            whole = file_item(cache, file_id, cond)
            x = model.dist.encode(whole["audio"])[None]
            out = model(x[:, :-1], None, whole["mel"][None], int(whole["mel_offset"]))
            nats += model.dist.nll(out, x[:, 1:], reduction="sum").item()
        assert chunked["bits_per_sample"] == pytest.approx(
            nats / chunked["samples"] / np.log(2), rel=1e-5)


def test_vocoder_reproduces_the_spectral_pattern_better_than_an_unconditional_model(tmp_path,
                                                                                  capsys):
    for i in range(4):
        switching_tones(tmp_path / "train" / f"{i}.wav", 1.5, seed=i)
    switching_tones(tmp_path / "valid" / "v.wav", 1.0, seed=10)
    common = [f"data.root={tmp_path / 'train'}", f"data.valid_root={tmp_path / 'valid'}",
              f"data.cache_dir={tmp_path / 'cache'}", f"data.audio.sample_rate={RATE}",
              "data.audio.trim_db=null", "data.crop_samples=256", "data.num_workers=0",
              "model=debug", "model.layers_per_cycle=5", "model.residual_channels=16",
              "model.gate_channels=16", "model.skip_channels=32",
              "train.max_steps=150", "train.batch_size=8", "train.lr=0.005",
              "train.warmup_steps=10", "train.eval_every=150", "train.sample_every=null",
              "train.checkpoint_every=150", "train.progress=false"]
    vocoder_ckpt = train(compose_job("train", ["experiment=vocoder", *common, *VOCODER]),
                         tmp_path / "vocoder")
    plain_ckpt = train(compose_job("train", common), tmp_path / "plain")

    valid = open_cache(tmp_path / "valid", AudioConfig(sample_rate=RATE, trim_db=None),
                       tmp_path / "cache", mel=MEL)
    frames = valid.files[0].length // 32
    reference = torch.from_numpy(valid.audio(0, 0, frames * 32))
    vocoder, _ = checkpoint.load_model(vocoder_ckpt)
    g = torch.Generator().manual_seed(0)
    frames_in = torch.from_numpy(valid.mels(0, 0, frames))[None]
    copy = vocoder.audio_decoder(frames_in)(generate(vocoder, generator=g, mel=frames_in))[0]
    plain, _ = checkpoint.load_model(plain_ckpt)
    free = plain.dist.decode(generate(plain, frames * 32, generator=g))[0]
    copy_db = log_mel_distance_db(reference, copy, RATE, MEL)
    free_db = log_mel_distance_db(reference, free, RATE, MEL)
    assert copy_db < free_db - 3.0, (copy_db, free_db)

    result = evaluate(compose_job("evaluate", [f"checkpoint={vocoder_ckpt}", "resynth_files=1",
                                               "resynth_seconds=0.25",
                                               f"out={tmp_path / 'e.json'}"]), tmp_path)
    # evaluate's copy synthesis (0.25 s of the held-out file) follows the spectral pattern too.
    quarter = RATE // 4
    free_quarter_db = log_mel_distance_db(reference[:quarter], free[:quarter], RATE, MEL)
    assert result["mel_distance_db"] < free_quarter_db - 3.0, (result, free_quarter_db)
    assert json.loads((tmp_path / "e.json").read_text())["mel_distance_db"] == \
        result["mel_distance_db"]
    # ... beside Griffin-Lim from the same frames, a real baseline.
    copy = json.loads((tmp_path / "e.json").read_text())["copy_synthesis"]
    assert copy["files"] == 1 and copy["seconds"] == pytest.approx(62 * 32 / RATE)  # whole frames
    assert copy["wavenet"]["mel_distance_db"] == result["mel_distance_db"]
    assert copy["griffin_lim"]["mel_distance_db"] < free_quarter_db - 3.0
    out = capsys.readouterr().out
    assert "| WaveNet |" in out and "| Griffin-Lim (32 iterations) |" in out


def test_copy_synthesis_from_npy_and_its_errors(tmp_path):
    switching_tones(tmp_path / "a" / "x.wav", 0.6, seed=0)
    switching_tones(tmp_path / "a" / "y.wav", 0.6, seed=1)
    ckpt = train(compose_job("train", ["experiment=vocoder",
                                       *tiny_train_overrides(tmp_path / "a", tmp_path, steps=2),
                                       *VOCODER]), tmp_path / "run")
    feats = log_mel(np.zeros(32 * 9, np.float32), RATE, MEL)[:, :9].T.numpy()
    np.save(tmp_path / "ok.npy", feats)
    (path,) = sample(compose_job("sample", [f"checkpoint={ckpt}", f"mel_from={tmp_path}/ok.npy",
                                            "progress=false"]), tmp_path / "out")
    assert sf.info(path).frames == 9 * 32

    np.save(tmp_path / "bad.npy", feats[:, :7])
    with pytest.raises(UserError, match=r"shape \(9, 7\); expected \(frames, 20\)"):
        sample(compose_job("sample", [f"checkpoint={ckpt}", f"mel_from={tmp_path}/bad.npy"]),
               tmp_path / "out")
    with pytest.raises(UserError, match="vocoder: give mel_from"):
        sample(compose_job("sample", [f"checkpoint={ckpt}"]), tmp_path / "out")

    (path,) = sample(compose_job("sample", [f"checkpoint={ckpt}", "progress=false",
                                            f"mel_from={tmp_path}/a/x.wav"]), tmp_path / "wav")
    prepared = load_for_training(tmp_path / "a" / "x.wav", AudioConfig(sample_rate=RATE))
    assert sf.info(path).frames == len(prepared) // 32 * 32  # whole frames of the trimmed audio


@pytest.mark.parametrize("kind", ["plain", "vocoder"])
def test_training_writes_its_samples_to_tensorboard(tmp_path, kind):
    """train.sample_every: a sample (a vocoder's copy synthesis of the start of a held-out
    file, whole frames of it) and its spectrogram at each such step."""
    import io

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    switching_tones(tmp_path / "a" / "x.wav", 0.6, seed=0)
    switching_tones(tmp_path / "a" / "y.wav", 0.6, seed=1)
    overrides = [o for o in tiny_train_overrides(tmp_path / "a", tmp_path, steps=2)
                 if not o.startswith("train.sample_every")]
    extra = ["experiment=vocoder", *VOCODER] if kind == "vocoder" else []
    train(compose_job("train", [*extra, *overrides, "train.sample_every=1",
                                "train.sample_seconds=0.05"]), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"),
                              size_guidance={"audio": 0, "images": 0})
    events.Reload()
    audio = events.Audio("sample/audio")
    assert [a.step for a in audio] == [1, 2]
    assert [i.step for i in events.Images("sample/spectrogram")] == [1, 2]
    for event in audio:
        wav, rate = sf.read(io.BytesIO(event.encoded_audio_string))
        assert rate == RATE and len(wav) == (384 if kind == "vocoder" else 400)
        assert np.isfinite(wav).all() and np.abs(wav).max() > 0


def speaker_folder(root: Path) -> None:
    for n, name in enumerate(["zoe", "adam", "mia"]):  # not in sorted order
        write_tone_folder(root / name / "takes", n_files=2, seconds=0.3, rate=RATE,
                          f0=200.0 + 100 * n, seed=n)


def test_speaker_table_is_stable_and_stored_in_the_checkpoint(tmp_path):
    speaker_folder(tmp_path / "voices")
    overrides = ["experiment=multispeaker",
                 *tiny_train_overrides(tmp_path / "voices", tmp_path, steps=2)]
    first = checkpoint.load(train(compose_job("train", overrides), tmp_path / "one"))
    second = checkpoint.load(train(compose_job("train", overrides), tmp_path / "two"))
    assert first["speakers"] == second["speakers"] == ["adam", "mia", "zoe"]
    assert first["config"]["model"]["n_speakers"] == 3

    manifest = tmp_path / "speakers.csv"
    rows = [f"{p.relative_to(tmp_path / 'voices')},{p.parts[-3]}"
            for p in sorted((tmp_path / "voices").rglob("*.wav"))]
    manifest.write_text("path,speaker\n" + "\n".join(rows) + "\n")
    by_manifest = checkpoint.load(train(compose_job("train", [*overrides,
                                                              f"data.speakers={manifest}"]),
                                        tmp_path / "three"))
    assert by_manifest["speakers"] == first["speakers"]

    ckpt = str(tmp_path / "one")
    (path,) = sample(compose_job("sample", [f"checkpoint={ckpt}", "speaker=mia", "seconds=0.05",
                                            "progress=false"]), tmp_path / "out")
    assert sf.info(path).frames == 400
    with pytest.raises(UserError, match="unknown speaker 'bob'; known speakers: adam, mia, zoe"):
        sample(compose_job("sample", [f"checkpoint={ckpt}", "speaker=bob"]), tmp_path / "out")
    with pytest.raises(UserError, match="pick one with speaker="):
        sample(compose_job("sample", [f"checkpoint={ckpt}"]), tmp_path / "out")


def test_speakers_change_the_prediction(tmp_path):
    model = WaveNet(WaveNetConfig(layers_per_cycle=2, cycles=1, residual_channels=4,
                                  gate_channels=4, skip_channels=4, n_speakers=2))
    x = torch.randint(0, 256, (1, 20))
    assert not torch.allclose(model(x, torch.tensor([0])), model(x, torch.tensor([1])))


def test_mixture_of_logistics_trains_samples_and_evaluates(tmp_path, tone_folder):
    ckpt = train(compose_job("train", [*tiny_train_overrides(tone_folder, tmp_path, steps=3),
                                       "model.output=mol", "model.mixtures=3"]), tmp_path / "r")
    (path,) = sample(compose_job("sample", [f"checkpoint={ckpt}", "seconds=0.05",
                                            "progress=false"]), tmp_path / "out")
    audio, rate = sf.read(path, dtype="int16")
    assert rate == RATE and len(audio) == 400
    result = evaluate(compose_job("evaluate", [f"checkpoint={ckpt}", "split=all"]), tmp_path)
    assert 10 < result["entropy_bits"] <= 16  # 16-bit histogram
    # evaluate's chunked scoring equals one pass over each whole file.
    model, _ = checkpoint.load_model(ckpt)
    cache = open_cache(tone_folder, AudioConfig(sample_rate=RATE), tmp_path / "cache")
    nats, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(cache.files)):
            x = model.dist.encode(torch.from_numpy(cache.audio(i)))[None]
            nats += model.dist.nll(model(x[:, :-1]), x[:, 1:], reduction="sum").item()
            count += x.shape[1] - 1
    assert result["samples"] == count
    assert result["bits_per_sample"] == pytest.approx(nats / count / np.log(2), rel=1e-5)


def test_vocoding_a_folder_keeps_its_layout(tmp_path, capsys):
    switching_tones(tmp_path / "a" / "x.wav", 0.6, seed=0)
    switching_tones(tmp_path / "a" / "y.wav", 0.6, seed=1)
    ckpt = train(compose_job("train", ["experiment=vocoder", *VOCODER,
                                       *tiny_train_overrides(tmp_path / "a", tmp_path, steps=1)]),
                 tmp_path / "run")
    inputs = tmp_path / "inputs"
    switching_tones(inputs / "one.wav", 0.3, seed=2)
    switching_tones(inputs / "sub" / "two.flac", 0.5, seed=3)
    sf.write(inputs / "sub" / "three.wav", np.full(40, 0.1, np.float32), RATE)  # one frame
    np.save(inputs / "sub" / "four.npy", np.full((7, 20), np.log(0.5), np.float32))
    paths = sample(compose_job("sample", [f"checkpoint={ckpt}", f"mel_from={inputs}",
                                          "batch_size=3", f"out_dir={tmp_path}/out",
                                          "progress=false"]), tmp_path / "unused")
    out = tmp_path / "out"
    assert sorted(p.relative_to(out).as_posix() for p in paths) == [
        "one.wav", "sub/four.wav", "sub/three.wav", "sub/two.wav"]
    prepared = {name: load_for_training(inputs / name, AudioConfig(sample_rate=RATE))
                for name in ("one.wav", "sub/two.flac")}
    assert sf.info(out / "one.wav").frames == len(prepared["one.wav"]) // 32 * 32
    assert sf.info(out / "sub" / "two.wav").frames == len(prepared["sub/two.flac"]) // 32 * 32
    assert sf.info(out / "sub" / "four.wav").frames == 7 * 32
    assert sf.info(out / "sub" / "three.wav").frames == 32
    assert "vocoded 4 files" in capsys.readouterr().out

    np.save(inputs / "sub" / "bad.npy", np.zeros((5, 19), np.float32))
    with pytest.raises(UserError, match=r"bad.npy has shape \(5, 19\); expected \(frames, 20\)"):
        sample(compose_job("sample", [f"checkpoint={ckpt}", f"mel_from={inputs}",
                                      f"out_dir={tmp_path}/out2"]), tmp_path / "unused")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no audio files or .npy arrays"):
        sample(compose_job("sample", [f"checkpoint={ckpt}", f"mel_from={tmp_path}/empty"]),
               tmp_path / "unused")
