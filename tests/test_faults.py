"""Faults during training: signals, kill -9 at random moments, non-finite steps."""

from __future__ import annotations

import math
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import compose_job, tiny_train_overrides
from wavenet import checkpoint
from wavenet.cli import REPO_ROOT
from wavenet.train import Trainer, TrainingDiverged


def start_training(overrides: list[str], run_dir, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / "train.py"), *overrides,
                             f"hydra.run.dir={run_dir}"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(folder, proc, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (folder.is_dir() and checkpoint.step_checkpoints(folder)):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_writes_a_final_checkpoint_and_exits_cleanly(tone_folder, tmp_path, sig):
    overrides = tiny_train_overrides(tone_folder, tmp_path, steps=100000) + [
        "train.checkpoint_every=1000000", "train.eval_every=1000000"]
    run = tmp_path / "run"
    proc = start_training(overrides, run, tmp_path)
    log = run / "train.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "step 3:" in log.read_text()):  # training is under way
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    [final] = checkpoint.step_checkpoints(run / "checkpoints")
    assert checkpoint.load(final)["step"] >= 3 and f"checkpoint: {final}" in out


def kill_at_random_moments(tone_folder, tmp_path, kills: int, seed: int) -> None:
    """Start, kill -9 after a random delay, check every checkpoint loads, resume; repeat."""
    rng = random.Random(seed)
    overrides = tiny_train_overrides(tone_folder, tmp_path, steps=100000) + [
        "train.checkpoint_every=1", "train.eval_every=3", "train.keep_last=2",
        "train.resume=auto"]
    run = tmp_path / "run"
    folder = run / "checkpoints"
    last_step = 0
    for _ in range(kills):
        proc = start_training(overrides, run, tmp_path)
        wait_for_checkpoint(folder, proc)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.communicate()
        saved = checkpoint.step_checkpoints(folder)
        assert saved, "a kill removed every checkpoint"
        steps = [checkpoint.load(path)["step"] for path in saved]  # all intact
        assert steps == sorted(steps) and steps[-1] >= last_step
        if (folder / "best.pt").exists():
            checkpoint.load(folder / "best.pt")
        last_step = steps[-1]
    # After all that, the run still finishes where it should.
    finish = overrides + [f"train.stop_at={last_step + 2}"]
    proc = start_training(finish, run, tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert checkpoint.load(checkpoint.step_checkpoints(folder)[-1])["step"] == last_step + 2


def test_kill_9_at_random_moments_never_corrupts_a_checkpoint(tone_folder, tmp_path):
    kill_at_random_moments(tone_folder, tmp_path, kills=3, seed=0)


@pytest.mark.slow
def test_kill_9_soak(tone_folder, tmp_path):
    kill_at_random_moments(tone_folder, tmp_path, kills=20, seed=1)


def trainer_with_nan_steps(tone_folder, tmp_path, bad_steps: set[int], extra=()) -> Trainer:
    """A Trainer whose loss is NaN at the given (1-based) steps."""
    job = compose_job("train", tiny_train_overrides(tone_folder, tmp_path, steps=8)
                      + ["train.checkpoint_every=2", "train.eval_every=100", *extra])
    trainer = Trainer(job, tmp_path / "run")
    nll = trainer.model.dist.nll

    def poisoned(params, targets, reduction="mean"):
        loss = nll(params, targets, reduction)
        if trainer.model.training and trainer.step + 1 in bad_steps:
            return loss * math.nan
        return loss

    trainer.model.dist.nll = poisoned
    return trainer


def test_non_finite_steps_are_skipped_and_training_goes_on(tone_folder, tmp_path, caplog):
    trainer = trainer_with_nan_steps(tone_folder, tmp_path, {3, 4})
    snapshots = {}
    step = trainer.train_step

    def recording_step(batch):
        result = step(batch)
        snapshots[trainer.step + 1] = [p.detach().clone() for p in trainer.model.parameters()]
        return result

    trainer.train_step = recording_step
    final = trainer.fit()
    assert checkpoint.load(final)["step"] == 8
    for a, b in zip(snapshots[2], snapshots[4], strict=True):  # steps 3 and 4 changed nothing
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[4], snapshots[5], strict=True))
    assert "step 3: loss nan" in caplog.text and "step skipped (2 in a row" in caplog.text


def test_too_many_non_finite_steps_stop_with_the_checkpoint_from_before(tone_folder, tmp_path):
    trainer = trainer_with_nan_steps(tone_folder, tmp_path, set(range(5, 100)),
                                     ["train.max_bad_steps=3"])
    with pytest.raises(TrainingDiverged, match="steps 5-7 all had a non-finite loss") as raised:
        trainer.fit()
    newest = checkpoint.step_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert newest.name == "step-00000004.pt" and str(newest) in str(raised.value)
    ckpt = checkpoint.load(newest)
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_diverging_before_any_checkpoint_saves_the_weights_as_of_before(tone_folder, tmp_path):
    """With no checkpoint yet, the untouched weights are saved as of the step before the first
    skipped one (here the start), so that a resume goes through the skipped steps again."""
    trainer = trainer_with_nan_steps(tone_folder, tmp_path, set(range(1, 100)),
                                     ["train.max_bad_steps=3"])
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(TrainingDiverged, match="steps 1-3 all had a non-finite loss") as raised:
        trainer.fit()
    [saved] = checkpoint.step_checkpoints(tmp_path / "run" / "checkpoints")
    assert saved.name == "step-00000000.pt" and str(saved) in str(raised.value)
    ckpt = checkpoint.load(saved)
    assert ckpt["step"] == 0 and trainer.step == 3
    assert all(torch.equal(t, ckpt["model"][n]) for n, t in start.items())


def test_an_output_is_replaced_whole_or_not_at_all(tmp_path):
    """JSON results, WAVs and pictures are written beside their name and renamed over it: a
    writer that fails (or is interrupted) leaves the previous file as it was, and no litter."""
    from wavenet.files import replacing, write_atomic

    out = tmp_path / "evaluation.json"
    write_atomic(out, '{"bits": 4.1}')
    with pytest.raises(KeyboardInterrupt):
        with replacing(out) as tmp:
            tmp.write_text('{"bi')  # torn: Ctrl-C arrives mid-write
            raise KeyboardInterrupt
    assert out.read_text() == '{"bits": 4.1}' and sorted(tmp_path.iterdir()) == [out]
    write_atomic(out, '{"bits": 3.9}')
    assert out.read_text() == '{"bits": 3.9}' and sorted(tmp_path.iterdir()) == [out]
