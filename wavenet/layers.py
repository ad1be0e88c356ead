"""WaveNet building blocks: causal dilated convolution and the gated residual block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv1d(nn.Conv1d):
    """Dilated 1-D convolution whose output at t sees inputs at t, t-d, …, t-(k-1)d only.

    Causality comes from explicit left padding of (k-1)·d zeros; nothing is sliced off.
    Weight layout is nn.Conv1d's (out, in, k): tap k-1 multiplies the newest input.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left_padding = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor, first_output: int = 0) -> torch.Tensor:
        """x: (B, C_in, T) -> (B, C_out, T - first_output): the outputs at times first_output…
        only (the same as slicing the full output), padded only where they reach before x."""
        start = max(0, first_output - self.left_padding)  # the oldest input they see
        pad = self.left_padding - (first_output - start)
        x = x[:, :, start:] if start else x
        return super().forward(F.pad(x, (pad, 0)) if pad else x)


class ResidualBlock(nn.Module):
    """Gated residual layer: z = tanh(W_f * x) ⊙ σ(W_g * x); residual and skip from z.

    The filter and gate convolutions are one conv with 2·gate_channels outputs, and the residual
    and skip 1×1 projections are one conv with residual+skip outputs: two matmuls per layer.
    """

    def __init__(
        self,
        residual_channels: int,
        gate_channels: int,
        skip_channels: int,
        kernel_size: int,
        dilation: int,
    ):
        super().__init__()
        self.dilation = dilation
        self.kernel_size = kernel_size
        self.residual_channels = residual_channels
        self.dilated = CausalConv1d(residual_channels, 2 * gate_channels, kernel_size, dilation)
        self.out = nn.Conv1d(gate_channels, residual_channels + skip_channels, 1)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None,
                first_output: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer.

        Args:
            x: (B, R, T) residual stream.
            extra: (B, 2G, T or 1) conditioning added to the filter and gate inputs, or None.
            first_output: compute the outputs at times first_output… only (the same as
                slicing the full outputs).
        Returns:
            next x (B, R, T - first_output), skip (B, S, T - first_output).
        """
        pre = self.dilated(x, first_output)
        if extra is not None:
            pre = pre + (extra[:, :, first_output:] if extra.shape[2] > 1 else extra)
        filt, gate = pre.chunk(2, dim=1)
        z = torch.tanh(filt) * torch.sigmoid(gate)
        res, skip = self.out(z).split([self.residual_channels, self.out.out_channels
                                       - self.residual_channels], dim=1)
        # sqrt(0.5) keeps the residual stream's variance from growing with depth.
        return (x[:, :, first_output:] + res) * math.sqrt(0.5), skip


def residual_loop(layers: nn.ModuleList, h: torch.Tensor, extra: torch.Tensor | None = None,
                  first_output: int = 0) -> torch.Tensor:
    """The whole stack of ResidualBlocks for teacher-forced passes: plain PyTorch ops, layer by
    layer, with autograd's backward (and so autocast and `torch.compile` as they come).

    Computes the same function as chaining `layer(h, extra_i)` over all time steps and summing
    the skips, but each layer computes only the time steps that the outputs from
    `first_output` on depend on (`needed_starts`): training scores no output inside the first
    receptive field, so the top layers skip most of it. (A fused stack with a hand-written
    backward was measured against this and removed: it was no faster; see the README.)

    Args:
        layers: the ResidualBlocks, all with the same kernel size.
        h: (B, R, T) input of the first layer.
        extra: (B, L·2G, T or 1) conditioning of all layers (as `WaveNet.conditioning`), or None.
        first_output: the first time step whose output is wanted.
    Returns:
        (B, S, T - first_output) the sum of all layers' skips from time first_output on.
    """
    starts = needed_starts([layer.dilation for layer in layers], layers[0].kernel_size,
                           first_output)
    per_layer = (extra.chunk(len(layers), dim=1) if extra is not None
                 else [None] * len(layers))
    skip, t0 = None, 0  # h holds the time steps t0…
    for layer, e, start in zip(layers, per_layer, starts, strict=True):
        if e is not None and e.shape[2] > 1:
            e = e[:, :, t0:]
        h, s = layer(h, e, start - t0)
        s = s[:, :, first_output - start:]
        skip = s if skip is None else skip + s
        t0 = start
    return skip


def needed_starts(dilations: list[int], kernel_size: int, first_output: int) -> list[int]:
    """Where each layer's needed outputs begin, for the stack's outputs from first_output on.

    The last layer's begin at first_output; each layer below must begin (k-1)·d earlier than
    the layer above it (d: that upper layer's dilation), since that is how far back it reads.

    Returns:
        starts: layer i must compute its time steps starts[i]… (never before 0).
    """
    starts, above = [0] * len(dilations), 0
    for i in reversed(range(len(dilations))):
        starts[i] = max(0, first_output - above)
        above += (kernel_size - 1) * dilations[i]
    return starts
