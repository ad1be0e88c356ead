"""Autoregressive generation: a fast incremental path and a naive reference path.

The fast path keeps, per layer, a ring buffer of that layer's last (k-1)·d inputs, so one new
sample costs O(layers) matrix-vector products instead of a forward pass over the receptive field.
All generation state (`IncrementalState`) is created and owned by the generation loop; modules
hold no buffers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wavenet.distributions import sample_categorical
from wavenet.model import WaveNet


@dataclass
class FusedLayer:
    """One residual layer's weights, laid out for a (B, k·R) @ (k·R, 2G) step."""

    dilation: int
    conv_w: torch.Tensor  # (k·R, 2G): rows [tap 0 (oldest) | … | tap k-1 (newest)]
    conv_b: torch.Tensor  # (2G,)
    out_w: torch.Tensor  # (G, R+S)
    out_b: torch.Tensor  # (R+S,)


class FastStepper:
    """Weights of a WaveNet rearranged once for per-sample steps.

    In the step, T = 1 is squeezed away: activations are (B, C) rows so that each layer is two
    addmm calls. Ring buffers keep the (B, C, T) layout, T being the buffer's time slots.
    """

    def __init__(self, model: WaveNet):
        cfg = model.cfg
        self.cfg = cfg
        self.kernel_size = cfg.kernel_size
        self.residual_channels = cfg.residual_channels
        self.embed = model.embed.weight.detach()  # (Q, R)
        self.layers = []
        for layer in model.layers:
            w = layer.dilated.weight.detach()  # (2G, R, k)
            self.layers.append(FusedLayer(
                dilation=layer.dilation,
                conv_w=w.permute(2, 1, 0).reshape(-1, w.shape[0]).contiguous(),
                conv_b=layer.dilated.bias.detach(),
                out_w=layer.out.weight.detach()[:, :, 0].t().contiguous(),
                out_b=layer.out.bias.detach(),
            ))
        self.skip_scale = model.skip_scale
        self.head1_w = model.head1.weight.detach()[:, :, 0].t().contiguous()
        self.head1_b = model.head1.bias.detach()
        self.head2_w = model.head2.weight.detach()[:, :, 0].t().contiguous()
        self.head2_b = model.head2.bias.detach()

    def step(self, state: IncrementalState, x: torch.Tensor) -> torch.Tensor:
        """Feed sample t (the state's clock) and return the logits of sample t+1.

        Args:
            x: (B,) int64 classes of sample t.
        Returns:
            (B, Q) logits.
        """
        t = state.t
        k, r = self.kernel_size, self.residual_channels
        h = self.embed[x]  # (B, R)
        skip = None
        for layer, buf in zip(self.layers, state.buffers, strict=True):
            d, span = layer.dilation, buf.shape[2]
            taps = [buf[:, :, (t - j * d) % span] for j in range(k - 1, 0, -1)]
            z = torch.addmm(layer.conv_b, torch.cat([*taps, h], dim=1), layer.conv_w)
            buf[:, :, t % span] = h
            filt, gate = z.chunk(2, dim=1)
            out = torch.addmm(layer.out_b, torch.tanh(filt) * torch.sigmoid(gate), layer.out_w)
            s = out[:, r:]
            skip = s if skip is None else skip + s
            h = (h + out[:, :r]) * 0.7071067811865476
        state.t = t + 1
        hidden = F.relu(torch.addmm(self.head1_b, F.relu(skip * self.skip_scale), self.head1_w))
        return torch.addmm(self.head2_b, hidden, self.head2_w)


