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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, T) -> (B, C_out, T)."""
        return super().forward(F.pad(x, (self.left_padding, 0)))


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

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer.

        Args:
            x: (B, R, T) residual stream.
            extra: (B, 2G, T or 1) conditioning added to the filter and gate inputs, or None.
        Returns:
            next x (B, R, T), skip (B, S, T).
        """
        pre = self.dilated(x)
        if extra is not None:
            pre = pre + extra
        filt, gate = pre.chunk(2, dim=1)
        z = torch.tanh(filt) * torch.sigmoid(gate)
        res, skip = self.out(z).split([self.residual_channels, self.out.out_channels
                                       - self.residual_channels], dim=1)
        # sqrt(0.5) keeps the residual stream's variance from growing with depth.
        return (x + res) * math.sqrt(0.5), skip
