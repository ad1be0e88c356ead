"""Every fast path against the reference, at the widths and batch sizes it runs at.

`ResidualBlock` is the reference for one layer's math, and `WaveNet.forward(..., layer_inputs=[])`
chains it layer by layer in float64: the truth that the three fast paths are held to.

- `residual_loop`, the training stack (each layer computes only the time steps the scored
  outputs need): forward and every gradient, in float64 to rounding and in float32 to a stated
  tolerance.
- `IncrementalStepper.step`, the PyTorch per-sample step: logits of every step of a sequence.
- The compiled step (csrc/fast_step.cpp through `NativeLoop`), in every weight precision: the
  parameters of every step it draws, against the reference pass over the samples it drew with
  the weights rounded as that precision stores them (`quantize.at_precision`).

Widths: REAL is `model=base` (64/128/256); ODD (41/67/99, 200 classes) is a multiple neither
of the 16-column weight panel nor of the 8-lane vector, so every remainder runs, and its odd
row counts (K = 67 and 99, and 3·41 with kernel size 3) end bf16's two-row words with a half
word. Layers are few (dilations 1, 2, 4: ring spans of 1 to 8 slots) and sequences are longer
than every span, so every ring buffer wraps around several times.

What each case runs in the compiled step. Its GEMM (`gemm`) takes the rows of one thread's
streams, M, in blocks of B rows (8 with AVX-512, else 6) × P panels (2, else 1), then the
remaining M mod B rows as one smaller block (1 row × 4 panels, 2 × 4 or 2, 3 × 2, 4 or 5 × 2
or 1, 6 or 7 × 2); a panel count that is not a multiple of a block's panels ends with
1-panel blocks. A run with `threads` splits the batch into that many blocks of streams (never
more than the batch), so M per thread runs over 1, 2, 3, 4, 5, 6, 12 and 16 with the batches
below: every remainder block and the full blocks, once and several times.

Panel counts (⌈N/16⌉) of the GEMMs: dilated conv 2G, output 1×1 R+S, head S → S, head S → P.
    REAL mu-law  16, 20, 16, 16
    REAL MoL     16, 20, 16, 2 (30 parameters, padded): the head's 1×4 block is all remainder
    ODD mu-law   9, 9, 7, 13: a remainder at most blocks, padded columns in every panel set,
                 and a gate tail of 3 channels after 8 full vectors
The REAL MoL case also has speaker and mel conditioning (per-step biases read with a stride)
and continuous input; the mu-law cases, embedded classes and constant biases. Kernel size 3
adds a second past tap per layer (the ring holds two slots per dilation step).
"""

from __future__ import annotations

import copy
import ctypes
import shutil

import pytest
import torch

import wavenet.generate as generate_module
from wavenet import native
from wavenet.features import MelConfig
from wavenet.generate import (
    IncrementalState,
    IncrementalStepper,
    NativeLoop,
    StepBias,
    generate,
    make_loop,
)
from wavenet.layers import residual_loop
from wavenet.model import WaveNet, WaveNetConfig
from wavenet.quantize import PRECISIONS, at_precision

REAL = dict(residual_channels=64, gate_channels=128, skip_channels=256)
# Gate 67: a gate width that is a multiple of 8 would skip the activation's lane tail.
ODD = dict(residual_channels=41, gate_channels=67, skip_channels=99, quantization_channels=200)
MEL = MelConfig(n_fft=64, hop_length=8, n_mels=5)
CONDITIONED = dict(output="mol", mixtures=10, n_speakers=3, mel=MEL, upsample_scales=[2, 4])
CASES = {"real": REAL, "real-mol-cond": {**REAL, **CONDITIONED}, "odd": ODD}
BATCHES = [1, 4, 5, 32]
# The compiled step also at 12, for a batch of whole 6-row tiles (see the table above).
NATIVE_BATCHES = [1, 4, 5, 12, 32]
LENGTH = 24  # steps per sequence: three mel frames, and several turns of every ring buffer


