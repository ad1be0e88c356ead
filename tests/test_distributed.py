"""torchrun / DistributedDataParallel on CPU (gloo): the same training as one process."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from tests.conftest import compose_job, run_script, tiny_train_overrides
from wavenet import checkpoint
from wavenet.cli import REPO_ROOT
from wavenet.data import StepSampler
from wavenet.train import train


def torchrun(nproc: int, *overrides: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", str(REPO_ROOT / "scripts" / "train.py"), *overrides],
        cwd=cwd, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_same_weights(a: dict, b: dict) -> None:
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(tensor, b[key][name], rtol=1e-5, atol=1e-6,
                                       msg=f"{key}.{name}")


def test_ranks_split_each_global_batch_evenly():
    whole = list(StepSampler(3, 2, 4))
    shares = [list(StepSampler(3, 2, 4, rank, 2)) for rank in range(2)]
    assert whole == [12, 13, 14, 15, 16, 17, 18, 19]
    assert shares == [[12, 13, 16, 17], [14, 15, 18, 19]]


def test_two_gloo_processes_train_as_one_on_the_global_batch(tone_folder, tmp_path):
    # fp32: bf16 (auto's choice on a CPU with native bf16) rounds a batch of 2 and a batch of
    # 4 differently, which is beside the point here. Input noise is drawn per crop, so it too
    # is the same whatever the number of processes.
    base = tiny_train_overrides(tone_folder, tmp_path, steps=4) + [
        "train.batch_size=4", "train.device=cpu", "train.threads=1", "train.precision=fp32",
        "train.input_noise=1"]
    one = tmp_path / "one"
    train(compose_job("train", base), one)

    two = tmp_path / "two"
    done = torchrun(2, *base, "train.stop_at=2", f"hydra.run.dir={two}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [at_two] = checkpoint.step_checkpoints(two / "checkpoints")
    assert at_two.name == "step-00000002.pt"
    assert_same_weights(checkpoint.load(one / "checkpoints" / "step-00000002.pt"),
                        checkpoint.load(at_two))

    # The run goes on in one process (another world size) and ends where the single run did.
    resumed = train(compose_job("train", base + ["train.resume=auto"]), two)
    assert_same_weights(checkpoint.load(one / "checkpoints" / "step-00000004.pt"),
                        checkpoint.load(resumed))


def test_the_global_batch_must_split_evenly(tone_folder, tmp_path):
    base = tiny_train_overrides(tone_folder, tmp_path, steps=2) + ["train.batch_size=3",
                                                                    "train.device=cpu"]
    done = torchrun(2, *base, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode != 0
    assert "error: train.batch_size=3 is the batch over all 2 processes" in done.stderr


def test_submitit_local_sweep_with_two_tasks_per_job(tone_folder, tmp_path):
    """The cluster launcher's code path on this machine: two sweep points, each job two tasks
    joined into one distributed run."""
    sweep = tmp_path / "sweep"
    done = run_script("train", "-m", "hydra/launcher=local", "hydra.launcher.tasks_per_node=2",
                      *tiny_train_overrides(tone_folder, tmp_path, steps=2),
                      "train.batch_size=2", "train.device=cpu", "train.lr=1e-3,2e-3",
                      f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for point, lr in ((0, 1e-3), (1, 2e-3)):
        ckpt = checkpoint.load(sweep / str(point) / "checkpoints" / "step-00000002.pt")
        assert ckpt["config"]["train"]["lr"] == lr
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.out"))
    assert logs.count("device cpu x 2 processes") == 2
