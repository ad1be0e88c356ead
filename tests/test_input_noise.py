"""train.input_noise: training reads its past samples through noise, the targets stay clean."""

import numpy as np
import pytest
import torch

from tests.conftest import compose_job, tiny_train_overrides
from wavenet import checkpoint
from wavenet.data import FLIP_STREAM, INPUT_NOISE_STREAM, SPEED_STREAM, seeded_draws
from wavenet.errors import UserError
from wavenet.train import jitter_classes, train


def test_jittered_classes_move_by_rounded_gaussian_noise_within_the_classes():
    classes = torch.full((8, 5000), 128)

    def rows(*crops):
        return [np.random.default_rng([0, c, INPUT_NOISE_STREAM]) for c in crops]
    moved = jitter_classes(classes, 1.0, 256, rows(*range(8)))
    again = jitter_classes(classes, 1.0, 256, rows(*range(8)))
    assert torch.equal(moved, again) and moved.dtype == classes.dtype
    # each row is its crop's own: the same crops split over two processes get the same noise
    halves = [jitter_classes(classes[:4], 1.0, 256, rows(*crops)) for crops in ((0, 1, 2, 3),
                                                                                 (4, 5, 6, 7))]
    assert torch.equal(torch.cat(halves), moved)
    shift = (moved - classes).double()
    # Rounding N(0, 1) leaves a class where it is with probability P(|z| < 0.5) = 0.383.
    assert abs((shift == 0).double().mean().item() - 0.383) < 0.02
    assert abs(shift.mean().item()) < 0.03 and abs(shift.std().item() - 1.04) < 0.03
    ends = jitter_classes(torch.tensor([[0, 255] * 500]), 3.0, 256, [np.random.default_rng(1)])
    assert ends.min() == 0 and ends.max() == 255
    assert (ends[0, ::2] > 0).any() and (ends[0, 1::2] < 255).any()


def test_the_noise_of_each_crop_is_a_stream_of_its_own():
    """Not the draws of the crop's position (numpy seeds [a, b] and [a, b, 0] alike, so a
    stream numbered 0 would replay them), nor its flip or speed."""
    def first(*key):
        return tuple(seeded_draws(*key).integers(2**62, size=4))
    assert first(0, 5) == first(0, 5, 0)  # the hazard itself
    noise = {first(0, crop, INPUT_NOISE_STREAM) for crop in range(4)}
    crops = {first(0, crop, *stream) for crop in range(4)
             for stream in ((), (FLIP_STREAM,), (SPEED_STREAM,))}
    assert len(noise) == 4 and not noise & crops


def test_input_noise_changes_training_and_resumes_exactly(tone_folder, tmp_path):
    base = tiny_train_overrides(tone_folder, tmp_path, steps=6)
    noisy = base + ["train.input_noise=1.5"]
    clean = checkpoint.load(train(compose_job("train", base), tmp_path / "clean"))
    whole = checkpoint.load(train(compose_job("train", noisy), tmp_path / "whole"))
    assert any(not torch.equal(t, clean["model"][k]) for k, t in whole["model"].items())
    train(compose_job("train", noisy + ["train.stop_at=3"]), tmp_path / "split")
    resumed = checkpoint.load(
        train(compose_job("train", noisy + ["train.resume=auto"]), tmp_path / "split"))
    assert resumed["step"] == 6
    for key in ("model", "ema"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, resumed[key][name]), (key, name)


def test_input_noise_is_for_mu_law_classes(tmp_path):
    with pytest.raises(UserError, match=r"^train.input_noise=1 perturbs mu-law classes; "
                                        r"model.output=mol has none: set it to 0$"):
        compose_job("train", [f"data.root={tmp_path}", "model.output=mol",
                              "train.input_noise=1"])
