"""Output distributions over the next sample.

Each distribution says how audio becomes the model's input, what the head predicts, the loss,
and how to draw the next sample:

- `MuLawCategorical`: a softmax over 2^bits mu-law classes (8-bit by default); the input is an
  embedded class.
- `DiscretizedLogisticMixture`: a mixture of logistics over 16-bit linear PCM (PixelCNN++ /
  Parallel WaveNet); the input is the waveform value itself.

Audio is float in [-1, 1]. A model "value" is what is fed back as the next input: int64 classes
for the categorical, float32 amplitudes for the mixture.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from wavenet.audio import class_entropy_bits, mu_law_decode, mu_law_edges, mu_law_encode
from wavenet.errors import UserError


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw from softmax(logits) (B, N) with uniforms u (B,): the first index whose running sum
    of exp(logit - max) exceeds u times the total. One uniform per draw, so the compiled
    generation step (csrc/fast_step.cpp) draws the same index from the same u."""
    weights = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    cdf = weights.cumsum(dim=-1)
    index = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    return index.squeeze(-1).clamp(max=logits.shape[-1] - 1)


def _uniforms(noise, batch, count, generator, device):
    """The (B, count) uniforms of one draw: given by the caller, or drawn here."""
    if noise is not None:
        return noise
    return torch.rand(batch, count, generator=generator, device=device)


class MuLawCategorical:
    """256-way (or 2^n) softmax over mu-law classes."""

    continuous_input = False
    noise_per_sample = 1  # uniforms per draw

    def __init__(self, classes: int = 256):
        self.classes = classes
        self.num_params = classes

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (…) in [-1, 1] -> classes (…) int64: both input and target."""
        return mu_law_encode(audio, self.classes)

    def decode(self, values: torch.Tensor) -> torch.Tensor:
        return mu_law_decode(values, self.classes)

    def silence(self) -> int:
        return self.classes // 2

    def nll(self, params: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"):
        """Negative log-likelihood in nats. params (B, Q, T), targets (B, T) classes."""
        return F.cross_entropy(params.float(), targets, reduction=reduction)

    def sample(self, params: torch.Tensor, temperature: float,
               noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """params (B, Q) -> (B,) classes; temperature 0 is greedy.

        noise: (B, 1) uniforms to draw with; None draws them from `generator`.
        """
        if temperature == 0:
            return params.argmax(dim=-1)
        u = _uniforms(noise, params.shape[0], 1, generator, params.device)
        return inverse_cdf(params.float() / temperature, u[:, 0])

    def histogram_entropy_bits(self, targets: torch.Tensor) -> float:
        return class_entropy_bits(targets.cpu().numpy(), self.classes)

    def bins(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio (…) -> the (lower, upper) amplitudes (…) float64 of each value's class."""
        edges = torch.from_numpy(mu_law_edges(self.classes)).to(audio.device)
        k = self.encode(audio)
        return edges[k], edges[k + 1]

    def interval_log_prob(self, params: torch.Tensor, lo: torch.Tensor,
                          hi: torch.Tensor) -> torch.Tensor:
        """log P(lo ≤ value < hi) per sample, reading each class as uniform over its
        amplitudes. params (B, Q, T); lo, hi (B, T) with lo < hi -> (B, T) float64.

        An interval wholly beyond ±1 gets the end class's probability: values the encoder
        clips count as that class, as `nll` counts them."""
        edges = torch.from_numpy(mu_law_edges(self.classes)).to(params.device)
        left, right = edges[:-1, None], edges[1:, None]  # (Q, 1)
        lo, hi = lo.double().clamp(-1, 1)[:, None], hi.double().clamp(-1, 1)[:, None]
        share = (torch.minimum(hi, right) - torch.maximum(lo, left)).clamp(min=0) / (right - left)
        end = torch.zeros_like(share)
        end[:, 0], end[:, -1] = (hi[:, 0] <= -1).double(), (lo[:, 0] >= 1).double()
        log_p = F.log_softmax(params.double(), dim=1)
        return torch.logsumexp(log_p + (share + end).log(), dim=1)


