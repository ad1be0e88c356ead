"""The benchmark runs and reports every figure (speed itself is never asserted in tests)."""

import json

import pytest
import torch

from tests.conftest import compose_job
from wavenet.bench import StraightforwardWaveNet, bench
from wavenet.cli import model_config
from wavenet.model import WaveNet


def test_straightforward_baseline_is_the_same_network():
    cfg = model_config("small")
    ours, plain = WaveNet(cfg), StraightforwardWaveNet(cfg)
    # The same parameters, but for the amplitude input (model.input=both), which the plain
    # network folds into its one table of class vectors, as generation does.
    amplitude = sum(p.numel() for n, p in ours.named_parameters() if n.startswith("input_proj"))
    assert cfg.input == "both" and amplitude == 2 * cfg.residual_channels
    assert ours.num_parameters() - amplitude == sum(p.numel() for p in plain.parameters())
    same = StraightforwardWaveNet.same_weights_as(ours)
    x = torch.randint(0, 256, (2, 600), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(same(x, first_output=510), ours(x, first_output=510),
                                   rtol=1e-4, atol=1e-5)


def test_bench_reports_every_figure(tmp_path):
    job = compose_job("bench", ["batch_sizes=[1,2]", "fast_seconds=0.3", "naive_steps=2",
                                "train_steps=1", "train_batch_size=1", "train_crop=64",
                                f"out={tmp_path / 'bench.json'}"])
    from wavenet.features import MelConfig
    from wavenet.model import WaveNetConfig

    vocoder = WaveNetConfig(layers_per_cycle=3, cycles=1, residual_channels=8, gate_channels=8,
                            skip_channels=8, mel=MelConfig(n_fft=64, hop_length=16, n_mels=5),
                            upsample_scales=[4, 4])
    bench(job, {"debug": model_config("debug")}, tmp_path, vocoder)
    report = json.loads((tmp_path / "bench.json").read_text())
    row = report["results"][0]
    assert row["floor_samples_per_s"] > 0 and row["train_straightforward_samples_per_s"] > 0
    assert abs(row["train_bits"] - row["train_straightforward_bits"]) < 1e-3
    # Every implementation × arithmetic the CPU has (no TF32 there), from the same weights:
    # the NLLs agree up to the arithmetic's rounding.
    cells = {(r["implementation"], r["precision"], r["compiled"]): r for r in row["training"]}
    assert set(cells) == {(i, p, False) for i in ("ours", "straightforward")
                          for p in ("fp32", "bf16")}
    fp32 = cells["ours", "fp32", False]["bits"]
    assert all(abs(r["bits"] - fp32) < 0.05 and r["samples_per_s"] > 0 for r in row["training"])
    assert row["train_bits"] == fp32
    assert [g["batch"] for g in row["generation"]] == [1, 2]
    first = row["generation"][0]
    assert first["fraction_of_floor"] > 0
    assert first["fast"] > 0 and first["incremental"] > 0 and first["naive"] > 0
    # every generation precision, at every batch, and its own floor at batch 1
    assert set(row["floors"]) == {"fp32", "bf16", "int8"}
    assert all(f > 0 for f in row["floors"].values())
    for g in row["generation"]:
        by = {p["precision"]: p for p in g["precisions"]}
        assert list(by) == ["fp32", "bf16", "int8"] and by["fp32"]["samples_per_s"] == g["fast"]
        assert all(p["samples_per_s"] > 0 and p["runs_as"] == p["precision"]
                   for p in by.values())
        assert all((p["fraction_of_floor"] is not None) == (g["batch"] == 1)
                   for p in by.values())
    assert report["machine"]["torch"]
    assert report["vocoder"]["samples_per_s"] > 0 and report["vocoder"]["n_mels"] == 5
    assert report["vocoder"]["times_real_time"] == report["vocoder"]["samples_per_s"] / 16000


def test_the_bench_times_the_vocoder_preset_as_composed():
    from wavenet.cli import compose, vocoder_model_config

    composed = compose("train", ["experiment=vocoder", "data.root=/x"]).model
    assert composed.mel.sample_rate == 16000  # a training job fills it in from its data
    composed.mel.sample_rate = None  # ... and the bench from its own rate
    assert vocoder_model_config() == composed


@pytest.mark.slow  # torch.compile of a training graph takes a minute on 2 cores
def test_compiled_training_variants_agree_with_eager():
    from wavenet.bench import training_matrix

    job = compose_job("bench", ["train_steps=1", "train_batch_size=1", "train_crop=64",
                                "train_precisions=[fp32]", "train_compile=true"])
    rows = training_matrix(model_config("debug"), job)
    cells = {(r["implementation"], r["compiled"]): r["bits"] for r in rows}
    assert set(cells) == {(i, c) for i in ("ours", "straightforward") for c in (False, True)}
    assert max(cells.values()) - min(cells.values()) < 1e-3
