"""A wall-clock budget (train.max_time), resumes that refuse to change a run silently, and a
preprocessing cache keyed by everything that shapes it."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import compose_job, run_script, tiny_train_overrides
from wavenet import checkpoint
from wavenet.audio import AudioConfig
from wavenet.checks import duration_seconds
from wavenet.config import TrainConfig
from wavenet.data import open_cache
from wavenet.train import TrainState, lr_factor, run_changes, train

from .test_bad_input import one_line_error


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400), ("1d", 86400),
    ("600", 600), ("2.5", 2.5), (" 1h 5s ", 3605),
])
def test_durations(text, seconds):
    assert duration_seconds("train.max_time", text) == seconds


def test_the_schedule_spans_the_time_budget():
    cfg = TrainConfig(max_steps=None, max_time="1h", lr=1e-3, final_lr=1e-5, warmup_steps=10)
    assert lr_factor(4, cfg, 0.0) == pytest.approx(0.5)  # warm-up is in steps
    assert lr_factor(100, cfg, 0.0) == pytest.approx(1.0)
    assert lr_factor(100, cfg, 0.5) == pytest.approx((1 + 0.01) / 2)
    assert lr_factor(10**6, cfg, 1.0) == pytest.approx(0.01)
    # A final rate above the peak (e.g. train.lr lowered, final_lr left at its default) is the
    # peak: the rate stays constant rather than rising.
    low = TrainConfig(lr=5e-6, final_lr=1e-5, warmup_steps=0, max_steps=100)
    assert [lr_factor(s, low) for s in (0, 50, 100)] == [1.0, 1.0, 1.0]
    both = TrainConfig(max_steps=110, max_time="1h", lr=1e-3, warmup_steps=10)
    # Whichever limit the run is closer to sets the pace.
    assert lr_factor(60, both, 0.1) == lr_factor(60, both, 0.0) == pytest.approx((1 + 0.01) / 2)
    assert lr_factor(20, both, 0.5) == pytest.approx((1 + 0.01) / 2)


def test_a_time_budget_stops_with_a_checkpoint_and_resumes_with_the_same_meaning(tone_folder,
                                                                                 tmp_path,
                                                                                 capsys):
    budget = tiny_train_overrides(tone_folder, tmp_path, steps=2) + [
        "train.max_steps=null", "train.max_time=3s", "train.eval_every=1000",
        "train.checkpoint_every=1000"]
    first = train(compose_job("train", budget), tmp_path / "run")
    ckpt = checkpoint.load(first)
    assert ckpt["step"] > 5 and 3.0 <= ckpt["elapsed_s"] < 30
    # The schedule ran to its end with the budget: the last step's rate is about final_lr.
    last_lr = ckpt["optimizer"]["param_groups"][0]["lr"]
    assert last_lr < 0.05 * 1e-3
    assert "training until 3s of training" in capsys.readouterr().out

    again = train(compose_job("train", budget + ["train.resume=auto"]), tmp_path / "run")
    assert again == first and "nothing to do" in capsys.readouterr().out

    longer = budget + ["train.resume=auto", "train.max_time=5s"]
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"train.max_time=3s \(now 5s\); .*train.resume_changes=allow"):
        train(compose_job("train", longer), tmp_path / "run")
    more = checkpoint.load(train(compose_job("train", longer + ["train.resume_changes=allow"]),
                                 tmp_path / "run"))
    assert more["step"] > ckpt["step"] and 5.0 <= more["elapsed_s"] < ckpt["elapsed_s"] + 30
    assert "3s of the budget already used" in capsys.readouterr().out


def test_steps_and_time_together_stop_at_whichever_comes_first(tone_folder, tmp_path):
    job = compose_job("train", tiny_train_overrides(tone_folder, tmp_path, steps=3)
                      + ["train.max_time=1h"])
    assert checkpoint.load(train(job, tmp_path / "run"))["step"] == 3
    # The time runs out long before a million steps; the schedule follows the time.
    job = compose_job("train", tiny_train_overrides(tone_folder, tmp_path, steps=10**6)
                      + ["train.max_time=2s", "train.eval_every=1000",
                         "train.checkpoint_every=1000"])
    ckpt = checkpoint.load(train(job, tmp_path / "both"))
    assert 2 < ckpt["step"] < 10**4 and ckpt["elapsed_s"] >= 2.0
    assert ckpt["optimizer"]["param_groups"][0]["lr"] < 0.05 * 1e-3


def test_resuming_with_settings_that_change_the_run_is_refused(tone_folder, tmp_path):
    base = tiny_train_overrides(tone_folder, tmp_path, steps=4) + [
        "name=r", "train.stop_at=2", "train.lr=0.004"]
    done = run_script("train", *base, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    changed = [o for o in base if not o.startswith(("train.stop_at", "train.lr"))] + [
        "train.resume=auto", "train.lr=0.002", "train.batch_size=4", "data.crop_samples=100"]
    one_line_error(run_script("train", *changed, cwd=tmp_path),
                   "step-00000002.pt was trained with other settings: data.crop_samples=200 "
                   "(now 100), train.batch_size=2 (now 4), train.lr=0.004 (now 0.002); resume "
                   "with the same values, or pass train.resume_changes=allow")
    # How a run is watched, stored or split into jobs may change freely.
    free = [o for o in base if not o.startswith("train.stop_at")] + [
        "train.resume=auto", "train.log_every=3", "train.keep_last=1", "train.eval_every=1",
        "data.num_workers=1", "train.progress=true"]
    done = run_script("train", *free, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    allowed = changed + ["train.resume_changes=allow", "train.max_steps=6"]
    done = run_script("train", *allowed, cwd=tmp_path)
    assert done.returncode == 0 and "resuming with changed settings" in done.stderr + done.stdout
    final = checkpoint.load(tmp_path / "outputs/r/checkpoints/step-00000006.pt")
    assert final["config"]["train"]["lr"] == 0.002 and final["config"]["train"]["batch_size"] == 4
    assert final["config"]["data"]["crop_samples"] == 100

    # A refused resume reads no audio: nothing is preprocessed for the new settings.
    cache = tmp_path / "cache"
    before = sorted(p.name for p in cache.iterdir())
    one_line_error(run_script("train", *changed, "data.audio.sample_rate=4000", cwd=tmp_path),
                   "data.audio.sample_rate=8000 (now 4000)")
    assert sorted(p.name for p in cache.iterdir()) == before


def test_a_resume_with_changed_optimizer_settings_uses_the_new_ones(tmp_path):
    """resume_changes=allow: the optimizer keeps its moments from the checkpoint but takes its
    betas and weight decay (and AdamW's decoupling) from the job, as the log says it does."""

    def state(*overrides):
        job = compose_job("train", ["model=debug", f"data.root={tmp_path}", *overrides])
        return TrainState(job, torch.device("cpu"))

    old = state("train.weight_decay=0", "train.betas=[0.9,0.999]")
    x = torch.randint(0, old.model.cfg.quantization_channels, (1, 40))
    old.model(x).square().mean().backward()
    old.optimizer.step()
    ckpt = {"model": old.model.state_dict(), "ema": None, "ema_n_averaged": 0,
            "optimizer": old.optimizer.state_dict(), "step": 1,
            "rng": {"torch": torch.get_rng_state(), "cuda": []}}
    new = state("train.weight_decay=0.05", "train.betas=[0.8,0.99]", "train.ema_decay=null")
    new.load(ckpt)
    group = new.optimizer.param_groups[0]
    assert group["weight_decay"] == 0.05 and group["betas"] == (0.8, 0.99)
    assert group["decoupled_weight_decay"]  # AdamW's, though the checkpoint held Adam's
    moved = [(old.optimizer.state[a]["exp_avg"], new.optimizer.state[b]["exp_avg"])
             for a, b in zip(old.model.parameters(), new.model.parameters(), strict=True)
             if a in old.optimizer.state]
    assert moved and all(torch.equal(a, b) for a, b in moved)
    # and back: AdamW's checkpoint resumed as plain Adam
    back = state("train.weight_decay=0", "train.ema_decay=null")
    back.load({**ckpt, "optimizer": new.optimizer.state_dict()})
    assert not back.optimizer.param_groups[0]["decoupled_weight_decay"]
    assert back.optimizer.param_groups[0]["weight_decay"] == 0


def test_resuming_from_an_earlier_checkpoint_sets_the_later_ones_aside(tone_folder, tmp_path):
    """A resume from step 2 of a run that went on to step 6 starts another history: the old
    steps 4 and 6 (and a best.pt written past step 2) move to superseded-00000002/ instead of
    outranking the new checkpoints, and are not lost."""
    base = tiny_train_overrides(tone_folder, tmp_path, steps=6) + ["train.keep_last=3"]
    run = tmp_path / "run"
    train(compose_job("train", base), run)
    ckpts = run / "checkpoints"
    old = {p.name: checkpoint.load(p) for p in ckpts.glob("*.pt")}
    assert sorted(old) == ["best.pt", "step-00000002.pt", "step-00000004.pt",
                           "step-00000006.pt"]
    other = base + [f"train.resume={ckpts / 'step-00000002.pt'}",
                    "train.resume_changes=allow", "train.lr=0.0005"]
    train(compose_job("train", other), run)
    aside = ckpts / "superseded-00000002"
    moved = sorted(p.name for p in aside.iterdir())
    assert moved == sorted(["step-00000004.pt", "step-00000006.pt"]
                           + (["best.pt"] if old["best.pt"]["step"] > 2 else []))
    for name in moved:  # the old history, intact
        kept = checkpoint.load(aside / name)
        assert kept["step"] == old[name]["step"]
        assert all(torch.equal(kept["model"][k], v) for k, v in old[name]["model"].items())
    new = checkpoint.load(ckpts / "step-00000006.pt")
    assert new["config"]["train"]["lr"] == 0.0005
    assert not all(torch.equal(new["model"][k], v)
                   for k, v in old["step-00000006.pt"]["model"].items())
    assert checkpoint.newest(run) == ckpts / "step-00000006.pt"


def test_auto_precision_resumes_only_as_the_arithmetic_it_ran(tone_folder, tmp_path,
                                                             monkeypatch):
    """train.precision=auto is bf16 on one machine and fp32 on another: a checkpoint records
    what it ran as, and a resume that would run otherwise is a change like any other."""
    import wavenet.train as train_module
    from wavenet.runtime import training_precision

    base = tiny_train_overrides(tone_folder, tmp_path, steps=4) + ["train.precision=auto"]
    first = checkpoint.load(train(compose_job("train", base + ["train.stop_at=2"]),
                                  tmp_path / "run"))
    here = training_precision(torch.device("cpu"), "auto")
    other = "fp32" if here == "bf16" else "bf16"
    assert first["arithmetic"] == here
    monkeypatch.setattr(train_module, "training_precision",
                        lambda device, name: other if name == "auto" else name)
    with pytest.raises(checkpoint.CheckpointError,
                       match=rf"train.precision=auto as {here} \(now auto as {other} on this "
                             r"machine\); .*train.resume_changes=allow"):
        train(compose_job("train", base + ["train.resume=auto"]), tmp_path / "run")
    done = checkpoint.load(train(compose_job("train", base + [
        "train.resume=auto", "train.resume_changes=allow"]), tmp_path / "run"))
    assert done["step"] == 4 and done["arithmetic"] == other


def test_a_checkpoint_older_than_a_setting_resumes_only_with_its_old_behaviour(tmp_path):
    job = compose_job("train", [f"data.root={tmp_path}"])
    stored = asdict(job)
    del stored["data"]["flip_polarity"]  # as written before the key existed: no flipping
    assert run_changes(stored, asdict(job)) == {"data.flip_polarity": (False, True)}
    job.data.flip_polarity = False
    assert run_changes(stored, asdict(job)) == {}
    del stored["data"]["speed_perturb"]  # nor speed perturbation
    job.data.speed_perturb = 0.1
    assert run_changes(stored, asdict(job)) == {"data.speed_perturb": (0.0, 0.1)}
    job.data.speed_perturb = 0.0
    del stored["train"]["input_noise"]  # nor input noise
    job.train.input_noise = 1.0
    assert run_changes(stored, asdict(job)) == {"train.input_noise": (0.0, 1.0)}


def test_the_cache_key_covers_what_shapes_the_audio_and_nothing_of_the_model(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    x = np.zeros(8000, np.float32)
    x[3000:3300] = 0.5 * np.sin(np.arange(300) / 3)  # 300 loud samples inside silence
    sf.write(folder / "x.wav", x, 8000)
    trimmed = open_cache(folder, AudioConfig(sample_rate=8000, trim_db=40.0), tmp_path / "c")
    whole = open_cache(folder, AudioConfig(sample_rate=8000, trim_db=None), tmp_path / "c")
    assert trimmed.directory != whole.directory
    # Trimming keeps at least a tenth of a second (it keeps the whole file otherwise).
    assert whole.files[0].length == 8000 and trimmed.files[0].length == 8000
    x[2000:2300] = x[3000:3300]  # now 1,300 samples between the first and last loud ones
    sf.write(folder / "x.wav", x, 8000)
    assert open_cache(folder, AudioConfig(sample_rate=8000, trim_db=40.0),
                      tmp_path / "c").files[0].length < 1400
    # Models of every receptive field read the same cache.
    for model in ("debug", "small"):
        job = compose_job("train", [f"model={model}", f"data.root={folder}",
                                    f"data.cache_dir={tmp_path / 'c'}",
                                    "data.audio.sample_rate=8000", "data.crop_samples=10"])
        from wavenet.distributed import World
        from wavenet.train_data import TrainData
        assert TrainData.open(job, World()).dataset.cache.directory == trimmed.directory
