import os

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import wavenet.data as data_mod
from tests.conftest import compose_job
from wavenet.audio import AudioConfig, AudioError
from wavenet.data import CropDataset, StepSampler, open_cache, split_files
from wavenet.distributed import World
from wavenet.train_data import TrainData

AUDIO = AudioConfig(sample_rate=8000, trim_db=None, normalize=None)


def write_constant_files(folder, lengths):
    """File i holds the constant value levels[i]: any crop tells which file it came from."""
    folder.mkdir(parents=True, exist_ok=True)
    levels = np.linspace(-0.8, 0.8, len(lengths))
    for i, (n, level) in enumerate(zip(lengths, levels, strict=True)):
        sf.write(folder / f"f{i}.wav",
                 np.full(n, level, np.float32), 8000, subtype="FLOAT")
    return levels


def write_ramp_files(folder, lengths):
    """Sample n of file i is (5000·i + n) / 32768, exactly one int16 level: any stretch tells
    which file and position it came from."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(lengths):
        sf.write(folder / f"f{i}.wav", ((5000 * i + np.arange(n)) / 32768).astype(np.float32),
                 8000, subtype="FLOAT")


def origin(x: torch.Tensor) -> tuple[int, int]:
    """(file, first sample) of a stretch of a ramp file; asserts it is one unbroken stretch."""
    levels = torch.round(x * 32768).long()
    assert torch.equal(levels, levels[0] + torch.arange(len(levels))), "not one stretch"
    return int(levels[0]) // 5000, int(levels[0]) % 5000


def test_crops_never_cross_file_boundaries(tmp_path):
    lengths = [300, 1000, 120, 2000, 450]
    write_ramp_files(tmp_path / "a", lengths)
    cache = open_cache(tmp_path / "a", AUDIO, tmp_path / "cache")
    crop = 150
    ds = CropDataset(cache, list(range(len(lengths))), crop, seed=0)
    assert sorted(cache.files[i].path for i in ds.file_ids) == ["f0.wav", "f1.wav", "f3.wav",
                                                                "f4.wav"]  # f2 is too short
    seen_files, starts = set(), set()
    for i in range(2000):
        x = ds[i]["audio"]
        assert x.shape == (crop,)
        file_id, start = ds.locate(i)
        # The crop is the located stretch of the located file, and lies inside it.
        assert origin(x) == (int(cache.files[file_id].path[1]), start)
        assert 0 <= start and start + crop <= cache.files[file_id].length
        seen_files.add(file_id)
        starts.add((file_id, start))
    assert seen_files == set(ds.file_ids) and len(starts) > 1000
    again = CropDataset(cache, list(range(len(lengths))), crop, seed=0)
    assert torch.equal(ds[17]["audio"], again[17]["audio"])  # a pure function of its index
    assert origin(ds[17]["audio"]) != origin(ds[18]["audio"])


def test_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    write_constant_files(tmp_path / "a", [500, 600])
    calls = []
    real = data_mod.load_for_training
    monkeypatch.setattr(data_mod, "load_for_training",
                        lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    first = open_cache(tmp_path / "a", AUDIO, tmp_path / "cache")
    assert len(calls) == 2
    again = open_cache(tmp_path / "a", AUDIO, tmp_path / "cache")
    assert len(calls) == 2  # nothing decoded again
    assert np.array_equal(first.audio(1), again.audio(1))

    sf.write(tmp_path / "a" / "f1.wav", np.full(900, 0.25, np.float32), 8000, subtype="FLOAT")
    st = os.stat(tmp_path / "a" / "f1.wav")
    os.utime(tmp_path / "a" / "f1.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rebuilt = open_cache(tmp_path / "a", AUDIO, tmp_path / "cache")
    assert len(calls) == 4
    assert rebuilt.files[1].length == 900 and np.allclose(rebuilt.audio(1), 0.25, atol=1e-4)
    assert len(list(rebuilt.directory.glob("samples-*.i16"))) == 1  # the stale file is gone

    other = open_cache(tmp_path / "a", AudioConfig(sample_rate=4000, trim_db=None,
                                                   normalize=None), tmp_path / "cache")
    assert other.files[1].length == 450  # other preprocessing: its own cache


def test_undecodable_files_are_skipped_with_the_rest_kept(tmp_path, caplog):
    write_constant_files(tmp_path / "a", [500, 600])
    (tmp_path / "a" / "broken.wav").write_bytes(b"RIFF nonsense")
    (tmp_path / "a" / "empty.flac").write_bytes(b"")
    cache = open_cache(tmp_path / "a", AUDIO, tmp_path / "cache")
    assert [f.path for f in cache.files] == ["f0.wav", "f1.wav"]
    assert "broken.wav" in caplog.text


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AudioError, match="does not exist"):
        open_cache(tmp_path / "nope", AUDIO, tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(AudioError, match="no audio files"):
        open_cache(tmp_path / "empty", AUDIO, tmp_path / "cache")


def test_split_is_deterministic_by_file_and_never_empty(tmp_path):
    write_constant_files(tmp_path / "a", [200] * 30)
    cache = open_cache(tmp_path / "a", AUDIO, tmp_path / "cache")
    train, valid = split_files(cache, 0.2)
    assert (train, valid) == split_files(cache, 0.2)
    assert set(train).isdisjoint(valid) and len(train) + len(valid) == 30
    assert 1 <= len(valid) <= 15
    write_constant_files(tmp_path / "b", [200, 200])
    two = open_cache(tmp_path / "b", AUDIO, tmp_path / "cache")
    assert [len(s) for s in split_files(two, 0.01)] == [1, 1]
    # one file trains, whatever its name's hash: at a fraction of 0.99 it would be held out
    write_constant_files(tmp_path / "c", [200])
    one = open_cache(tmp_path / "c", AUDIO, tmp_path / "cache")
    assert split_files(one, 0.99) == ([0], [])


def test_loader_batches_do_not_depend_on_workers_or_restarts(tmp_path):
    write_ramp_files(tmp_path / "a", [800, 900, 1000])
    cache = open_cache(tmp_path / "a", AUDIO, tmp_path / "cache")
    ds = CropDataset(cache, [0, 1, 2], 100, seed=3)

    def batches(first_step, workers):
        loader = DataLoader(ds, batch_size=4, sampler=StepSampler(first_step, 3, 4),
                            num_workers=workers)
        return list(loader)

    whole = [b["audio"] for b in batches(0, 0)]
    workers = [b["audio"] for b in batches(0, 2)]
    resumed = [b["audio"] for b in batches(1, 0)]
    assert all(torch.equal(a, b) for a, b in zip(whole, workers, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(whole[1:], resumed[:2], strict=True))
    crops = {origin(x) for batch in whole for x in batch}
    assert len(crops) == 12  # twelve different stretches, not one repeated


@pytest.mark.parametrize(("setting", "device", "expected"),
                         [(None, "cpu", 0), (None, "cuda", 2), (3, "cpu", 3), (0, "cuda", 0)])
def test_loader_workers_default_to_none_on_the_cpu(tmp_path, setting, device, expected):
    write_ramp_files(tmp_path / "a", [3000] * 4)
    job = compose_job("train", ["model=debug", f"data.root={tmp_path / 'a'}",
                                f"data.cache_dir={tmp_path / 'c'}", "data.valid_fraction=0.3",
                                "data.audio.sample_rate=8000", "data.crop_samples=100",
                                f"data.num_workers={'null' if setting is None else setting}"])
    loader = TrainData.open(job, World()).loader(job, 0, World(), torch.device(device))
    assert loader.num_workers == expected


def test_flip_polarity_negates_half_the_crops_and_nothing_else(tmp_path):
    write_ramp_files(tmp_path / "a", [800, 900, 1000])
    cache = open_cache(tmp_path / "a", AUDIO, tmp_path / "cache")
    plain = CropDataset(cache, [0, 1, 2], 100, seed=3)
    flip = CropDataset(cache, [0, 1, 2], 100, seed=3, flip_polarity=True)
    signs = []
    for i in range(64):
        a, b = plain[i]["audio"], flip[i]["audio"]
        assert torch.equal(b, -a if flip.flipped(i) else a)  # the same crop, its sign or not
        signs.append(flip.flipped(i))
    assert 16 < sum(signs) < 48 and not any(plain.flipped(i) for i in range(64))
    again = CropDataset(cache, [0, 1, 2], 100, seed=3, flip_polarity=True)
    other = CropDataset(cache, [0, 1, 2], 100, seed=4, flip_polarity=True)
    assert signs == [again.flipped(i) for i in range(64)]  # a pure function of (seed, i)
    assert signs != [other.flipped(i) for i in range(64)]


def test_speed_perturbation_plays_each_crop_at_its_own_speed(tmp_path):
    """A sine of 1 cycle per 16 samples, cropped and played at speed s, is the sine at s·w,
    continued through the whitening history; which speed is a pure function of (seed, i)."""
    folder, w, half = tmp_path / "a", 2 * np.pi / 16, 200
    folder.mkdir()
    for i, n in enumerate([6000, 7000]):
        sf.write(folder / f"f{i}.wav", (0.5 * np.sin(w * np.arange(n) + i)).astype(np.float32),
                 8000, subtype="FLOAT")
    cache = open_cache(folder, AUDIO, tmp_path / "cache")
    cond = data_mod.Conditioning(history=8)
    plain = CropDataset(cache, [0, 1], 2 * half, seed=3, cond=cond)
    fast = CropDataset(cache, [0, 1], 2 * half, seed=3, cond=cond, speed_perturb=0.1)
    speeds, checked = [], 0
    for i in range(48):
        speed = fast.speed(i)
        speeds.append(speed)
        file_id, start = fast.locate(i)
        item = fast[i]
        assert item["audio"].shape == (2 * half,) and item["before"].shape == (8,)
        assert torch.equal(plain[i]["audio"], torch.from_numpy(
            cache.audio(file_id, start, 2 * half)))  # no perturbation: the crop as it is
        reach = (half + 8) * 1.1 + data_mod.SPEED_MARGIN * 1.1 + 2
        if start + half - reach < 0 or start + half + reach > cache.files[file_id].length:
            continue  # near the file's ends the resampler also sees the silence beyond them
        # The history and the crop are played as one stretch of 2·half + 8 samples centred on
        # sample start - 4 + half: the sine at time centre + (m - half - 4)·speed + d, d within
        # half a sample (the resampling starts on a whole input sample).
        t = start - 4 + half + (np.arange(2 * half + 8) - half - 4) * speed
        got = torch.cat([item["before"], item["audio"]]).numpy()
        basis = np.stack([np.sin(w * t + file_id), np.cos(w * t + file_id)], 1)
        (a, b), *_ = np.linalg.lstsq(basis, got, rcond=None)
        assert np.abs(basis @ [a, b] - got).max() < 2e-3, (i, speed)  # that frequency alone
        assert abs(np.hypot(a, b) - 0.5) < 2e-3 and abs(np.arctan2(b, a)) <= w * 0.55 * speed
        checked += 1
    assert checked >= 32
    assert all(0.9 <= s <= 1.1 for s in speeds) and min(speeds) < 0.95 and max(speeds) > 1.05
    assert all(plain.speed(i) == 1.0 for i in range(48))
    again = CropDataset(cache, [0, 1], 2 * half, seed=3, cond=cond, speed_perturb=0.1)
    other = CropDataset(cache, [0, 1], 2 * half, seed=4, cond=cond, speed_perturb=0.1)
    assert speeds == [again.speed(i) for i in range(48)]
    assert speeds != [other.speed(i) for i in range(48)]
    assert torch.equal(fast[5]["audio"], again[5]["audio"])