def model_at(case: str, kernel_size: int) -> WaveNet:
    """A 3-layer WaveNet (dilations 1, 2, 4) with the widths of `case`, seeded."""
    torch.manual_seed(0)
    cfg = WaveNetConfig(layers_per_cycle=3, cycles=1, kernel_size=kernel_size, **CASES[case])
    return WaveNet(cfg).eval()


def inputs(model: WaveNet, batch: int, length: int, seed: int = 0):
    """Random model values (B, length), speaker ids (B,) and mel frames (B, n_mels, F)."""
    g = torch.Generator().manual_seed(seed)
    values = model.dist.encode(torch.rand(batch, length, generator=g) * 1.6 - 0.8)
    speaker = torch.arange(batch) % model.cfg.n_speakers if model.cfg.n_speakers else None
    mel = (torch.randn(batch, model.cfg.mel.n_mels, -(-length // MEL.hop_length), generator=g)
           if model.cfg.mel is not None else None)
    return values, speaker, mel


def reference(model: WaveNet, values, speaker, mel, mel_offset: int) -> torch.Tensor:
    """The ResidualBlock-by-block pass in float64: (B, P, T), column t predicting sample t+1.

    mel, mel_offset: frames (B, n_mels, F), or None, and where values[:, 0] sits on their axis.
    """
    exact = copy.deepcopy(model).double()
    if values.is_floating_point():
        values = values.double()
    with torch.no_grad():
        return exact(values, speaker, None if mel is None else mel.double(), mel_offset,
                     layer_inputs=[])


def assert_near(actual: torch.Tensor, truth: torch.Tensor, bound: float, what: str = ""):
    """Every element within bound × max |truth| of the truth.

    Relative to the tensor's scale rather than each element: a float32 error is a fraction of
    the magnitudes summed into an element, not of the element, which may be near 0.
    """
    scale = truth.abs().max().item()
    torch.testing.assert_close(actual.double(), truth.double(), rtol=0, atol=bound * scale,
                               msg=lambda m: f"{what} (largest |value| {scale:.3g}): {m}")


def test_real_widths_are_those_of_model_base():
    from wavenet.cli import compose

    cfg = compose("train", ["model=base", "data.root=/somewhere"]).model
    assert {key: getattr(cfg, key) for key in REAL} == REAL


# --- the training stack ----------------------------------------------------------------------

def chained(layers, h: torch.Tensor, extra: torch.Tensor | None, first_output: int):
    """The reference stack: h (B, R, T) -> summed skips (B, S, T - first_output)."""
    per_layer = extra.chunk(len(layers), dim=1) if extra is not None else [None] * len(layers)
    skip = 0
    for layer, e in zip(layers, per_layer, strict=True):
        h, s = layer(h, e)
        skip = skip + s
    return skip[:, :, first_output:]


def stack_and_gradients(stack, layers, h, extra, first_output, weights):
    """Output of `stack` and the gradients of Σ output·weights w.r.t. h, extra and every
    parameter, by name."""
    h = h.detach().requires_grad_()
    extra = None if extra is None else extra.detach().requires_grad_()
    layers.zero_grad(set_to_none=True)
    out = stack(layers, h, extra, first_output)
    (out * weights).sum().backward()
    grads = {name: p.grad for name, p in layers.named_parameters()}
    grads["input"] = h.grad
    if extra is not None:
        grads["conditioning"] = extra.grad
    return out.detach(), grads


# (conditioning, first_output): none; per-step (mel-like, T columns) from inside the receptive
# field (the lower layers start before first_output, the top one at it); constant (speaker-like,
# one column, its gradient summed over time) from past the receptive field.
STACK_SETTINGS = [(None, 0), ("per-step", 9), ("constant", 20)]


def stack_problem(case: str, kernel_size: int, batch: int, conditioning: str | None,
                  first_output: int, dtype: torch.dtype):
    model = model_at(case, kernel_size)
    layers = model.layers.to(dtype)
    g = torch.Generator().manual_seed(1)
    r = model.cfg.residual_channels
    width = len(layers) * 2 * model.cfg.gate_channels
    h = torch.randn(batch, r, 40, generator=g, dtype=dtype)
    columns = {None: 0, "per-step": 40, "constant": 1}[conditioning]
    extra = (0.5 * torch.randn(batch, width, columns, generator=g, dtype=dtype)
             if columns else None)
    weights = torch.randn(batch, model.cfg.skip_channels, 40 - first_output, generator=g,
                          dtype=dtype)
    return layers, h, extra, weights


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", ["real", "odd"])
def test_training_stack_equals_chained_blocks_in_float64(case, batch, kernel_size):
    for conditioning, first_output in STACK_SETTINGS:
        layers, h, extra, weights = stack_problem(case, kernel_size, batch, conditioning,
                                                  first_output, torch.float64)
        out, grads = stack_and_gradients(residual_loop, layers, h, extra, first_output, weights)
        ref_out, ref_grads = stack_and_gradients(chained, layers, h, extra, first_output,
                                                 weights)
        torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], rtol=1e-9, atol=1e-11,
                                       msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", ["real", "odd"])
def test_training_stack_in_float32_is_within_rounding_of_the_float64_reference(case, batch,
                                                                              kernel_size):
    """float32 (what training runs) against the exact function: the output and every gradient
    within 1e-5 of its tensor's largest magnitude (measured: at most 1.7e-6 for the chained
    blocks in float32); the bound leaves room for other BLAS."""
    for conditioning, first_output in STACK_SETTINGS:
        layers, h, extra, weights = stack_problem(case, kernel_size, batch, conditioning,
                                                  first_output, torch.float64)
        ref_out, ref_grads = stack_and_gradients(chained, layers, h, extra, first_output,
                                                 weights)
        single = copy.deepcopy(layers).float()
        out, grads = stack_and_gradients(residual_loop, single, h.float(), None if extra is None
                                         else extra.float(), first_output, weights.float())
        assert_near(out, ref_out, 1e-5, "output")
        for name, grad in grads.items():
            assert_near(grad, ref_grads[name], 1e-5, name)


# A float32 step against the float64 reference: measured at most 7e-7 of the largest parameter
# for both steps here, as for the float32 reference pass itself. The bound leaves room for
# other CPUs and BLAS builds and is far below what a wrong row, column, tap or slot costs (a
# skip scale off by 1e-4 already fails it).
STEP_BOUND = 1e-5


# --- the PyTorch incremental step ------------------------------------------------------------

@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CASES)
def test_incremental_step_equals_the_reference_at_every_step(case, batch, kernel_size):
    """Steps from an empty state through a sequence (teacher-forced) give the logits of the
    reference pass over it: the empty ring buffers are the reference's zero padding."""
    model = model_at(case, kernel_size)
    values, speaker, mel = inputs(model, batch, LENGTH)
    # The mel frames' sample 0 is predicted by the first step: it sits at position 1.
    state = IncrementalState.zeros(model, batch)
    stepper, bias = IncrementalStepper(model), StepBias(model, batch, speaker, mel, origin=1)
    with torch.no_grad():
        steps = torch.stack([stepper.step(state, values[:, t], bias.at(t + 1))
                             for t in range(LENGTH)], dim=2)
    truth = reference(model, values, speaker, mel, mel_offset=-1)
    assert_near(steps, truth, STEP_BOUND)


