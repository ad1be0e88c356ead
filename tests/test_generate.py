import os
import shutil
import subprocess
import sys

import pytest
import torch

import wavenet.generate as generate_module
from wavenet import native
from wavenet.features import MelConfig
from wavenet.generate import (
    METHODS,
    IncrementalState,
    IncrementalStepper,
    StepBias,
    generate,
    resolve_method,
    silence_context,
)
from wavenet.model import WaveNet, WaveNetConfig
from wavenet.quantize import DEFAULT_PRECISION, at_precision

MEL = MelConfig(n_fft=64, hop_length=8, n_mels=5)

VARIANTS = {
    "mulaw-k2": {},
    "mulaw-k3": {"kernel_size": 3},
    "mol": {"output": "mol", "mixtures": 3},
    "speakers": {"n_speakers": 4, "speaker_channels": 3},
    "mel": {"mel": MEL, "upsample_scales": [2, 4]},
    "mel-encoder-scalar": {"mel": MEL, "upsample_scales": [2, 4], "cond_layers": 2,
                           "cond_channels": 4, "input": "scalar"},
    "both-inputs": {"input": "both"},
    "all": {"output": "mol", "mixtures": 2, "kernel_size": 3, "n_speakers": 3, "mel": MEL,
            "upsample_scales": [8]},
}


def tiny(**kw) -> WaveNet:
    torch.manual_seed(0)
    cfg = dict(layers_per_cycle=3, cycles=2, residual_channels=8, gate_channels=6,
               skip_channels=12, quantization_channels=32)
    return WaveNet(WaveNetConfig(**{**cfg, **kw})).eval()


def conditioning(model: WaveNet, batch: int, frames: int = 6):
    g = torch.Generator().manual_seed(7)
    speaker = torch.arange(batch) % model.cfg.n_speakers if model.cfg.n_speakers else None
    mel = (torch.randn(batch, model.cfg.mel.n_mels, frames, generator=g)
           if model.cfg.mel is not None else None)
    return speaker, mel


def random_context(model: WaveNet, batch: int, length: int, g: torch.Generator):
    return model.dist.encode(torch.rand(batch, length, generator=g) * 1.6 - 0.8)


