"""The WaveNet: embedded mu-law input, a stack of gated dilated residual layers, an output head."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wavenet.errors import UserError
from wavenet.layers import ResidualBlock


@dataclass
class WaveNetConfig:
    """Architecture.

    Attributes:
        layers_per_cycle: layers in one cycle of dilations 1, 2, …, 2**(layers_per_cycle-1).
        cycles: how many times the dilation cycle repeats.
        kernel_size: taps of each dilated convolution (2 as in the paper; 3 allowed).
        residual_channels: width of the residual stream (and of the input embedding).
        gate_channels: width after the tanh·sigmoid gate (the dilated conv outputs twice this).
        skip_channels: width of the skip connections and the output head.
        quantization_channels: classes of the mu-law output (256 = 8 bits).
    """

    layers_per_cycle: int = 10
    cycles: int = 3
    kernel_size: int = 2
    residual_channels: int = 64
    gate_channels: int = 128
    skip_channels: int = 256
    quantization_channels: int = 256

    def __post_init__(self):
        for key in ("layers_per_cycle", "cycles", "residual_channels", "gate_channels",
                    "skip_channels"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key}={getattr(self, key)}: must be at least 1")
        if self.kernel_size not in (2, 3):
            raise UserError(f"model.kernel_size={self.kernel_size}: use 2 or 3")
        if not 2 <= self.quantization_channels <= 65536:
            raise UserError(f"model.quantization_channels={self.quantization_channels}: "
                             "use 2..65536 (256 is the usual 8-bit mu-law)")

    @property
    def dilations(self) -> list[int]:
        return [2**i for i in range(self.layers_per_cycle)] * self.cycles

    @property
    def receptive_field(self) -> int:
        """How many past samples one prediction depends on (the newest included)."""
        return (self.kernel_size - 1) * sum(self.dilations) + 1


class WaveNet(nn.Module):
    """Autoregressive model over mu-law classes.

    `forward(x)[:, :, t]` is the distribution of sample t+1 given samples ≤ t.
    """

    def __init__(self, cfg: WaveNetConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.quantization_channels, cfg.residual_channels)
        self.layers = nn.ModuleList(
            ResidualBlock(cfg.residual_channels, cfg.gate_channels, cfg.skip_channels,
                          cfg.kernel_size, d)
            for d in cfg.dilations
        )
        self.head1 = nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1)
        self.head2 = nn.Conv1d(cfg.skip_channels, cfg.quantization_channels, 1)
        # Summing many skips grows their scale with depth; this keeps it fixed.
        self.skip_scale = math.sqrt(1.0 / len(self.layers))

    @property
    def receptive_field(self) -> int:
        return self.cfg.receptive_field

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed_classes(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) int64 classes -> (B, R, T)."""
        return self.embed(x).transpose(1, 2)

    def head(self, skip: torch.Tensor) -> torch.Tensor:
        """Summed skips (B, S, T) -> logits (B, Q, T)."""
        return self.head2(F.relu(self.head1(F.relu(skip * self.skip_scale))))

    def forward(
        self, x: torch.Tensor, layer_inputs: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Teacher-forced pass.

        Args:
            x: (B, T) int64 mu-law classes.
            layer_inputs: if given, each layer's input (B, R, T) is appended to it (used to prime
                incremental generation from a whole recording in one pass).
        Returns:
            logits (B, Q, T); column t predicts sample t+1.
        """
        h = self.embed_classes(x)
        skip = 0
        for layer in self.layers:
            if layer_inputs is not None:
                layer_inputs.append(h)
            h, s = layer(h)
            skip = skip + s
        return self.head(skip)
