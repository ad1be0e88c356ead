"""Output distributions over the next sample. For now: a softmax over mu-law classes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def categorical_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in nats.

    Args:
        logits: (B, Q, T) unnormalized log-probabilities.
        targets: (B, T) class indices.
    """
    return F.cross_entropy(logits, targets)


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2.0)


def sample_categorical(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one class per row.

    Args:
        logits: (B, Q).
        temperature: divides the logits; 0 picks the most likely class (greedy).
    Returns:
        (B,) int64 classes.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