class DiscretizedLogisticMixture:
    """A mixture of K logistics, discretized to the 2^bits levels of linear PCM in [-1, 1].

    The head predicts, per component: a mixture logit, a mean and a log-scale (floored at
    `log_scale_min`, which bounds how sharp a component can get). The edge bins take the whole
    tail: P(x = -1) = CDF(-1 + half bin), P(x = +1) = 1 - CDF(1 - half bin).
    """

    continuous_input = True
    noise_per_sample = 2  # uniforms per draw: the component, then the logistic

    def __init__(self, mixtures: int = 10, bits: int = 16, log_scale_min: float = -7.0):
        self.mixtures = mixtures
        self.levels = 2**bits
        self.half_bin = 1.0 / (self.levels - 1)
        self.log_scale_min = log_scale_min
        self.num_params = 3 * mixtures

    def quantize(self, audio: torch.Tensor) -> torch.Tensor:
        """Snap to the bin centres, the values the model sees and predicts."""
        levels = torch.round((audio.clamp(-1, 1) + 1) / 2 * (self.levels - 1))
        return levels / (self.levels - 1) * 2 - 1

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        return self.quantize(audio.float())

    def decode(self, values: torch.Tensor) -> torch.Tensor:
        return values.float()

    def silence(self) -> float:
        return 0.0

    def split(self, params: torch.Tensor):
        """(B, 3K, …) -> logits, means, log_scales, each (B, K, …)."""
        logits, means, log_scales = params.float().chunk(3, dim=1)
        return logits, means, log_scales.clamp(min=self.log_scale_min)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log P(x) per sample. params (B, 3K, T), x (B, T) bin centres -> (B, T)."""
        logits, means, log_scales = self.split(params)
        x = x.unsqueeze(1)
        centred = x - means
        inv_s = torch.exp(-log_scales)
        plus = inv_s * (centred + self.half_bin)
        minus = inv_s * (centred - self.half_bin)
        log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus)
        log_one_minus_cdf_minus = -F.softplus(minus)  # log (1 - sigmoid(minus))
        cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        mid = inv_s * centred
        # log of the density at the centre times the bin width: used when cdf_delta underflows
        log_pdf_mid = mid - log_scales - 2.0 * F.softplus(mid) + math.log(2 * self.half_bin)
        inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
        edge = 1.0 - self.half_bin / 2  # any bin centre above this is the top bin
        log_probs = torch.where(x < -edge, log_cdf_plus,
                                torch.where(x > edge, log_one_minus_cdf_minus, inner))
        return torch.logsumexp(log_probs + F.log_softmax(logits, dim=1), dim=1)

    def nll(self, params: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"):
        """Negative log-likelihood in nats. params (B, 3K, T), targets (B, T) in [-1, 1]."""
        lp = self.log_prob(params, targets)
        return -(lp.mean() if reduction == "mean" else lp.sum())

    def sample(self, params: torch.Tensor, temperature: float,
               noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """params (B, 3K) -> (B,) amplitudes on the PCM grid.

        Temperature scales the component logits and each logistic's scale; 0 takes the most
        likely component's mean. noise: (B, 2) uniforms to draw with; None draws them from
        `generator`.
        """
        logits, means, log_scales = self.split(params)
        if temperature == 0:
            k = logits.argmax(dim=1, keepdim=True)
            return self.quantize(means.gather(1, k).squeeze(1))
        u = _uniforms(noise, params.shape[0], 2, generator, params.device)
        k = inverse_cdf(logits / temperature, u[:, 0])[:, None]
        mean = means.gather(1, k).squeeze(1)
        scale = torch.exp(log_scales.gather(1, k).squeeze(1)) * temperature
        u = u[:, 1].clamp(1e-5, 1 - 1e-5)
        return self.quantize(mean + scale * (torch.log(u) - torch.log1p(-u)))

    def histogram_entropy_bits(self, targets: torch.Tensor) -> float:
        levels = torch.round((targets + 1) / 2 * (self.levels - 1)).long()
        return class_entropy_bits(levels.cpu().numpy().astype(np.int64), self.levels)


def make_distribution(name: str, classes: int, mixtures: int, log_scale_min: float):
    if name == "mulaw":
        return MuLawCategorical(classes)
    if name == "mol":
        return DiscretizedLogisticMixture(mixtures, 16, log_scale_min)
    raise UserError(f"model.output={name!r}: use mulaw (256-way softmax) or mol "
                    "(mixture of logistics over 16-bit audio)")
