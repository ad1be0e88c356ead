"""The Python API: load, generate as arrays, write; the README's example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import wavenet
from tests.conftest import compose_job, tiny_train_overrides, write_tone_folder
from wavenet.cli import REPO_ROOT
from wavenet.errors import UserError
from wavenet.sample import sample
from wavenet.train import train

from .test_conditioning import RATE, VOCODER, switching_tones


def readme_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    # Its paths are the checkout's (the demo data) and outputs/ under the working folder.
    (tmp_path / "data").symlink_to(REPO_ROOT / "data")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "<wavenet WaveNet from outputs/notebook/checkpoints/best.pt (step 20" in done.stdout
    audio, rate = sf.read(tmp_path / "outputs/notebook/sample.wav")
    assert rate == 16000 and len(audio) == 8000 and np.abs(audio).max() > 0


@pytest.fixture(scope="module")
def tone_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    folder = write_tone_folder(tmp / "audio")
    return train(compose_job("train", tiny_train_overrides(folder, tmp)), tmp / "run"), folder


def test_generate_matches_the_sample_program_and_is_reproducible(tone_run, tmp_path):
    ckpt, folder = tone_run
    model = wavenet.load(ckpt.parent.parent)  # the run folder
    assert model.step == 4 and model.sample_rate == 8000 and model.weights == "ema"
    audio = model.generate(seconds=0.05, n=3, temperature=0.9, seed=5)
    assert audio.shape == (3, 400) and audio.dtype == np.float32
    np.testing.assert_array_equal(audio, model.generate(seconds=0.05, n=3, temperature=0.9,
                                                        seed=5, method="naive"))
    paths = sample(compose_job("sample", [f"checkpoint={ckpt}", "n_samples=3", "seconds=0.05",
                                          "temperature=0.9", "seed=5", "progress=false"]),
                   tmp_path / "out")
    for row, path in zip(audio, paths, strict=True):  # the WAVs are the same audio in 16 bits
        np.testing.assert_allclose(sf.read(path)[0], row, atol=1.5 / 32768)

    written = wavenet.write_wav(tmp_path / "sub" / "one.wav", audio[0], model.sample_rate)
    assert sf.info(written).samplerate == 8000 and sf.info(written).subtype == "PCM_16"
    with pytest.raises(UserError, match="one stream"):
        wavenet.write_wav(tmp_path / "x.wav", audio, 8000)


def test_prime_from_a_file_or_an_array_is_the_same(tone_run):
    ckpt, folder = tone_run
    model = wavenet.load(ckpt)
    prime = model.prime_audio(folder / "tone_0.wav", seconds=0.1)
    assert prime.shape == (800,)
    from_file = model.generate(0.02, 2, prime=folder / "tone_0.wav", prime_seconds=0.1, seed=1)
    from_array = model.generate(0.02, 2, prime=prime.numpy(), seed=1)
    np.testing.assert_array_equal(from_file, from_array)
    per_stream = model.generate(0.02, 2, prime=np.stack([prime.numpy()] * 2), seed=1)
    np.testing.assert_array_equal(from_file, per_stream)
    greedy = model.generate(0.02, prime=prime.numpy(), temperature=0, seed=1)
    np.testing.assert_array_equal(greedy, model.generate(0.02, prime=prime.numpy(),
                                                         temperature=0, seed=2))


def test_a_prime_file_with_nan_samples_is_one_line(tone_run, tmp_path):
    x = np.full(800, 0.1, np.float32)
    x[5] = np.nan
    sf.write(tmp_path / "nan.wav", x, 8000, subtype="FLOAT")
    with pytest.raises(UserError, match=r"nan.wav: 1 samples are NaN or infinite; repair"):
        wavenet.load(tone_run[0]).generate(0.01, prime=tmp_path / "nan.wav")


@pytest.mark.parametrize("kwargs,message", [
    ({"n": 0}, "n=0: must be an integer in 1..65536"),
    ({"seconds": -1.0}, "seconds=-1.0: must be in (0, 86400]"),
    ({"temperature": -0.5}, "temperature=-0.5: must be in [0, 100]"),
    ({"temperature": float("nan")}, "temperature=nan"),
    ({"seed": -3}, "seed=-3"),
    ({"method": "magic"}, "method=magic: use fast, incremental, naive"),
    ({"prime_seconds": 0.0}, "prime_seconds=0.0: must be > 0"),
    ({"seconds": 1e-6}, "less than one sample at 8000 Hz"),
    ({"prime": np.zeros((2, 3, 4))}, "prime has shape (2, 3, 4)"),
    ({"prime": np.array([0.1, np.nan])}, "prime holds NaN"),
    ({"prime": np.zeros((3, 10)), "n": 2}, "prime has 3 rows for 2 streams"),
    ({"prime": "nowhere.wav"}, "prime=nowhere.wav: no such file"),
    ({"speaker": "bob"}, "speaker=bob: this checkpoint has no speakers"),
    ({"mel": np.zeros((20, 3))}, "not a vocoder"),
])
def test_bad_generation_settings_are_one_line_errors(tone_run, kwargs, message):
    model = wavenet.load(tone_run[0])
    with pytest.raises(UserError) as raised:
        model.generate(**{"seconds": 0.01, **kwargs})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_vocoder_takes_a_file_an_npy_or_an_array(tmp_path):
    switching_tones(tmp_path / "a" / "x.wav", 0.6, seed=0)
    switching_tones(tmp_path / "a" / "y.wav", 0.6, seed=1)
    ckpt = train(compose_job("train", ["experiment=vocoder", *VOCODER,
                                       *tiny_train_overrides(tmp_path / "a", tmp_path, steps=2)]),
                 tmp_path / "run")
    model = wavenet.load(ckpt)
    assert model.is_vocoder and "vocoder" in repr(model)
    source = model.load_audio(tmp_path / "a" / "x.wav")
    feats = model.log_mel(source)
    assert feats.shape == (20, len(source) // 32)
    from_file = model.generate(mel=tmp_path / "a" / "x.wav", seed=3)
    from_array = model.generate(mel=feats, seed=3)
    np.testing.assert_array_equal(from_file, from_array)
    assert from_array.shape == (1, feats.shape[1] * 32)
    np.save(tmp_path / "f.npy", feats.T)
    np.testing.assert_array_equal(model.generate(mel=tmp_path / "f.npy", seed=3), from_array)
    batch = model.generate(mel=np.stack([feats, feats[:, ::-1]]), seed=3)
    assert batch.shape == (2, feats.shape[1] * 32)
    assert RATE == model.sample_rate

    for mel, message in ((feats.T, "mel has shape"), (feats * np.nan, "NaN"),
                         (None, "give mel features")):
        with pytest.raises(UserError, match=message):
            model.generate(mel=mel)
    with pytest.raises(UserError, match="don't go together"):
        model.generate(mel=feats, prime=np.zeros(100))


def test_compose_builds_the_jobs_of_the_command_line():
    job = wavenet.compose("train", ["experiment=debug", "data.root=/somewhere"])
    assert isinstance(job, wavenet.TrainJob) and job.name == "debug"
    assert job.model.layers_per_cycle == 4 and job.train.max_steps == 20
    with pytest.raises(UserError, match="data.root is not set"):
        wavenet.compose("train", [])
    assert isinstance(wavenet.compose("sample", ["checkpoint=x.pt"]), wavenet.SampleJob)


@pytest.mark.parametrize("kwargs,message", [
    ({"prime": torch.zeros(100, requires_grad=True)}, None),  # a tensor that needs grad is fine
    ({"prime": ["a", "b"]}, "prime must be an array of real numbers"),
    ({"prime": {"a": 1}}, "prime must be an array of real numbers"),
    ({"prime": np.zeros(10, complex)}, "prime must be an array of real numbers, not complex"),
    ({"prime": np.full(10, 1e300)}, "prime holds NaN or infinite values"),
    ({"on_samples": 5}, "on_samples must be a function"),
    ({"seconds": np.float32(0.01), "n": np.int64(2)}, None),  # numpy scalars are numbers
    ({"n": 2.0}, "n=2.0: must be an integer"),
    ({"speaker": True}, "speaker=True: this checkpoint has no speakers"),
])
def test_api_arguments_of_the_wrong_kind_are_user_errors(tone_run, kwargs, message):
    model = wavenet.load(tone_run[0])
    if message is None:
        assert model.generate(**{"seconds": 0.01, **kwargs}).shape[1] == 80
        return
    with pytest.raises(UserError, match=re.escape(message)):
        model.generate(**{"seconds": 0.01, **kwargs})


def test_load_and_write_wav_reject_the_wrong_kind_of_argument(tone_run, tmp_path):
    with pytest.raises(UserError, match="not int"):
        wavenet.load(5)
    with pytest.raises(UserError, match="device=null: use auto, cpu, cuda or cuda:N"):
        wavenet.load(tone_run[0], device=None)
    audio = np.zeros(100, np.float32)
    with pytest.raises(UserError, match="writes .wav files"):
        wavenet.write_wav(tmp_path / "x.txt", audio, 8000)
    with pytest.raises(UserError, match="sample_rate=0"):
        wavenet.write_wav(tmp_path / "x.wav", audio, 0)
