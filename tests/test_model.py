import math

import pytest
import torch

from wavenet.errors import UserError
from wavenet.features import MelConfig
from wavenet.model import WaveNet, WaveNetConfig


def tiny(kernel_size=2, **kw) -> WaveNet:
    torch.manual_seed(0)
    cfg = WaveNetConfig(layers_per_cycle=3, cycles=2, kernel_size=kernel_size,
                        residual_channels=6, gate_channels=5, skip_channels=7,
                        quantization_channels=16, **kw)
    return WaveNet(cfg).double()


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_causal_and_receptive_field_matches_formula(kernel_size):
    """The prediction of sample t (output column t-1) depends exactly on samples t-RF .. t-1."""
    model = tiny(kernel_size)
    rf = model.receptive_field
    assert rf == (kernel_size - 1) * 2 * (1 + 2 + 4) + 1
    T = 3 * rf
    # Gradients w.r.t. a continuous input: feed the embedding output directly.
    emb = model.embed_input(torch.randint(0, 16, (1, T))).detach().requires_grad_(True)
    h, skip = emb, 0
    for layer in model.layers:
        h, s = layer(h)
        skip = skip + s
    logits = model.head(skip)
    out = T - rf + 5  # column predicting sample out + 1
    logits[0, :, out].sum().backward()
    touched = emb.grad[0].abs().sum(dim=0).nonzero().flatten()
    assert touched.max().item() == out  # nothing at or after the predicted sample
    assert touched.min().item() == out - rf + 1
    assert len(touched) == rf  # every sample in the window matters


def test_mixture_model_is_causal_in_its_waveform_input():
    """With continuous input the gradient reaches the waveform itself, conditioning included."""
    model = tiny(output="mol", mixtures=2, n_speakers=2)
    rf = model.receptive_field
    x = (torch.rand(1, 2 * rf, dtype=torch.float64) - 0.5).requires_grad_(True)
    params = model(x, torch.tensor([1]))
    assert params.shape == (1, 6, 2 * rf)
    params[0, :, rf + 3].sum().backward()
    touched = x.grad[0].nonzero().flatten()
    assert (touched.min().item(), touched.max().item()) == (4, rf + 3)


def test_forward_shapes_and_parameters():
    model = tiny()
    x = torch.randint(0, 16, (3, 50))
    assert model(x).shape == (3, 16, 50)
    # The architecture, counted by hand: the input table (Q×R); per layer the dilated
    # convolution R → 2G of kernel k with its bias and the 1×1 out G → R + S with its bias;
    # the head S → S → Q.
    q, r, g, s, k, layers = 16, 6, 5, 7, 2, 6
    per_layer = 2 * g * r * k + 2 * g + g * (r + s) + (r + s)
    assert model.num_parameters() == q * r + layers * per_layer + s * s + s + s * q + q == 1528


def test_base_config_is_the_paper_model():
    cfg = WaveNetConfig()
    assert cfg.dilations == [2**i for i in range(10)] * 3
    assert cfg.receptive_field == 3070


@pytest.mark.parametrize("bad", [{"kernel_size": 4}, {"cycles": 0}, {"quantization_channels": 1}])
def test_bad_config_is_rejected(bad):
    with pytest.raises(UserError, match="model."):
        WaveNetConfig(**bad)


@pytest.mark.parametrize("variant", ["mulaw-k2", "mulaw-k3", "all"])
@pytest.mark.parametrize("first_output", [0, 9, 40])
def test_training_path_equals_the_layer_by_layer_pass_with_gradients(variant, first_output):
    """The training path (`residual_loop`: each layer computes only what the columns from
    first_output on need) against the per-layer loop over every column, in float64."""
    from tests.test_generate import VARIANTS, tiny

    model = tiny(**VARIANTS[variant]).double()
    g = torch.Generator().manual_seed(0)
    batch, length = 3, 50
    x = model.dist.encode(torch.rand(batch, length, generator=g) * 1.6 - 0.8)
    if model.dist.continuous_input:
        x = x.double()
    speaker = torch.arange(batch) % model.cfg.n_speakers if model.cfg.n_speakers else None
    cond = (torch.randn(batch, model.cfg.mel.n_mels, length, generator=g, dtype=torch.float64)
            .requires_grad_() if model.cfg.mel is not None else None)
    weights = torch.randn(batch, model.dist.num_params, length - first_output, generator=g,
                          dtype=torch.float64)

    def run(trimmed: bool):
        model.zero_grad()
        if cond is not None:
            cond.grad = None
        out = model(x, speaker, cond, layer_inputs=None if trimmed else [],
                    first_output=first_output)
        (out * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.detach(), grads, None if cond is None else cond.grad.clone()

    (out_a, grads_a, cond_a), (out_b, grads_b, cond_b) = run(True), run(False)
    assert out_a.shape == (batch, model.dist.num_params, length - first_output)
    torch.testing.assert_close(out_a, out_b, rtol=1e-10, atol=1e-12)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-8, atol=1e-10,
                                   msg=name)
    if cond is not None:
        torch.testing.assert_close(cond_a, cond_b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("scales, cond_layers", [([4, 4, 4, 4], 0), ([2, 4], 0), ([8], 0),
                                                 ([3, 5], 0), ([2, 2, 2, 2, 2, 2], 0),
                                                 ([4, 4, 4, 4], 2), ([2, 4], 3)])
def test_a_window_of_mel_features_equals_the_whole_utterances(scales, cond_layers,
                                                             monkeypatch):
    """The encoder and upsampler run on only the frames a window of columns needs, plus
    `mel_context_frames` on each side: that is enough, none is not, and for the vocoder preset's
    scales one fewer is not either (elsewhere the bound may be a frame generous)."""
    hop = math.prod(scales)
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(layers_per_cycle=2, cycles=1, residual_channels=4,
                                  gate_channels=4, skip_channels=4, upsample_scales=scales,
                                  mel=MelConfig(n_fft=max(16, 2 * hop), hop_length=hop,
                                                n_mels=3), cond_layers=cond_layers,
                                  cond_channels=5)).double()  # exact up to rounding
    for conv in model.upsampler.stages:  # far from a box filter: edges matter
        torch.nn.init.normal_(conv.weight)
    mel = torch.randn(2, 3, 9, dtype=torch.float64)
    with torch.no_grad():
        # Column t predicts sample offset + t + 1; outside the 9 frames is silence.
        whole = model.mel_features(mel, -20 * hop - 1, 50 * hop)
        windows = [(offset, length) for offset in range(-2 * hop, 10 * hop, max(1, hop // 3))
                   for length in (1, hop + 1)]
        for offset, length in windows:
            column = offset + 20 * hop + 1
            torch.testing.assert_close(model.mel_features(mel, offset, length),
                                       whole[:, :, column:column + length], rtol=1e-9,
                                       atol=1e-10)
        enough = type(model.cfg).mel_context_frames.fget(model.cfg)
        for fewer in ([0, enough - 1] if scales == [4, 4, 4, 4] else [0]):
            monkeypatch.setattr(type(model.cfg), "mel_context_frames", fewer)
            assert any(not torch.allclose(model.mel_features(mel, offset, length),
                                          whole[:, :, offset + 20 * hop + 1:][:, :, :length])
                       for offset, length in windows)
