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
from wavenet import data as data_module
from wavenet.audio import AudioConfig, AudioError, load_for_training
from wavenet.cli import os_error_line, out_of_memory_line
from wavenet.data import CropDataset, open_cache, speaker_labels
from wavenet.errors import UserError
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


def test_files_with_nan_or_infinite_samples_are_counted_skips(tmp_path, caplog):
    folder = write_tone_folder(tmp_path / "a", n_files=2, rate=8000)
    for name, bad in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        x = np.full(4000, 0.1, np.float32)
        x[100] = bad
        sf.write(folder / name, x, 8000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING):
        cache = open_cache(folder, AudioConfig(sample_rate=8000), tmp_path / "cache")
    assert {f.path for f in cache.files} == {"tone_0.wav", "tone_1.wav"}
    assert "nan.wav: 1 samples are NaN or infinite" in caplog.text
    assert "inf.wav: 1 samples are NaN or infinite" in caplog.text
    assert f"skipped 2 of 4 files in {folder}" in caplog.text


# Every kind of value in every job: the key, the value and what is allowed, before any work.
@pytest.mark.parametrize("program,override,expected", [
    ("train", "train.lr=-0.001", "train.lr=-0.001: must be in (0, 10]"),
    ("train", "train.lr=nan", "train.lr=nan: must be in (0, 10]"),
    ("train", "train.final_lr=-0.1", "train.final_lr=-0.1: must be >= 0 or null"),
    ("train", "train.batch_size=0", "train.batch_size=0: must be an integer >= 1"),
    ("train", "train.max_steps=-5", "train.max_steps=-5: must be an integer >= 1 or null"),
    ("train", "train.max_steps=null", "train.max_steps=null needs a time budget"),
    ("train", "train.max_time=soon", "train.max_time=soon: must be a positive duration"),
    ("train", "train.max_time=0m", "train.max_time=0m: must be a positive duration"),
    ("train", "train.warmup_steps=-1", "train.warmup_steps=-1: must be an integer >= 0"),
    ("train", "train.betas=[0.9]", "train.betas=[0.9]: give two values"),
    ("train", "train.betas=[0.9,1.5]", "train.betas[1]=1.5: must be in [0, 1)"),
    ("train", "train.ema_decay=1.0", "train.ema_decay=1.0: must be in [0, 1) or null"),
    ("train", "train.grad_clip=0", "train.grad_clip=0.0: must be > 0 or null"),
    ("train", "train.weight_decay=-1", "train.weight_decay=-1.0: must be >= 0"),
    ("train", "train.eval_every=0", "train.eval_every=0: must be an integer >= 1"),
    ("train", "train.sample_every=0", "train.sample_every=0: must be an integer >= 1 or null"),
    ("train", "train.sample_seconds=0", "train.sample_seconds=0.0: must be in (0, 3600]"),
    ("train", "train.eval_max_seconds=-1", "train.eval_max_seconds=-1.0: must be > 0 or null"),
    ("train", "train.seed=-1", "train.seed=-1: must be an integer in 0..9223372036854775807"),
    ("train", "train.threads=0", "train.threads=0: must be an integer >= 1 or null"),
    ("train", "train.device=tpu", "train.device=tpu: use auto, cpu, cuda or cuda:N"),
    ("train", "train.precision=fp8", "train.precision=fp8: use auto, fp32, tf32, bf16"),
    ("train", "train.resume_changes=maybe", "train.resume_changes=maybe: use refuse, allow"),
    ("train", "train.stop_at=0", "train.stop_at=0: must be an integer >= 1 or null"),
    ("train", "data.crop_samples=0", "data.crop_samples=0: must be an integer >= 1"),
    ("train", "data.valid_fraction=1.5", "data.valid_fraction=1.5: must be in [0, 1)"),
    ("train", "data.speed_perturb=0.6", "data.speed_perturb=0.6: must be in [0, 0.5]"),
    ("vocoder", "data.speed_perturb=0.1", "data.speed_perturb=0.1 changes a crop's pitch and "
     "timing, which its mel frames would no longer describe: set data.speed_perturb=0"),
    ("train", "data.num_workers=-1", "data.num_workers=-1: must be an integer in 0..256"),
    ("train", "data.audio.sample_rate=7", "data.audio.sample_rate=7: must be an integer in "
     "1000..384000"),
    ("train", "data.audio.trim_db=-10", "data.audio.trim_db=-10.0: must be > 0 or null"),
    ("train", "data.audio.normalize=loud", "data.audio.normalize=loud: use peak, rms, null"),
    ("train", "data.audio.peak_level=2", "data.audio.peak_level=2.0: must be in (0, 1]"),
    ("train", "data.audio.rms_level_db=6", "data.audio.rms_level_db=6.0: must be in [-100, 0]"),
    ("train", "model.residual_channels=0", "model.residual_channels=0: must be an integer in "
     "1..8192"),
    ("train", "model.layers_per_cycle=40", "model.layers_per_cycle=40: must be an integer in "
     "1..24"),
    ("train", "model.kernel_size=5", "model.kernel_size=5: use 2 or 3"),
    ("train", "model.quantization_channels=1", "model.quantization_channels=1: must be an "
     "integer in 2..65536"),
    ("train", "model.n_speakers=-2", "model.n_speakers=-2: must be an integer in 0..1000000"),
    ("train", "model.log_scale_min=5", "model.log_scale_min=5.0: must be in [-20, 0]"),
    ("vocoder", "model.mel.n_fft=0", "model.mel.n_fft=0: must be an integer in 8..65536"),
    ("vocoder", "model.mel.n_mels=600", "model.mel.n_mels=600: must be an integer in 1..513"),
    ("vocoder", "model.mel.log_floor=0", "model.mel.log_floor=0.0: must be in (0, 1)"),
    ("vocoder", "model.mel.f_max=20000", "model.mel.f_max=20000.0: must be in (0, 8000] or "
     "null (half of data.audio.sample_rate is 8000)"),
    ("vocoder", "model.upsample_scales=[4,0]", "model.upsample_scales[1]=0: must be an integer"),
    ("vocoder", "model.pre_emphasis=1", "model.pre_emphasis=1.0: must be in [0, 1)"),
    ("vocoder", "model.lpc_order=100", "model.lpc_order=100: must be an integer in 0..64"),
    ("train", "model.lpc_order=16", "model.lpc_order=16 needs mel conditioning"),
    ("train", "model.excitation_rms=0.1", "model.excitation_rms=0.1 scales a linear predictor's "
     "residual: set model.lpc_order too, or model.excitation_rms=0"),
    ("train", "model.input=table", "model.input=table: use onehot, scalar, both"),
    ("train", "model.adaptive_lpc_order=300", "model.adaptive_lpc_order=300: must be an integer "
     "in 0..256"),
    ("vocoder", "model.adaptive_lpc_window=1", "model.adaptive_lpc_window=1: must be an "
     "integer in 2..65536"),
    ("vocoder", "model.adaptive_lpc_hop=0", "model.adaptive_lpc_hop=0: must be an integer in "
     "1..65536"),
    ("train", "model.adaptive_lpc_gamma=0", "model.adaptive_lpc_gamma=0.0: must be in (0, 1]"),
    ("vocoder", "model.adaptive_lpc_order=8", "model.adaptive_lpc_order=8 and "
     "model.lpc_order=16 are two predictors: set one of them to 0"),
    ("vocoder", "model.excitation_rms=2", "model.excitation_rms=2.0: must be in [0, 1]"),
    ("vocoder", "model.cond_layers=-1", "model.cond_layers=-1: must be an integer in 0..64"),
    ("vocoder", "model.cond_channels=0", "model.cond_channels=0: must be an integer in "
     "1..8192"),
    ("vocoder", "model.mel.sample_rate=22050", "model.mel.sample_rate=22050 but "
     "data.audio.sample_rate=16000: leave the first unset"),
    ("evaluate", "temperature=-0.5", "temperature=-0.5: must be in [0, 100]"),
    ("evaluate", "sample_streams=-1", "sample_streams=-1: must be an integer in 0..4096"),
    ("evaluate", "resynth_seconds=0", "resynth_seconds=0.0: must be in (0, 3600] or null"),
    ("sample", "temperature=-1", "temperature=-1.0: must be in [0, 100]"),
    ("sample", "n_samples=0", "n_samples=0: must be an integer in 1..65536"),
    ("sample", "seconds=0", "seconds=0.0: must be in (0, 86400]"),
    ("sample", "prime_seconds=0", "prime_seconds=0.0: must be > 0 or null"),
    ("sample", "seed=-4", "seed=-4: must be an integer"),
    ("sample", "method=quick", "method=quick: use fast, incremental, naive"),
    ("sample", "threads=0", "threads=0: must be an integer >= 1 or null"),
    ("evaluate", "split=test", "split=test: use valid, train, all"),
    ("evaluate", "max_seconds=0", "max_seconds=0.0: must be > 0 or null"),
    ("evaluate", "resynth_files=-1", "resynth_files=-1: must be an integer >= 0"),
    ("evaluate", "data.valid_fraction=1", "data.valid_fraction=1.0: must be in [0, 1) or null"),
    ("bench", "batch_sizes=[1,0]", "batch_sizes[1]=0: must be an integer in 1..65536"),
    ("bench", "fast_seconds=0", "fast_seconds=0.0: must be > 0"),
    ("bench", "models=[]", "models=[]: name at least one model config"),
])
def test_every_value_out_of_its_domain_is_named_with_what_is_allowed(program, override,
                                                                     expected):
    required = {"train": ["data.root=/x"], "vocoder": ["experiment=vocoder", "data.root=/x"],
                "sample": ["checkpoint=x.pt"], "evaluate": ["checkpoint=x.pt"], "bench": []}
    with pytest.raises(UserError) as raised:
        compose_job("train" if program == "vocoder" else program, required[program] + [override])
    assert str(raised.value).startswith(expected), str(raised.value)


