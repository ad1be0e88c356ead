import math

import numpy as np
import pytest
import torch
from scipy import stats

from wavenet.audio import mu_law_edges
from wavenet.distributions import DiscretizedLogisticMixture, MuLawCategorical
from wavenet.errors import UserError
from wavenet.model import WaveNetConfig

MOL = DiscretizedLogisticMixture(mixtures=3, bits=16, log_scale_min=-9.0)
GRID = torch.arange(65536) / 65535 * 2 - 1  # the 16-bit levels, as quantize() makes them


def random_params(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, generator=g)
    means = torch.rand(n, 3, generator=g) * 2.4 - 1.2  # some beyond the edges
    log_scales = torch.rand(n, 3, generator=g) * 8 - 9  # from very sharp to broad
    return torch.cat([logits, means, log_scales], dim=1)  # (n, 3K)


def all_bin_log_probs(params: torch.Tensor) -> torch.Tensor:
    """log P of every 16-bit level for each parameter row: (n, 65536)."""
    n = params.shape[0]
    p = params[:, :, None].expand(n, 9, GRID.numel())
    return MOL.log_prob(p, GRID.expand(n, -1))


def test_grid_is_exactly_the_quantized_levels():
    assert torch.equal(MOL.quantize(GRID), GRID)
    assert torch.equal(MOL.quantize(torch.tensor([-3.0, 3.0])), torch.tensor([-1.0, 1.0]))


def test_probabilities_over_all_bins_sum_to_one():
    total = all_bin_log_probs(random_params(6)).double().exp().sum(dim=1)
    torch.testing.assert_close(total, torch.ones(6, dtype=torch.float64), atol=2e-3, rtol=0)


def test_loss_matches_a_direct_computation():
    params = random_params(5, seed=1)
    x = torch.tensor([-1.0, 1.0, 0.0, GRID[40000].item(), GRID[123].item()])

    def direct(row, value):  # float64, straight from the definition
        logits, means, log_scales = row.double().view(3, 3)
        log_scales = log_scales.clamp(min=-9.0)
        w = torch.softmax(logits, 0)
        half = 1 / 65535
        cdf = lambda v: torch.sigmoid((v - means) / log_scales.exp())  # noqa: E731
        upper = torch.ones(3, dtype=torch.float64) if value >= 1 else cdf(value + half)
        lower = torch.zeros(3, dtype=torch.float64) if value <= -1 else cdf(value - half)
        return -math.log(float((w * (upper - lower)).sum()))

    expected = [direct(params[i], x[i].item()) for i in range(5)]
    got = -MOL.log_prob(params[:, :, None], x[:, None])[:, 0]
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-3, atol=2e-3)
    assert MOL.nll(params[:, :, None], x[:, None]).item() == pytest.approx(np.mean(expected),
                                                                           rel=2e-3)


def test_samples_follow_the_mixture():
    row = torch.tensor([0.3, -0.2, 0.0, -0.5, 0.1, 0.6, -3.0, -2.5, -3.5])  # 3 components
    n = 20000
    samples = MOL.sample(row.expand(n, -1), 1.0, generator=torch.Generator().manual_seed(0))
    probs = all_bin_log_probs(row[None])[0].double().exp()
    edges = np.linspace(0, 65536, 41).astype(int)  # 40 coarse bins over the level grid
    expected = np.array([probs[a:b].sum().item()
                         for a, b in zip(edges[:-1], edges[1:], strict=True)])
    levels = torch.round((samples + 1) / 2 * 65535).long().numpy()
    observed = np.histogram(levels, bins=edges)[0]
    keep = expected * n > 5
    exp_counts = expected[keep] / expected[keep].sum() * observed[keep].sum()
    assert stats.chisquare(observed[keep], exp_counts).pvalue > 1e-3


def test_categorical_samples_follow_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]])
    draws = MuLawCategorical(4).sample(logits.expand(20000, -1), 1.0, generator=
                                       torch.Generator().manual_seed(0))
    observed = np.bincount(draws.numpy(), minlength=4)
    expected = torch.softmax(logits[0].double(), 0).numpy() * 20000
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_unknown_output_is_rejected():
    with pytest.raises(UserError, match="model.output"):
        WaveNetConfig(output="gaussian")


def test_categorical_interval_probabilities_read_each_class_as_uniform():
    dist = MuLawCategorical(256)
    params = torch.randn(2, 256, 3, generator=torch.Generator().manual_seed(0)) * 3
    log_p = torch.log_softmax(params.double(), dim=1)
    edges = torch.from_numpy(mu_law_edges(256))
    for k in (0, 7, 128, 255):  # a class's own interval: its probability
        lo, hi = edges[k].expand(2, 3), edges[k + 1].expand(2, 3)
        torch.testing.assert_close(dist.interval_log_prob(params, lo, hi), log_p[:, k])
    k = 100  # its lower quarter: a quarter of it
    lo = edges[k].expand(2, 3)
    hi = lo + (edges[k + 1] - edges[k]) / 4
    torch.testing.assert_close(dist.interval_log_prob(params, lo, hi), log_p[:, k] - math.log(4))
    # any partition of [-1, 1] into intervals, whatever their ends: the probabilities sum to 1
    cuts = torch.sort(torch.rand(40, generator=torch.Generator().manual_seed(1)) * 2 - 1).values
    cuts = torch.cat([torch.tensor([-1.0]), cuts, torch.tensor([1.0])]).double()
    total = sum(dist.interval_log_prob(params, cuts[i].expand(2, 3), cuts[i + 1].expand(2, 3))
                .exp() for i in range(len(cuts) - 1))
    torch.testing.assert_close(total, torch.ones(2, 3, dtype=torch.float64))
    # wholly beyond an end: the end class, as the encoder clips
    beyond = dist.interval_log_prob(params, torch.full((2, 3), 1.2), torch.full((2, 3), 1.3))
    torch.testing.assert_close(beyond, log_p[:, -1])
    lo, hi = dist.bins(torch.tensor([-1.0, -0.3, 0.0, 0.5, 1.0]))
    assert torch.all(lo < hi) and lo[0] == -1 and hi[-1] == 1