# --- the compiled step -----------------------------------------------------------------------

def native_run(model: WaveNet, batch: int, threads: int, precision: str = "fp32"):
    """Generate LENGTH steps with the compiled step after a random prime, with the weights in
    `precision`.

    Returns:
        the sequence (B, prime + LENGTH): the prime, then the draws; the parameters of each
        draw (B, num_params, LENGTH); the mel frames of the draws (B, n_mels, F) or None; the
        speakers (B,) or None.
    """
    prime_length = model.receptive_field + 5  # the prime fills every ring before the steps
    prime, speaker, _ = inputs(model, batch, prime_length)
    _, _, mel = inputs(model, batch, LENGTH, seed=1)  # the frames of the new samples
    loop = make_loop(model, prime, speaker, mel, "fast", threads, precision)
    assert isinstance(loop, NativeLoop), native.unavailable_reason()
    assert loop.native.precision == precision
    noise = torch.rand(batch, LENGTH, model.dist.noise_per_sample,
                       generator=torch.Generator().manual_seed(2))
    drawn = torch.empty(batch, LENGTH, dtype=prime.dtype)
    params = torch.empty(batch, model.dist.num_params, LENGTH)
    x = prime[:, -1]
    # Two calls, so that the second starts with a clock and rings left by the first.
    for a, b in ((0, 5), (5, LENGTH)):
        x = loop.advance(x, noise[:, a:b], drawn[:, a:b], params[:, :, a:b], 1.0)
    return torch.cat([prime, drawn], dim=1), params, mel, speaker


