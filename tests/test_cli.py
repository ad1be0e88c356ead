"""The programs as a user runs them: Hydra configs, checkpoints, resume, sample, evaluate."""

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from tests.conftest import compose_job, run_script, tiny_train_overrides
from wavenet import checkpoint
from wavenet.cli import CONFIG_DIR, REPO_ROOT
from wavenet.config import EvaluateJob, SampleJob, TrainJob
from wavenet.errors import UserError
from wavenet.evaluate import evaluate
from wavenet.sample import sample
from wavenet.train import train

CONFIGS = Path(CONFIG_DIR)


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml")))
@pytest.mark.parametrize("data", sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml")))
def test_every_model_and_data_config_composes(model, data):
    job = compose_job("train", [f"model={model}", f"data={data}", "data.root=/somewhere"])
    assert isinstance(job, TrainJob) and job.model.receptive_field > 1
    if data.startswith("demo"):
        assert Path(compose_job("train", [f"data={data}"]).data.root).is_dir()


@pytest.mark.parametrize("experiment",
                         sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    job = compose_job("train", [f"experiment={experiment}", "data.root=/somewhere"])
    assert job.name.replace("-", "_") == experiment  # each preset names its own run


def test_job_configs_compose():
    assert isinstance(compose_job("sample", ["checkpoint=x.pt"]), SampleJob)
    assert isinstance(compose_job("evaluate", ["checkpoint=x.pt"]), EvaluateJob)
    assert compose_job("bench", []).models == ["small", "base"]


@pytest.mark.parametrize("override,error", [
    ("model.layerz=3", ConfigCompositionException),
    ("train.max_steps=lots", ConfigCompositionException),
    ("model=huge", ConfigCompositionException),
])
def test_bad_overrides_are_rejected(override, error):
    with pytest.raises(error):
        compose_job("train", [override, "data.root=/x"])


def test_typo_in_a_config_file_is_rejected(tmp_path):
    from omegaconf import OmegaConf

    from wavenet.model import WaveNetConfig

    with pytest.raises((ConfigKeyError, ValidationError)):
        OmegaConf.merge(OmegaConf.structured(WaveNetConfig), {"layerz": 3})


def test_train_sample_evaluate_from_the_command_line(tone_folder, tmp_path):
    overrides = tiny_train_overrides(tone_folder, tmp_path) + ["name=cli"]
    done = run_script("train", *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "receptive field 16 samples" in done.stdout and "parameters" in done.stdout
    ckpt = tmp_path / "outputs" / "cli" / "checkpoints" / "step-00000004.pt"
    assert ckpt.is_file() and (tmp_path / "outputs/cli/checkpoints/best.pt").is_file()
    assert list((tmp_path / "outputs/cli/tensorboard").glob("events.*"))
    assert (tmp_path / "outputs/cli/train.log").is_file()

    again = run_script("train", *overrides, cwd=tmp_path)  # would overwrite: refused, one line
    assert again.returncode == 1 and "train.resume=auto" in again.stderr
    assert "Traceback" not in again.stderr

    done = run_script("sample", "checkpoint=outputs/cli", "n_samples=2", "seconds=0.25",
                      "temperature=0.9", "seed=0", "out_dir=gen", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for i in range(2):
        audio, rate = sf.read(tmp_path / "gen" / f"sample_{i:02d}.wav")
        assert rate == 8000 and len(audio) == 2000
        assert sf.info(tmp_path / "gen" / f"sample_{i:02d}.wav").subtype == "PCM_16"
        assert (tmp_path / "gen" / f"sample_{i:02d}.png").stat().st_size > 1000

    done = run_script("evaluate", f"checkpoint={ckpt}", f"data.root={tone_folder}", "split=all",
                      "out=eval.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "bits/sample" in done.stdout
    result = json.loads((tmp_path / "eval.json").read_text())
    assert 0 < result["bits_per_sample"] < 12 and result["files"] == 4


def test_resume_continues_exactly(tone_folder, tmp_path):
    base = tiny_train_overrides(tone_folder, tmp_path, steps=6)
    whole = train(compose_job("train", base), tmp_path / "whole")
    train(compose_job("train", base + ["train.stop_at=4"]), tmp_path / "split")
    assert checkpoint.step_checkpoints(tmp_path / "split" / "checkpoints")[-1].name \
        == "step-00000004.pt"
    resumed = train(compose_job("train", base + ["train.resume=auto"]), tmp_path / "split")
    a, b = checkpoint.load(whole), checkpoint.load(resumed)
    assert a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])

    written = resumed.stat().st_mtime_ns  # a finished run resumed again changes nothing
    assert train(compose_job("train", base + ["train.resume=auto"]), tmp_path / "split") == resumed
    assert resumed.stat().st_mtime_ns == written


def test_resume_refuses_a_different_model(tone_folder, tmp_path):
    base = tiny_train_overrides(tone_folder, tmp_path, steps=2)
    train(compose_job("train", base), tmp_path / "run")
    bigger = compose_job("train", base + ["train.resume=auto", "train.max_steps=4",
                                          "model.residual_channels=12"])
    with pytest.raises(checkpoint.CheckpointError, match="different config"):
        train(bigger, tmp_path / "run")


def test_a_checkpoint_from_before_new_model_keys_resumes(tone_folder, tmp_path):
    """Keys added to the model config since (here whitening, and the mel rate) take their
    defaults: an older run resumes without being taken for a different model."""
    base = tiny_train_overrides(tone_folder, tmp_path, steps=2)
    path = train(compose_job("train", base), tmp_path / "run")
    ckpt = checkpoint.load(path)
    for key in ("pre_emphasis", "lpc_order", "excitation_rms", "cond_layers", "cond_channels",
                "adaptive_lpc_order", "adaptive_lpc_window", "adaptive_lpc_hop",
                "adaptive_lpc_gamma"):
        del ckpt["config"]["model"][key]
    torch.save(ckpt, path)
    resumed = train(compose_job("train", base + ["train.resume=auto", "train.max_steps=3",
                                                 "train.resume_changes=allow"]), tmp_path / "run")
    assert checkpoint.load(resumed)["step"] == 3


def test_sample_with_prime_continues_the_recording(tone_folder, tmp_path):
    ckpt = train(compose_job("train", tiny_train_overrides(tone_folder, tmp_path)), tmp_path / "r")
    job = compose_job("sample", [f"checkpoint={ckpt}", "seconds=0.1",
                                 f"prime={tone_folder / 'tone_0.wav'}", "prime_seconds=0.2",
                                 "progress=false"])
    (path,) = sample(job, tmp_path / "out")
    audio, rate = sf.read(path)
    assert rate == 8000 and len(audio) == 1600 + 800


def test_evaluate_uses_the_checkpoint_split_by_default(tone_folder, tmp_path, capsys):
    ckpt = train(compose_job("train", tiny_train_overrides(tone_folder, tmp_path)), tmp_path / "r")
    result = evaluate(compose_job("evaluate", [f"checkpoint={ckpt}", "sample_seconds=0.5"]),
                      tmp_path / "ev")
    assert result["files"] == 1 and result["split"] == "valid"
    out = capsys.readouterr().out
    assert "bits/sample" in out and "× the real-data floor" in out
    written = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert written["step"] == 4
    # Four steps of training make noise: far from the tones, which are near each other.
    quality = written["sample_quality"]
    assert quality["streams"] == 4 and quality["frames"] == 4 * (4000 // 256 + 1)
    assert quality["floor"] < quality["frechet_mel"] and quality["floor"] < quality["ceiling"]
    assert quality["ratio"] > 3 and quality["ceiling_ratio"] > 3


def test_broken_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    done = run_script("sample", f"checkpoint={bad}", cwd=tmp_path)
    assert done.returncode == 1 and "bad.pt" in done.stderr and "Traceback" not in done.stderr
    done = run_script("train", cwd=tmp_path)  # data.root not given
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: data.root is not set: pass data.root=…"


def test_home_relative_paths_are_expanded(tone_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    job = compose_job("train", tiny_train_overrides(tone_folder, tmp_path, steps=2)
                      + ["data.root='~/audio'"])  # quoted: Hydra's grammar rejects a bare ~
    ckpt = train(job, tmp_path / "run")
    assert checkpoint.resolve("~/run") == tmp_path / "run" / "checkpoints" / "best.pt"
    assert checkpoint.load(ckpt)["step"] == 2


def test_keeping_no_checkpoint_is_refused(tone_folder, tmp_path):
    with pytest.raises(UserError, match="train.keep_last=0: must be an integer >= 1"):
        compose_job("train", tiny_train_overrides(tone_folder, tmp_path) + ["train.keep_last=0"])


def test_multirun_sweep_trains_each_point(tone_folder, tmp_path):
    overrides = tiny_train_overrides(tone_folder, tmp_path, steps=2) + ["name=sweep",
                                                                        "train.lr=0.001,0.002"]
    done = run_script("train", "-m", *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    runs = sorted((tmp_path / "multirun" / "sweep").glob("*/*/checkpoints/step-00000002.pt"))
    assert len(runs) == 2
    lrs = {checkpoint.load(p)["config"]["train"]["lr"] for p in runs}
    assert lrs == {0.001, 0.002}


def test_sample_streams_audio_and_a_killed_run_keeps_it(tone_folder, tmp_path):
    ckpt = train(compose_job("train", tiny_train_overrides(tone_folder, tmp_path)), tmp_path / "r")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / "sample.py"),
                             f"checkpoint={ckpt}", "seconds=60", "out_dir=gen", "progress=false"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wav = tmp_path / "gen" / "sample_00.wav"
    deadline = time.monotonic() + 120
    frames = 0
    while time.monotonic() < deadline and frames < 4000:  # the file grows while it runs
        time.sleep(0.2)
        with contextlib.suppress(RuntimeError, OSError):  # caught between two writes
            frames = sf.info(wav).frames if wav.exists() else 0
    proc.kill()
    proc.wait()
    audio, rate = sf.read(wav)
    assert rate == 8000 and 4000 <= len(audio) < 60 * 8000
    assert np.abs(audio).max() > 0


@pytest.mark.parametrize("experiment",
                         sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")))
def test_every_experiment_runs_a_step(experiment, tmp_path):
    """Each preset as it is (model, precision, output, conditioning), on tiny data: one step
    and a checkpoint, so that no preset can crash at its first step again."""
    from tests.conftest import write_tone_folder

    for n, speaker in enumerate(["ann", "bob"]):  # speaker folders suit every preset
        write_tone_folder(tmp_path / "audio" / speaker, n_files=2, seconds=1.0, seed=n)
    job = compose_job("train", [
        f"experiment={experiment}", f"data.root={tmp_path / 'audio'}", "data.valid_root=null",
        f"data.cache_dir={tmp_path / 'cache'}", "data.audio.sample_rate=8000",
        "data.crop_samples=256", "data.num_workers=0", "train.max_steps=1",
        "train.batch_size=2", "train.warmup_steps=1", "train.eval_max_seconds=0.1",
        "train.sample_every=null", "train.progress=false"])
    ckpt = checkpoint.load(train(job, tmp_path / "run"))
    assert ckpt["step"] == 1 and ckpt["config"]["name"] == job.name
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
