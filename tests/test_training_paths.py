"""The training path through the residual stack, `residual_loop` (each layer computes only the
time steps the scored outputs need), computes the layer loop over all time steps, sliced."""

from __future__ import annotations

import pytest
import torch

from tests.test_fastpaths import chained
from tests.test_generate import tiny
from wavenet.layers import needed_starts, residual_loop

PATHS = {
    "full loop": chained,
    "residual_loop": residual_loop,
}


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("conditioning", [None, "per step", "global"])
@pytest.mark.parametrize("first_output", [0, 9, 40, 59])
def test_the_stack_paths_agree_with_all_gradients(kernel_size, conditioning, first_output):
    """Outputs and the gradients of every parameter, of the input and of the conditioning, in
    float64, with the loss weighting each output column differently."""
    model = tiny(kernel_size=kernel_size).double()
    layers = model.layers
    batch, length = 3, 60
    R, G, S = (model.cfg.residual_channels, model.cfg.gate_channels, model.cfg.skip_channels)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(batch, R, length, generator=g, dtype=torch.float64)
    steps = {None: None, "per step": length, "global": 1}[conditioning]
    extra = (None if steps is None else
             torch.randn(batch, len(layers) * 2 * G, steps, generator=g, dtype=torch.float64))
    weights = torch.randn(batch, S, length - first_output, generator=g, dtype=torch.float64)

    def run(path):
        model.zero_grad()
        inputs = [t.clone().requires_grad_() for t in (h, extra) if t is not None]
        out = PATHS[path](layers, inputs[0], inputs[1] if extra is not None else None,
                          first_output)
        (out * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        grads.update({f"input {i}": t.grad for i, t in enumerate(inputs)})
        return out.detach(), grads

    out_ref, grads_ref = run("full loop")
    assert out_ref.shape == (batch, S, length - first_output)
    assert len(grads_ref) == 4 * len(layers) + 1 + (extra is not None)
    for path in ("residual_loop",):
        out, grads = run(path)
        torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-12, msg=path)
        assert grads.keys() == grads_ref.keys(), path
        for name in grads:
            torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-8, atol=1e-10,
                                       msg=f"{path}: {name}")


def test_the_loop_computes_only_the_needed_time_steps():
    """Each layer's dilated convolution sees exactly the input steps its needed outputs read."""
    model = tiny(kernel_size=3).double()
    first_output, length = 25, 60
    k = model.cfg.kernel_size
    starts = needed_starts([layer.dilation for layer in model.layers], k, first_output)
    assert starts[-1] == first_output and starts[0] == 0 < starts[1] < starts[-1]
    widths = []
    hooks = [layer.dilated.register_forward_hook(
        lambda module, args, out: widths.append(out.shape[2])) for layer in model.layers]
    residual_loop(model.layers, torch.randn(2, model.cfg.residual_channels, length,
                                            dtype=torch.float64), None, first_output)
    for hook in hooks:
        hook.remove()
    assert widths == [length - start for start in starts]