needs_compiler = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="no C++ compiler here: the compiled step cannot be built (generation falls back to "
    "the incremental step, tested above)")


@needs_compiler
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("batch", NATIVE_BATCHES)
@pytest.mark.parametrize("case", CASES)
def test_compiled_step_equals_the_reference_at_every_step(case, batch, kernel_size, threads,
                                                          precision):
    """In every precision, to float32 rounding of the reference with that precision's weights:
    the packed formats hold the rounded weights exactly, and only the int8 scale is applied
    after the sum instead of to each weight."""
    assert precision in native.formats(), f"{precision}: not built for this CPU"
    model = model_at(case, kernel_size)
    sequence, params, mel, speaker = native_run(model, batch, threads, precision)
    prime_length = sequence.shape[1] - LENGTH
    truth = reference(at_precision(model, precision), sequence[:, :-1], speaker, mel,
                      mel_offset=-prime_length)[:, :, prime_length - 1:]
    assert_near(params, truth, STEP_BOUND)
    if precision != "fp32":  # and the rounding is a real change, which the bound resolves
        fp32 = reference(model, sequence[:, :-1], speaker, mel,
                         mel_offset=-prime_length)[:, :, prime_length - 1:]
        assert (params.double() - fp32).abs().max() > 3 * STEP_BOUND * fp32.abs().max()


# --- the structures shared with the compiled step --------------------------------------------

@needs_compiler
def test_the_library_lays_out_its_structures_as_the_ctypes_declarations():
    assert native.library() is not None, native.unavailable_reason()
    assert native.layout_mismatch(native.library()) is None


def edited(struct, edit) -> type:
    """A ctypes structure named as `struct` with its fields passed through `edit`."""
    return type(struct.__name__, (ctypes.Structure,), {"_fields_": edit(list(struct._fields_))})


# Slips that compile and load fine but would make the step read the wrong bytes.
MISMATCHES = {
    "field-resized": ("Run", lambda f: [(n, ctypes.c_int32 if n == "t" else c) for n, c in f],
                      "field 3 (Run.t) is at byte 16, 8 bytes, integer in WavenetRun but at "
                      "byte 12, 4 bytes, integer in Python"),
    "field-missing": ("Net", lambda f: f[:-1], "WavenetNet has 25 fields, Python's Net has 24"),
    "field-retyped": ("Net", lambda f: [(n, ctypes.c_int32 if n == "levels" else c)
                                        for n, c in f],
                      "field 11 (Net.levels) is at byte 44, 4 bytes, float in WavenetNet but "
                      "at byte 44, 4 bytes, integer in Python"),
}


@needs_compiler
@pytest.mark.parametrize("mismatch", MISMATCHES)
def test_a_library_laid_out_otherwise_is_refused_and_generation_falls_back(
        mismatch, monkeypatch, caplog):
    name, edit, reason = MISMATCHES[mismatch]
    monkeypatch.setattr(native, name, edited(getattr(native, name), edit))
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(generate_module, "_warned", [])
    assert native.library() is None
    assert native.unavailable_reason() == f"fast_step.cpp does not match native.py: {reason}"
    model = model_at("real", 2)
    fallback = generate(model, 20, batch_size=2, generator=torch.Generator().manual_seed(3))
    assert "compiled generation step unavailable" in caplog.text and reason in caplog.text
    incremental = generate(model, 20, batch_size=2, generator=torch.Generator().manual_seed(3),
                           method="incremental")
    assert torch.equal(fallback, incremental)
