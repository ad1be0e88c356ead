"""bf16 autocast and torch.compile in training: they run, on the CPU too, and agree with fp32
eager within the precision they keep.

Tolerances: bf16 keeps 8 significant bits, so each rounding is off by up to 2^-9 ≈ 0.2% of the
value. The model's outputs come out about 0.3% off (relative norm, measured), as with autocast's
own layer-by-layer pass. A loss averages such errors over hundreds of columns and is computed in
float32, so it moves far less (measured: under 1e-5 relative; asserted: 1e-3).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.utils

from tests.conftest import compose_job, tiny_train_overrides, write_tone_folder
from tests.test_conditioning import VOCODER, speaker_folder, switching_tones
from tests.test_generate import MEL, VARIANTS, tiny
from wavenet import checkpoint
from wavenet.train import Trainer, train


def train_recording_losses(job, run_dir) -> tuple[dict, list[float]]:
    """Train; return the final checkpoint and every step's training loss."""
    losses = []
    step = Trainer.train_step

    def recording_step(self, batch):
        result = step(self, batch)
        losses.append(result[0])
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "train_step", recording_step)
        ckpt = checkpoint.load(train(job, run_dir))
    return ckpt, losses


def float32_and_finite(tensors) -> bool:
    return all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors)


def test_bf16_training_keeps_float32_weights_and_matches_fp32(tone_folder, tmp_path):
    common = tiny_train_overrides(tone_folder, tmp_path, steps=4)
    fp32, fp32_losses = train_recording_losses(
        compose_job("train", [*common, "train.precision=fp32"]), tmp_path / "fp32")
    bf16, bf16_losses = train_recording_losses(
        compose_job("train", [*common, "train.precision=bf16"]), tmp_path / "bf16")
    assert bf16["step"] == 4 and bf16["config"]["train"]["precision"] == "bf16"
    # Autocast computes in bf16, but the weights, the Adam moments and the EMA stay float32.
    assert float32_and_finite(bf16["model"].values())
    assert float32_and_finite(bf16["ema"].values())
    assert float32_and_finite(t for state in bf16["optimizer"]["state"].values()
                              for t in state.values() if t.ndim)
    # The first step starts from the same weights, the later ones from weights a few lr-sized
    # Adam steps apart: too little to move the loss at this tolerance.
    torch.testing.assert_close(bf16_losses, fp32_losses, rtol=1e-3, atol=0)
    # Held-out scoring runs in float32, on the bf16-trained weights.
    assert bf16["best_bits"] == pytest.approx(fp32["best_bits"], rel=1e-3)


@pytest.mark.parametrize("preset", ["vocoder", "multispeaker"])
def test_bf16_trains_the_conditioned_presets(preset, tmp_path):
    if preset == "vocoder":
        for i in range(2):
            switching_tones(tmp_path / "audio" / f"{i}.wav", 0.6, seed=i)
        extra = VOCODER
    else:
        speaker_folder(tmp_path / "audio")
        extra = []
    job = compose_job("train", [f"experiment={preset}",
                                *tiny_train_overrides(tmp_path / "audio", tmp_path, steps=2),
                                *extra, "train.precision=bf16"])
    ckpt, losses = train_recording_losses(job, tmp_path / "run")
    assert ckpt["step"] == 2 and all(0 < loss < 10 for loss in losses)
    assert float32_and_finite(ckpt["model"].values())


@pytest.mark.parametrize("variant", ["mulaw-k2", "mulaw-k3", "mel+speakers", "all"])
def test_training_forward_under_autocast_matches_the_float32_layer_loop(variant):
    """The model's forward (upsampler, conditioning, stack, head) under bf16 autocast,
    against the float32 layer-by-layer pass, on the training loss and its gradients."""
    model = tiny(**VARIANTS.get(variant, {"n_speakers": 3, "speaker_channels": 3, "mel": MEL,
                                          "upsample_scales": [2, 4]})).train()
    batch, frames, first_output = 3, 8, 20
    length = frames * MEL.hop_length  # a crop; the model sees all but its last sample
    t = torch.arange(length) / 8000
    g = torch.Generator().manual_seed(0)
    audio = (0.5 * torch.sin(2 * torch.pi * 440 * t + torch.arange(batch)[:, None])
             + 0.01 * torch.randn(batch, length, generator=g))
    x = model.dist.encode(audio)
    speaker = torch.arange(batch) % model.cfg.n_speakers if model.cfg.n_speakers else None
    mel = (torch.randn(batch, MEL.n_mels, frames, generator=g)
           if model.cfg.mel is not None else None)

    def reference():
        """Float32, one ResidualBlock after another."""
        return model(x[:, :-1], speaker, mel, layer_inputs=[], first_output=first_output)

    def run(bf16: bool, trimmed: bool, backward_in_autocast: bool = False):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = (model(x[:, :-1], speaker, mel, first_output=first_output) if trimmed
                   else reference())
            loss = model.dist.nll(out, x[:, first_output + 1:])
            if backward_in_autocast:
                loss.backward()
        if not backward_in_autocast:
            loss.backward()
        return out.detach(), loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    out_ref, loss_ref, grads_ref = run(bf16=False, trimmed=False)
    out, loss, grads = run(bf16=True, trimmed=True)
    assert out.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert (out.float() - out_ref).norm() < 1e-2 * out_ref.norm()  # measured: under 3.4e-3
    torch.testing.assert_close(loss, loss_ref, rtol=1e-3, atol=0)
    assert grads.keys() == grads_ref.keys()
    for name, grad in grads.items():
        assert grad is not None and grad.dtype == torch.float32, name
        # Measured: under 0.09, the worst on biases, whose gradient sums terms of both signs
        # over all B·T positions, so their rounding counts against a smaller total.
        assert (grad - grads_ref[name]).norm() < 0.15 * grads_ref[name].norm(), name

    # Without autograd the stack does the same arithmetic.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model(x[:, :-1], speaker, mel, first_output=first_output), out)
    # The backward does not depend on whether it is called inside autocast.
    _, _, grads_inside = run(bf16=True, trimmed=True, backward_in_autocast=True)
    for name, grad in grads_inside.items():
        assert torch.equal(grad, grads[name]), name


