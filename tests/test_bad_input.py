"""Bad input: a one-line error naming the file or key and what to do, or a counted skip with a
warning; never a traceback. One test per row of the README's table (some rows are tested
beside the feature they belong to: see the README)."""

from __future__ import annotations

import errno
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import compose_job, run_script, tiny_train_overrides, write_tone_folder
from wavenet import checkpoint
from wavenet.audio import AudioConfig, AudioError
from wavenet.cli import os_error_line
from wavenet.data import CropDataset, open_cache
from wavenet.train import train

AUDIO = AudioConfig(sample_rate=8000, trim_db=None, normalize=None)


def one_line_error(done, *expected: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_missing_and_empty_folders(tmp_path):
    one_line_error(run_script("train", f"data.root={tmp_path}/nope", cwd=tmp_path),
                   f"{tmp_path}/nope does not exist")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("no audio here")
    one_line_error(run_script("train", f"data.root={tmp_path}/empty", cwd=tmp_path),
                   f"{tmp_path}/empty holds no audio files")


def test_corrupt_truncated_non_audio_and_empty_files_are_counted_skips(tmp_path, caplog):
    folder = write_tone_folder(tmp_path / "a", n_files=2, rate=8000)
    whole = (folder / "tone_0.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(whole[:len(whole) // 2])  # header says more
    (folder / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
    (folder / "text.mp3").write_text("this is not audio")
    (folder / "zero.wav").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        cache = open_cache(folder, AUDIO, tmp_path / "cache")
    kept = {f.path for f in cache.files}
    assert {"tone_0.wav", "tone_1.wav"} <= kept
    assert not kept & {"corrupt.flac", "text.mp3", "zero.wav"}
    for name in ("corrupt.flac", "text.mp3", "zero.wav"):
        assert name in caplog.text
    lengths = {f.path: f.length for f in cache.files}
    assert 0 < lengths["truncated.wav"] < lengths["tone_0.wav"]  # libsndfile reads what is there
    assert f"skipped 3 of 6 files in {folder}" in caplog.text


def test_all_files_unreadable_is_a_one_line_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_text("not audio")
    one_line_error(run_script("train", f"data.root={tmp_path}/a",
                              f"data.cache_dir={tmp_path}/cache", cwd=tmp_path),
                   "no usable audio", f"{tmp_path}/a")


def test_files_shorter_than_a_crop_are_left_out_with_a_warning(tmp_path, caplog):
    folder = write_tone_folder(tmp_path / "a", n_files=2, seconds=0.5, rate=8000)
    sf.write(folder / "short.wav", np.zeros(50, np.float32) + 0.1, 8000)
    cache = open_cache(folder, AUDIO, tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        ds = CropDataset(cache, list(range(len(cache.files))), 1000, seed=0)
    assert len(ds.file_ids) == 2 and "1 of 3 files are shorter than one crop" in caplog.text
    with pytest.raises(AudioError, match="no file in .* is as long as one training crop"):
        CropDataset(cache, list(range(len(cache.files))), 10**6, seed=0)


def test_mixed_rates_and_channels_are_resampled_and_downmixed(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    t = np.arange(22050) / 22050
    sf.write(folder / "a.wav", np.sin(2 * np.pi * 220 * t).astype(np.float32) * 0.5, 22050)
    stereo = np.stack([np.sin(2 * np.pi * 330 * t[:16000] * 22050 / 16000)] * 2, 1) * 0.4
    sf.write(folder / "b.flac", stereo.astype(np.float32), 16000)
    sf.write(folder / "c.wav", (np.random.default_rng(0).standard_normal(4000) * 0.1)
             .astype(np.float32), 4000)
    cache = open_cache(folder, AUDIO, tmp_path / "cache")
    lengths = {f.path: f.length for f in cache.files}
    assert cache.sample_rate == 8000
    assert lengths == pytest.approx({"a.wav": 8000, "b.flac": 8000, "c.wav": 8000}, abs=2)


@pytest.mark.parametrize("override,expected", [
    ("model.layerz=3", "layerz"),
    ("train.max_steps=lots", "max_steps"),
])
def test_bad_override_names_the_key_without_a_traceback(tmp_path, override, expected):
    done = run_script("train", "data=demo_piano", override, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert expected in done.stderr


def test_unwritable_output_folders(tone_folder, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    one_line_error(run_script("train", "data=demo_piano", f"hydra.run.dir={blocker}/run",
                              cwd=tmp_path), f"{blocker} is a file, not a folder")
    ckpt = train(compose_job("train", tiny_train_overrides(tone_folder, tmp_path, steps=1)),
                 tmp_path / "run")
    one_line_error(run_script("sample", f"checkpoint={ckpt}", f"out_dir={blocker}/samples",
                              "seconds=0.01", cwd=tmp_path),
                   "a file is in the way of that folder")


def test_checkpoint_truncated_or_not_a_checkpoint(tone_folder, tmp_path):
    ckpt = train(compose_job("train", tiny_train_overrides(tone_folder, tmp_path, steps=1)),
                 tmp_path / "run")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    for path, expected in ((truncated, "is not a readable wavenet checkpoint"),
                           (other, "is not a wavenet checkpoint")):
        one_line_error(run_script("sample", f"checkpoint={path}", cwd=tmp_path),
                       str(path), expected)


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tone_folder, tmp_path,
                                                                      monkeypatch):
    base = tiny_train_overrides(tone_folder, tmp_path, steps=4)
    first = train(compose_job("train", base + ["train.stop_at=2"]), tmp_path / "run")
    before = first.read_bytes()

    def full_disk(path, data):
        with open(path, "wb") as f:
            f.write(bytes(data[: len(data) // 3]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write", full_disk)
    with pytest.raises(OSError) as raised:
        train(compose_job("train", base + ["train.resume=auto"]), tmp_path / "run")
    line = os_error_line(raised.value)
    assert ".pt: No space left on device; free some space" in line
    assert first.read_bytes() == before and checkpoint.load(first)["step"] == 2
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp*"))  # no torn files left
