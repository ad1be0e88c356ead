"""Generation precisions (`precision=fp32|bf16|int8`): the rounding rules, the packed formats,
every method drawing the same streams within a precision, the fallback, and how evaluate
reports them (the bench's rows: test_bench.py). The compiled step against its reference in
each precision, at real widths and every batch tiling, is in test_fastpaths.py."""

from __future__ import annotations

import json

import pytest
import torch

import wavenet.generate as generate_module
from tests.conftest import compose_job, tiny_train_overrides, write_tone_folder
from tests.test_generate import VARIANTS, conditioning, random_context, tiny
from wavenet import native
from wavenet.errors import UserError
from wavenet.evaluate import evaluate
from wavenet.generate import METHODS, generate, resolve_precision, teacher_forced
from wavenet.model import WaveNet, WaveNetConfig
from wavenet.quantize import PRECISIONS, at_precision, int8_rows, rounded, step_matrices
from wavenet.train import train


def test_bf16_rounds_each_weight_to_the_nearest_bfloat16():
    # 1 + 2^-8 is halfway between bfloat16's 1 and 1 + 2^-7: ties go to even (1); a hair
    # above rounds up; 3 · 2^-9 + 1 rounds up to 1 + 2^-7.
    w = torch.tensor([[1 + 2**-8, 1 + 2**-8 + 2**-20, 1 + 3 * 2**-9, -2.5e-3, 0.0]])
    out = rounded(w, "bf16")
    assert out.tolist()[0][:3] == [1.0, 1 + 2**-7, 1 + 2**-7]
    assert torch.equal(out, w.to(torch.bfloat16).float())
    assert torch.equal(rounded(out, "bf16"), out)


def test_int8_has_one_scale_per_output_channel_and_127_levels_either_side():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, 2, generator=g)
    w[2] = 0  # a channel of zeros
    q, scale = int8_rows(w)
    assert q.dtype == torch.int8 and scale.shape == (6,)
    assert q.abs().flatten(1).amax(1).tolist() == [127, 127, 0, 127, 127, 127]
    torch.testing.assert_close(scale[[0, 1, 3, 4, 5]],
                               w.abs().flatten(1).amax(1)[[0, 1, 3, 4, 5]] / 127)
    out = rounded(w, "int8")
    # each weight within half a step of its channel's scale, and rounding again keeps it
    assert ((out - w).abs() <= scale.view(-1, 1, 1) / 2 + 1e-7).all()
    assert torch.equal(rounded(out, "int8"), out)
    assert not torch.equal(out, w)


def test_at_precision_rounds_only_the_step_matrices_of_a_copy():
    model = tiny(**VARIANTS["all"])
    assert at_precision(model, "fp32") is model
    before = {name: p.clone() for name, p in model.named_parameters()}
    for precision in ("bf16", "int8"):
        copy = at_precision(model, precision)
        rounded_ids = {id(p) for p in step_matrices(copy)}
        for (name, p), original in zip(copy.named_parameters(), before.values(), strict=True):
            if id(p) in rounded_ids:
                assert not torch.equal(p, original), name
                assert torch.equal(p, rounded(original, precision)), name
            else:  # embeddings, biases, conditioning: float32 as trained
                assert torch.equal(p, original), name
    for name, p in model.named_parameters():  # the model itself is untouched
        assert torch.equal(p, before[name]), name


@pytest.mark.parametrize("rows", [6, 7])
def test_bf16_packing_holds_two_rows_per_word(rows):
    """Word j of row pair i: row 2i in the low half, row 2i+1 in the high half (an odd count
    ends with a zero high half), in 16-column panels."""
    w = torch.randn(rows, 20, generator=torch.Generator().manual_seed(1))
    packed, scale = native.pack_weights(w, "bf16")
    assert scale is None and packed.dtype == torch.int32
    pairs = (rows + 1) // 2
    words = packed.view(2, pairs, 16)  # 2 panels: 20 columns padded to 32
    low = (words << 16).view(torch.float32)
    high = (words & -65536).view(torch.float32)
    expect = torch.zeros(2 * pairs, 32)
    expect[:rows, :20] = rounded(w, "bf16")
    for p in range(2):
        assert torch.equal(low[p], expect[0::2, 16 * p:16 * p + 16])
        assert torch.equal(high[p], expect[1::2, 16 * p:16 * p + 16])


def test_int8_packing_holds_the_rounded_weights():
    w = torch.randn(5, 20, generator=torch.Generator().manual_seed(2))
    packed, scale = native.pack_weights(w, "int8")
    assert packed.dtype == torch.int8 and scale.shape == (32,)
    q = packed.view(2, 5, 16).transpose(0, 1).reshape(5, 32)
    torch.testing.assert_close(q[:, :20].float() * scale[:20], rounded(w.t(), "int8").t())
    assert not q[:, 20:].any()


def real_width_model(**kw) -> WaveNet:
    """3 layers of `model=base`'s widths (64/128/256), seeded."""
    torch.manual_seed(0)
    return WaveNet(WaveNetConfig(layers_per_cycle=3, cycles=1, residual_channels=64,
                                 gate_channels=128, skip_channels=256, **kw)).eval()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize(("variant", "batch"), [
    ("mulaw-k2", 5), ("all", 5), ("real", 1), ("real", 4), ("real", 5), ("real", 32),
    ("real-all", 4)])