def test_float32_backward_inside_autocast_stays_float32():
    model = tiny(kernel_size=3).train()
    out = model(torch.randint(0, 32, (2, 40)), first_output=5)
    out.square().sum().backward(retain_graph=True)
    outside = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out.square().sum().backward()
    for a, p in zip(outside, model.parameters(), strict=True):
        assert torch.equal(a, p.grad)


def test_base_experiment_runs_a_bf16_step(tmp_path):
    """experiment=base as written (the paper-sized model, bf16), shrunk only in data and steps."""
    folder = write_tone_folder(tmp_path / "audio", seconds=1.0)  # base's RF is 3070 samples
    job = compose_job("train", [
        "experiment=base", f"data.root={folder}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.audio.sample_rate=8000", "data.crop_samples=64", "data.num_workers=0",
        "train.batch_size=2", "train.max_steps=1", "train.eval_max_seconds=0.05",
        "train.sample_every=null", "train.progress=false"])
    assert job.train.precision == "bf16" and job.model.receptive_field == 3070
    ckpt = checkpoint.load(train(job, tmp_path / "run"))
    assert ckpt["step"] == 1
    assert float32_and_finite(ckpt["model"].values())


@pytest.fixture
def inductor_cache(tmp_path, monkeypatch):
    """torch.compile's kernel cache under tmp_path, and Dynamo's state fresh before and after."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


# The first compile in a process takes 10-15 s on 2 CPU cores (the second, 3 s).
@pytest.mark.usefixtures("inductor_cache")
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_compiled_training_matches_eager(precision, tone_folder, tmp_path):
    common = [*tiny_train_overrides(tone_folder, tmp_path, steps=4),
              f"train.precision={precision}", "train.lr=1e-3"]  # the atol below is in lr units
    eager, eager_losses = train_recording_losses(compose_job("train", common),
                                                 tmp_path / "eager")
    compiled, compiled_losses = train_recording_losses(
        compose_job("train", [*common, "train.compile=true"]), tmp_path / "compiled")
    # The whole forward compiles (the stack is plain PyTorch ops).
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    # Measured: identical on the CPU. The tolerance leaves room for fusions that skip a bf16
    # rounding between two elementwise ops.
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-3, atol=0)
    # In fp32 the weights agree closely. In bf16 the compiled kernels round at other places, so
    # gradients differ by bf16 roundings, and Adam, which normalizes each gradient, turns a
    # near-zero one of the other sign into a full lr-sized step the other way: a weight may then
    # differ by up to twice the sum of the 4 steps' learning rates, 2 · 3.5e-3 (measured: 3.4e-3
    # to 3.8e-3 with weight decay 0 to 0.05, so half of that bound is not enough).
    atol = 1e-5 if precision == "fp32" else 2 * (0.5e-3 + 1e-3 * 3)
    for name, weight in eager["model"].items():
        torch.testing.assert_close(compiled["model"][name], weight, rtol=1e-3, atol=atol,
                                   msg=name)


@pytest.mark.parametrize("name", ["fp32", "tf32", "bf16"])
def test_the_arithmetic_context_sets_autocast_and_restores_the_tf32_flags(name):
    from wavenet.runtime import precision

    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    before = [f.allow_tf32 for f in flags]
    x = torch.randn(4, 8)
    with precision(torch.device("cpu"), name):
        assert torch.is_autocast_enabled("cpu") == (name == "bf16")
        product = x @ x.t()
    assert product.dtype == (torch.bfloat16 if name == "bf16" else torch.float32)
    assert [f.allow_tf32 for f in flags] == before  # the CPU has no TF32: nothing to change


def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, tone_folder,
                                                                tmp_path, capsys):
    """`train.precision=auto` (the default): bf16 where the CPU has AVX-512 BF16 or AMX (the
    quality benchmark measured more steps and lower held-out NLL per minute there), fp32 on
    other CPUs and, until measured, on CUDA. The run says which it uses."""
    from wavenet import runtime

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compose_job("train", ["data.root=/x"]).train.precision == "auto"
    for native_bf16, expected in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(runtime, "cpu_has_bf16", lambda native_bf16=native_bf16: native_bf16)
        assert runtime.training_precision(cpu, "auto") == expected
        assert runtime.training_precision(cuda, "auto") == "fp32"
        assert runtime.training_precision(cpu, "fp32") == "fp32"
        ckpt = train(compose_job("train", tiny_train_overrides(tone_folder, tmp_path, steps=1)),
                     tmp_path / expected)
        assert f"{expected} arithmetic (train.precision=auto)" in capsys.readouterr().out
        assert checkpoint.load(ckpt)["config"]["train"]["precision"] == "auto"
    with pytest.raises(Exception, match="train_precisions"):
        compose_job("bench", ["train_precisions=[auto]"])