@dataclass
class IncrementalState:
    """Per-layer ring buffers of past layer inputs plus the time index of the next input.

    buffers[i]: (B, R, (k-1)·d_i); the input of time s sits in slot s mod (k-1)·d_i.
    """

    buffers: list[torch.Tensor]
    t: int = 0

    @classmethod
    def zeros(cls, model: WaveNet, batch_size: int, device=None) -> IncrementalState:
        cfg = model.cfg
        device = device or model.embed.weight.device
        return cls([
            torch.zeros(batch_size, cfg.residual_channels, (cfg.kernel_size - 1) * d, device=device)
            for d in cfg.dilations
        ])

    def fill_from_history(self, model: WaveNet, history: torch.Tensor) -> None:
        """Load the state as if `history` (B, P) had been stepped through, in one forward pass."""
        layer_inputs: list[torch.Tensor] = []
        model(history, layer_inputs=layer_inputs)
        n = history.shape[1]
        for buf, h in zip(self.buffers, layer_inputs, strict=True):
            span = buf.shape[2]
            times = torch.arange(max(0, n - span), n, device=buf.device)
            buf[:, :, times % span] = h[:, :, times]
        self.t = n


def silence_class(model: WaveNet) -> int:
    """The mu-law class of 0.0, used as context when there is no prime."""
    return model.cfg.quantization_channels // 2


def default_context(model: WaveNet, batch_size: int, device=None) -> torch.Tensor:
    """A receptive field of silence (B, RF): the starting context without a prime."""
    device = device or model.embed.weight.device
    return torch.full((batch_size, model.receptive_field), silence_class(model),
                      dtype=torch.long, device=device)


@torch.no_grad()
def generate(
    model: WaveNet,
    length: int,
    context: torch.Tensor | None = None,
    batch_size: int = 1,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
    on_progress: Callable[[int], None] | None = None,
):
    """Generate `length` new samples per stream with the fast incremental path.

    Args:
        context: (B, P) classes to continue (a prime); None means a receptive field of silence.
        batch_size: streams, used when `context` is None.
        temperature: sampling temperature; 0 is greedy.
        generator: torch.Generator for reproducible draws.
        return_logits: also return each step's logits (B, Q, length).
        on_progress: called with the number of new samples made since the last call.
    Returns:
        classes (B, length) int64, and the logits if asked.
    """
    model.eval()
    if context is None:
        context = default_context(model, batch_size)
    state = IncrementalState.zeros(model, context.shape[0], context.device)
    if context.shape[1] > 1:
        state.fill_from_history(model, context[:, :-1])
    stepper = FastStepper(model)
    return _sample_loop(lambda x: stepper.step(state, x), context[:, -1], length,
                        temperature, generator, return_logits, on_progress)


@torch.no_grad()
def generate_naive(
    model: WaveNet,
    length: int,
    context: torch.Tensor | None = None,
    batch_size: int = 1,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
    on_progress: Callable[[int], None] | None = None,
):
    """Reference path: a full forward pass over the last receptive field for every sample.

    Same arguments and results as `generate`; O(receptive field) per sample.
    """
    model.eval()
    if context is None:
        context = default_context(model, batch_size)
    rf = model.receptive_field
    # The last output of a forward over the newest RF inputs sees exactly the receptive field;
    # a shorter window is zero-padded by the convolutions as the fast path's empty buffers are.
    window = context[:, :-1][:, -(rf - 1):] if rf > 1 else context[:, :0]

    def step(x: torch.Tensor) -> torch.Tensor:
        nonlocal window
        window = torch.cat([window, x[:, None]], dim=1)[:, -rf:]
        return model(window)[:, :, -1]

    return _sample_loop(step, context[:, -1], length, temperature, generator, return_logits,
                        on_progress)


def _sample_loop(step, last, length, temperature, generator, return_logits, on_progress):
    """Shared draw loop: step(x (B,)) -> logits (B, Q) of the next sample."""
    batch = last.shape[0]
    out = torch.empty(batch, length, dtype=torch.long, device=last.device)
    all_logits = [] if return_logits else None
    x = last
    reported = 0
    tick = time.monotonic()
    for i in range(length):
        logits = step(x)
        x = sample_categorical(logits, temperature, generator)
        out[:, i] = x
        if all_logits is not None:
            all_logits.append(logits)
        if on_progress is not None and (time.monotonic() - tick > 0.25 or i == length - 1):
            on_progress(i + 1 - reported)
            reported, tick = i + 1, time.monotonic()
    if return_logits:
        return out, torch.stack(all_logits, dim=2)
    return out

