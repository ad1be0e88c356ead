"""Generation precision: the weights the compiled step reads, in fewer bytes.

A batch-1 step reads every weight once, so its speed is set by bytes per weight. `precision`
names how the four kinds of matrices of each step (dilated convs, residual/skip convs and the
two head convs) are stored: "fp32"; "bf16" (each weight rounded to its nearest bfloat16: 8 bits
of mantissa); "int8" (per output channel, 127 levels either side of zero, times a float scale).
Embeddings, biases and the conditioning stay float32, and every sum is accumulated in float32.

The rounding rules live here once: the compiled step packs the rounded weights exactly, and
`at_precision` gives a PyTorch copy of a model holding the same values, so the PyTorch paths
(the reference, the GPU) and teacher-forced scoring compute what the compiled step computes.
"""

from __future__ import annotations

import copy

import torch

from wavenet import checks

PRECISIONS = ("fp32", "bf16", "int8")  # widest first
DEFAULT_PRECISION = "bf16"  # measured: see the README's "Generation precision"
BYTES_PER_WEIGHT = {"fp32": 4, "bf16": 2, "int8": 1}


def check(precision: str) -> str:
    checks.choice("precision", precision, PRECISIONS)
    return precision


def bf16_bits(w: torch.Tensor) -> torch.Tensor:
    """Each weight rounded to the nearest bfloat16 (ties to even), as its 16 bits (int32,
    0..65535)."""
    return w.float().to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (N, …): one scale per output channel (row), max|row| / 127, and the row in units of
    it rounded to int8. Returns (q (N, …) int8, scale (N,) float32); an all-zero row gets
    scale 1 (its q is 0)."""
    scale = w.float().flatten(1).abs().amax(dim=1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.round(w.float() / scale.view(shape)).clamp(-127, 127).to(torch.int8)
    return q, scale


def rounded(w: torch.Tensor, precision: str) -> torch.Tensor:
    """w (N, …), output channels first, as the values `precision` stores (float32)."""
    if precision == "bf16":
        return w.float().to(torch.bfloat16).float()
    if precision == "int8":
        q, scale = int8_rows(w)
        return q.float() * scale.view((-1,) + (1,) * (w.dim() - 1))
    return w


def step_matrices(model) -> list[torch.nn.Parameter]:
    """The weights the compiled step packs in the generation precision (all (out, in, k))."""
    out = []
    for layer in model.layers:
        out += [layer.dilated.weight, layer.out.weight]
    return out + [model.head1.weight, model.head2.weight]


def at_precision(model, precision: str):
    """The model itself for "fp32"; otherwise a copy whose step matrices hold the values that
    `precision` stores (rounding them again changes nothing)."""
    if check(precision) == "fp32":
        return model
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for w in step_matrices(copied):
            w.copy_(rounded(w, precision))
    return copied