@pytest.mark.parametrize("method", ["fast", "incremental"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prime_length", [None, 1, 7, 60])
def test_fast_generation_equals_teacher_forced_forward(variant, prime_length, method):
    model = tiny(**VARIANTS[variant])
    g = torch.Generator().manual_seed(1)
    context = None if prime_length is None else random_context(model, 3, prime_length, g)
    speaker, mel = conditioning(model, 3)
    params = torch.empty(3, model.dist.num_params, 48)
    values = generate(model, 48, context, batch_size=3, generator=g, params_out=params,
                      speaker=speaker, mel=mel, method=method)
    if context is None:
        context = silence_context(model, 3)
    p = context.shape[1]
    sequence = torch.cat([context, values], dim=1)
    # The default precision's weights (`quantize.at_precision`) compute every step.
    with torch.no_grad():  # the sequence starts p samples before the mel frames' first
        full = at_precision(model, DEFAULT_PRECISION)(sequence[:, :-1], speaker, mel,
                                                      mel_offset=-p)
    torch.testing.assert_close(params, full[:, :, p - 1:], rtol=1e-4, atol=1e-5)
    assert values.shape == (3, 48) and not torch.equal(values[0], values[1])


def test_fast_means_the_compiled_step_where_a_compiler_exists():
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler here: fast falls back to incremental (tested below)")
    assert resolve_method(tiny(), "fast") == "native", native.unavailable_reason()


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("variant", VARIANTS)
def test_all_methods_draw_the_same_samples(variant, batch):
    model = tiny(**VARIANTS[variant])
    speaker, mel = conditioning(model, batch)
    prime = random_context(model, batch, 20, torch.Generator().manual_seed(2))
    draws = {method: generate(model, 40, prime, generator=torch.Generator().manual_seed(5),
                              speaker=speaker, mel=mel, method=method, threads=2)
             for method in METHODS}
    for method in ("fast", "incremental"):
        if model.dist.continuous_input:  # at most one 16-bit level apart (rounding at a bin edge)
            assert (draws[method] - draws["naive"]).abs().max() <= 2.0 / 65535 + 1e-7
        else:
            assert torch.equal(draws[method], draws["naive"])


def test_without_the_compiled_step_fast_falls_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("WAVENET_NATIVE", "0")
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setattr(generate_module, "_warned", [])
    model = tiny()
    assert resolve_method(model, "fast") == "incremental"
    assert "WAVENET_NATIVE=0" in caplog.text
    a = generate(model, 30, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.delenv("WAVENET_NATIVE")
    assert torch.equal(a, generate(model, 30, generator=torch.Generator().manual_seed(1)))


def test_the_compiled_step_builds_into_the_cache_folder(tmp_path):
    code = ("from wavenet import native; lib = native.library(); "
            "print(lib is not None, native.unavailable_reason())")
    env = {**os.environ, "WAVENET_CACHE": str(tmp_path)}
    env.pop("WAVENET_NATIVE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    if shutil.which("c++") or shutil.which("g++"):
        assert out.startswith("True") and list((tmp_path / "native").glob("fast_step-*.so"))
    else:
        assert out.startswith("False")


def test_vocoder_length_follows_the_mel_frames():
    model = tiny(**VARIANTS["mel"])
    _, mel = conditioning(model, 2, frames=5)
    assert generate(model, mel=mel).shape == (2, 5 * MEL.hop_length)


def test_same_seed_same_samples_other_seed_other_samples():
    model = tiny()
    a = generate(model, 100, generator=torch.Generator().manual_seed(3))
    b = generate(model, 100, generator=torch.Generator().manual_seed(3))
    c = generate(model, 100, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("variant", ["mulaw-k3", "all"])
def test_priming_in_one_pass_equals_stepping_through_the_prime(variant):
    model = tiny(**VARIANTS[variant])
    prime = random_context(model, 2, 45, torch.Generator().manual_seed(0))
    speaker, mel = conditioning(model, 2)
    filled = IncrementalState.zeros(model, 2)
    filled.fill_from_history(model, prime, speaker, mel, mel_offset=-45)
    stepped = IncrementalState.zeros(model, 2)
    stepper, bias = IncrementalStepper(model), StepBias(model, 2, speaker, mel, origin=45)
    with torch.no_grad():
        for t in range(prime.shape[1]):
            stepper.step(stepped, prime[:, t], bias.at(t + 1))
    assert filled.t == stepped.t
    for a, b in zip(filled.buffers, stepped.buffers, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_temperature_zero_is_greedy():
    model = tiny()
    logits = torch.empty(1, model.dist.num_params, 20)
    classes = generate(model, 20, temperature=0.0, params_out=logits)
    assert torch.equal(classes, logits.argmax(dim=1))


def test_methods_agree_across_noise_and_conditioning_blocks():
    """1,100 samples cross the 1,024-step blocks of uniforms and of projected mel features."""
    model = tiny(**VARIANTS["mel"])
    speaker, mel = conditioning(model, 2, frames=1100 // MEL.hop_length + 1)
    draws = [generate(model, mel=mel, generator=torch.Generator().manual_seed(9), method=method)
             for method in ("fast", "incremental")]
    assert draws[0].shape[1] > 1024 and torch.equal(draws[0], draws[1])


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA GPU here: CUDA generation is compared with the CPU's only "
                           "where one is present")
@pytest.mark.parametrize("variant", ["mulaw-k2", "mel", "all"])
def test_cuda_generation_draws_the_cpu_samples(variant):
    """The same seed (a CPU generator) draws the same samples on the GPU as on the CPU, up to
    float rounding in the logits (none flips a draw in this short run)."""
    model = tiny(**VARIANTS[variant])
    speaker, mel = conditioning(model, 3)
    length = 40 if mel is None else mel.shape[2] * model.cfg.mel.hop_length

    def run(net, device):
        def to(t):
            return None if t is None else t.to(device)

        return generate(net.to(device), length, batch_size=3, speaker=to(speaker), mel=to(mel),
                        generator=torch.Generator().manual_seed(1)).cpu()

    on_cpu = run(model, "cpu")
    torch.testing.assert_close(run(model, "cuda"), on_cpu, rtol=1e-5, atol=1e-5)