def test_out_of_domain_values_stop_the_programs_before_any_work(tmp_path):
    for program, override, expected in (
            ("train", "train.lr=-1", "train.lr=-1.0: must be in (0, 10]"),
            ("sample", "temperature=-1", "temperature=-1.0: must be in [0, 100]"),
            ("evaluate", "resynth_files=-1", "resynth_files=-1: must be an integer >= 0")):
        args = {"train": ["data=demo_piano", f"data.cache_dir={tmp_path}/cache"],
                "sample": ["checkpoint=x.pt"], "evaluate": ["checkpoint=x.pt"]}[program]
        one_line_error(run_script(program, *args, override, cwd=tmp_path), expected)
    assert not (tmp_path / "cache").exists()  # nothing was preprocessed


def test_values_set_from_python_are_checked_when_the_job_runs(tone_folder, tmp_path):
    job = compose_job("train", tiny_train_overrides(tone_folder, tmp_path))
    job.train.lr = -1.0
    with pytest.raises(UserError, match=r"train.lr=-1.0: must be in \(0, 10\]"):
        train(job, tmp_path / "run")


def test_home_is_expanded_in_every_path_field(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    home = str(tmp_path)
    job = compose_job("train", ["data.root='~/a'", "data.valid_root='~/v'", "data.cache_dir='~/c'",
                                "data.speakers='~/s.csv'", "train.resume='~/r.pt'"])
    assert (job.data.root, job.data.valid_root, job.data.cache_dir, job.data.speakers,
            job.train.resume) == tuple(f"{home}/{p}" for p in ("a", "v", "c", "s.csv", "r.pt"))
    job = compose_job("sample", ["checkpoint='~/run'", "prime='~/p.wav'", "mel_from='~/m.npy'",
                                 "out_dir='~/out'"])
    assert (job.checkpoint, job.prime, job.mel_from, job.out_dir) == tuple(
        f"{home}/{p}" for p in ("run", "p.wav", "m.npy", "out"))
    job = compose_job("evaluate", ["checkpoint='~/run'", "out='~/e.json'", "data.root='~/d'",
                                   "data.valid_root='~/dv'", "data.cache_dir='~/dc'"])
    assert (job.checkpoint, job.out, job.data.root, job.data.valid_root, job.data.cache_dir) \
        == tuple(f"{home}/{p}" for p in ("run", "e.json", "d", "dv", "dc"))
    assert compose_job("bench", ["out='~/b.json'"]).out == f"{home}/b.json"


def test_missing_prime_or_mel_file_is_named_before_the_checkpoint_is_read(tmp_path):
    one_line_error(run_script("sample", "checkpoint=nothing.pt", f"prime={tmp_path}/p.wav",
                              cwd=tmp_path), f"prime={tmp_path}/p.wav: no such file")
    one_line_error(run_script("sample", "checkpoint=nothing.pt", f"mel_from={tmp_path}/m.npy",
                              cwd=tmp_path), f"mel_from={tmp_path}/m.npy: no such file")


def test_an_evaluation_result_path_that_is_a_folder(tone_folder, tmp_path):
    ckpt = train(compose_job("train", tiny_train_overrides(tone_folder, tmp_path, steps=1)),
                 tmp_path / "run")
    (tmp_path / "taken").mkdir()
    one_line_error(run_script("evaluate", f"checkpoint={ckpt}", f"out={tmp_path}/taken",
                              cwd=tmp_path),
                   f"out={tmp_path}/taken is a folder: give a file path")


def test_unreadable_or_misplaced_speaker_manifests(tmp_path):
    folder = write_tone_folder(tmp_path / "voices" / "ann", n_files=2, rate=8000).parent
    cache = open_cache(folder, AUDIO, tmp_path / "cache")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(AudioError, match="is not a UTF-8 CSV file of rows path,speaker"):
        speaker_labels(cache, str(binary))
    outside = tmp_path / "outside.csv"
    outside.write_text("/elsewhere/x.wav,ann\n")
    with pytest.raises(AudioError, match=r"outside.csv:1: /elsewhere/x.wav is not under data.root"):
        speaker_labels(cache, str(outside))
    blank = tmp_path / "blank.csv"
    blank.write_text("ann/tone_0.wav,\n")
    with pytest.raises(AudioError, match=r"blank.csv:1: expected path,speaker"):
        speaker_labels(cache, str(blank))


def test_running_out_of_memory_is_one_line():
    line = out_of_memory_line(RuntimeError(
        "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: not enough memory: you "
        "tried to allocate 22000000000000 bytes."))
    assert line.startswith("out of memory ([enforce fail") and "lower train.batch_size" in line
    assert out_of_memory_line(MemoryError()).startswith("out of memory (MemoryError)")
    assert out_of_memory_line(RuntimeError("shape mismatch")) is None


def test_an_interrupted_preprocessing_leaves_no_partial_files(tmp_path, monkeypatch):
    folder = write_tone_folder(tmp_path / "a", n_files=3, rate=8000)
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return load_for_training(*args, **kwargs)

    monkeypatch.setattr(data_module, "load_for_training", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_cache(folder, AUDIO, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    monkeypatch.undo()
    assert len(open_cache(folder, AUDIO, tmp_path / "cache").files) == 3


def test_too_many_open_files_is_one_line():
    line = os_error_line(OSError(errno.EMFILE, "Too many open files", "out/sample_99.wav"))
    assert line == ("out/sample_99.wav: Too many open files; too many files open at once: lower "
                    "n_samples, or raise the limit (ulimit -n)")


def _ctrl_c_reaches_it():
    """A shell without job control starts background jobs with SIGINT ignored, and a child
    inherits that, so Python would never raise KeyboardInterrupt (CI launched with `&` did
    this). A user's Ctrl-C reaches a foreground program, which this restores."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_sampling_is_one_line_and_keeps_the_audio(tone_folder, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from wavenet.cli import REPO_ROOT

    ckpt = train(compose_job("train", tiny_train_overrides(tone_folder, tmp_path, steps=1)),
                 tmp_path / "run")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / "sample.py"),
                             f"checkpoint={ckpt}", "seconds=600", "out_dir=gen",
                             "progress=false", "method=incremental"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_reaches_it)
    wav = tmp_path / "gen" / "sample_00.wav"
    try:
        deadline = time.monotonic() + 120
        while not (wav.exists() and wav.stat().st_size > 4000):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a child that hangs must not outlive the test
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert "Traceback" not in err
    audio, rate = sf.read(wav)
    assert rate == 8000 and len(audio) >= 1000


def test_a_vocoder_takes_files_shorter_than_half_its_fft(tmp_path):
    from wavenet.features import MelConfig

    folder = write_tone_folder(tmp_path / "a", n_files=2, rate=8000)
    sf.write(folder / "short.wav", np.full(300, 0.2, np.float32), 8000)  # < n_fft / 2
    mel = MelConfig(n_fft=1024, hop_length=64, n_mels=20)
    cache = open_cache(folder, AUDIO, tmp_path / "cache", mel=mel)
    short = next(f for f in cache.files if f.path == "short.wav")
    assert short.length == 300 and short.frames == 300 // 64 + 1
    assert np.isfinite(cache.mels(cache.files.index(short))).all()


def test_resuming_a_finished_checkpoint_into_a_new_folder(tone_folder, tmp_path, capsys):
    base = tiny_train_overrides(tone_folder, tmp_path, steps=4)
    first = train(compose_job("train", base), tmp_path / "run")
    # A run folder resumes from its newest step checkpoint, not from best.pt.
    from wavenet.checkpoint import newest
    assert newest(tmp_path / "run") == first
    again = train(compose_job("train", base + [f"train.resume={tmp_path / 'run'}"]),
                  tmp_path / "other")
    assert again == first and "already trained" in capsys.readouterr().out


@pytest.mark.parametrize("args,expected", [
    (["data=demo_piano", "+model.layerz=3"], "model.layerz is not a setting of this program"),
    (["data=demo_piano", "+train.bar=x"], "train.bar is not a setting of this program"),
    (["data=demo_piano", "model=null"], "model=null: choose one of base, debug, small"),
    (["data=null"], "data=null: choose one of demo_piano, demo_speech, folder"),
    (["data=demo_piano", "model.mel.n_mels=40"],
     "model.mel.n_mels=40: model.mel is null in this config, so it has no such key"),
    (["data=demo_piano", "train.eval_max_seconds=1e-5"],
     "train.eval_max_seconds=1e-05 is less than one sample at 16000 Hz"),
    (["data.root=/nowhere", "data.valid_root=/nowhere2"], "data folder /nowhere does not exist"),
])
def test_overrides_hydra_would_take_silently_or_with_a_traceback(tmp_path, args, expected):
    one_line_error(run_script("train", *args, f"data.cache_dir={tmp_path}/c", cwd=tmp_path),
                   expected)


def test_experiment_null_is_the_default(tmp_path):
    done = run_script("train", "experiment=null", "data=demo_piano", "--cfg", "job", cwd=tmp_path)
    assert done.returncode == 0 and "name: wavenet" in done.stdout, done.stderr


def test_a_missing_held_out_folder_is_named_by_its_key(tone_folder, tmp_path):
    one_line_error(run_script("train", *tiny_train_overrides(tone_folder, tmp_path),
                              f"data.valid_root={tmp_path}/nope", cwd=tmp_path),
                   f"{tmp_path}/nope does not exist or is not a folder; set data.valid_root=")


@pytest.mark.parametrize("code,advice", [
    (errno.ENAMETOOLONG, "choose a shorter path"),
    (errno.ELOOP, "a symbolic link in that path loops"),
    (errno.ENOENT, "a folder in that path does not exist or cannot be created"),
])
def test_more_os_errors_are_one_line(code, advice):
    line = os_error_line(OSError(code, "message", "some/path"))
    assert line.startswith(f"some/path: message; {advice}")


def test_more_streams_than_open_files_is_refused_before_any_file_is_written(tone_folder,
                                                                           tmp_path):
    import resource

    ckpt = train(compose_job("train", tiny_train_overrides(tone_folder, tmp_path, steps=1)),
                 tmp_path / "run")
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY or limit > 60000:
        pytest.skip(f"this machine's open-file limit ({limit}) is above n_samples' range")
    one_line_error(run_script("sample", f"checkpoint={ckpt}", f"n_samples={limit}",
                              "seconds=0.001", "out_dir=gen", cwd=tmp_path),
                   f"n_samples={limit} needs as many files open at once")
    assert not (tmp_path / "gen").exists() or not list((tmp_path / "gen").iterdir())


def test_a_manifest_that_names_no_training_file(tmp_path):
    write_tone_folder(tmp_path / "voices" / "ann", n_files=2, rate=8000)
    manifest = tmp_path / "empty.csv"
    manifest.write_text("path,speaker\n")
    job = compose_job("train", ["experiment=multispeaker", f"data.speakers={manifest}",
                                *tiny_train_overrides(tmp_path / "voices", tmp_path)])
    with pytest.raises(UserError, match="no training file in .* has a speaker from "
                                        "data.speakers="):
        train(job, tmp_path / "run")


def test_temporary_files_of_a_killed_build_are_removed_by_the_next(tmp_path):
    folder = write_tone_folder(tmp_path / "a", n_files=2, rate=8000)
    cache = open_cache(folder, AUDIO, tmp_path / "cache")
    dead = 2**22 + 12345  # above Linux's largest pid: no such process
    orphan = cache.directory / f"samples-0123456789ab.i16.tmp{dead}"
    orphan.write_bytes(b"half a cache")
    (folder / "tone_0.wav").touch()  # a change: the next open rebuilds
    import os
    st = os.stat(folder / "tone_0.wav")
    os.utime(folder / "tone_0.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    open_cache(folder, AUDIO, tmp_path / "cache")
    assert not orphan.exists()