def test_every_method_draws_the_same_samples_within_a_precision(variant, batch, precision):
    """The same seed draws the same streams by every method and again, in each precision, at
    real widths and batch sizes that run every tiling of the compiled step."""
    if variant.startswith("real"):
        model = real_width_model(**({} if variant == "real" else VARIANTS["all"]))
    else:
        model = tiny(**VARIANTS[variant])
    speaker, mel = conditioning(model, batch)
    prime = random_context(model, batch, 20, torch.Generator().manual_seed(2))
    draws = {method: generate(model, 40, prime, generator=torch.Generator().manual_seed(5),
                              speaker=speaker, mel=mel, method=method, threads=2,
                              precision=precision)
             for method in METHODS}
    again = generate(model, 40, prime, generator=torch.Generator().manual_seed(5),
                     speaker=speaker, mel=mel, threads=2, precision=precision)
    assert torch.equal(again, draws["fast"])
    for method in ("fast", "incremental"):
        if model.dist.continuous_input:  # at most one 16-bit level apart (rounding at a bin edge)
            assert (draws[method] - draws["naive"]).abs().max() <= 2.0 / 65535 + 1e-7
        else:
            assert torch.equal(draws[method], draws["naive"])


def test_teacher_forcing_gives_the_forward_pass_at_each_precision():
    """Column j of the teacher-forced steps predicts values[j] from values[:j] after silence:
    the forward pass of the rounded model over silence + values."""
    model = tiny(**VARIANTS["mel"])
    _, mel = conditioning(model, 2, frames=4)
    values = random_context(model, 2, 32, torch.Generator().manual_seed(3))
    for precision in PRECISIONS:
        params = teacher_forced(model, values, mel=mel, precision=precision)
        rf = model.receptive_field
        sequence = torch.cat([generate_module.silence_context(model, 2), values], dim=1)
        with torch.no_grad():
            full = at_precision(model, precision)(sequence[:, :-1], None, mel, mel_offset=-rf)
        torch.testing.assert_close(params, full[:, :, rf - 1:], rtol=1e-4, atol=1e-5)


def test_a_cpu_without_int8_instructions_falls_back_to_bf16_with_one_line(monkeypatch, caplog):
    """`native.formats()` says what the build runs (int8 needs AVX2 or AVX-512 on x86);
    WAVENET_NATIVE_FORMATS pretends a CPU with fewer."""
    model = tiny()
    monkeypatch.setattr(generate_module, "_fallbacks", set())
    assert resolve_precision(model, "fast", "int8") == "int8" or "int8" not in native.formats()
    monkeypatch.setenv("WAVENET_NATIVE_FORMATS", "fp32,bf16")
    assert resolve_precision(model, "fast", "int8") == "bf16"
    lines = [r.getMessage() for r in caplog.records if "precision=int8" in r.getMessage()]
    assert lines == ["precision=int8: this CPU lacks the instructions of its compiled step; "
                     "generating with bf16 weights instead"]
    assert resolve_precision(model, "incremental", "int8") == "int8"  # PyTorch runs them all
    g = torch.Generator
    fallen = generate(model, 30, generator=g().manual_seed(1), precision="int8")
    assert torch.equal(fallen, generate(model, 30, generator=g().manual_seed(1),
                                        precision="bf16", method="incremental"))
    monkeypatch.setenv("WAVENET_NATIVE_FORMATS", "fp32")
    assert resolve_precision(model, "fast", "int8") == "fp32"
    assert resolve_precision(model, "fast", "bf16") == "fp32"


def test_an_unknown_precision_is_a_one_line_error():
    with pytest.raises(UserError, match=r"precision=fp16: use fp32, bf16, int8"):
        generate(tiny(), 4, precision="fp16")
    with pytest.raises(UserError, match="precisions\\[1\\]"):
        compose_job("evaluate", ["checkpoint=x.pt", "precisions=[bf16,fp8]"])
    with pytest.raises(UserError, match="precision"):
        compose_job("sample", ["checkpoint=x.pt", "precision=half"])


def test_evaluate_compares_the_precisions(tmp_path, capsys):
    folder = write_tone_folder(tmp_path / "audio")
    ckpt = train(compose_job("train", tiny_train_overrides(folder, tmp_path)), tmp_path / "run")
    job = compose_job("evaluate", [f"checkpoint={ckpt}", "precisions=[fp32,bf16,int8]",
                                   "precision_seconds=0.05", "sample_streams=2",
                                   "sample_seconds=0.2", f"out={tmp_path / 'e.json'}"])
    result = evaluate(job, tmp_path)
    report = json.loads((tmp_path / "e.json").read_text())["precisions"]
    assert report == result["precisions"]
    rows = {r["precision"]: r for r in report["rows"]}
    assert list(rows) == ["fp32", "bf16", "int8"]
    assert rows["fp32"]["bits_per_sample"] == result["bits_per_sample"]
    assert rows["fp32"]["max_abs_diff"] == 0 and rows["fp32"]["bits_over_fp32"] == 0
    for precision in ("bf16", "int8"):
        row = rows[precision]
        assert 0 < row["mean_abs_diff"] <= row["max_abs_diff"] < 0.5
        assert abs(row["bits_over_fp32"]) < 0.05 and row["sample_quality"] > 0
    # int8 keeps fewer bits of each weight than bf16
    assert rows["int8"]["mean_abs_diff"] > rows["bf16"]["mean_abs_diff"]
    assert report["seconds"] == pytest.approx(0.05, abs=1 / 8000)
    out = capsys.readouterr().out
    assert "| bf16 | bf16 |" in out and "| int8 |" in out
