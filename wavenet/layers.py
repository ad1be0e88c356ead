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


# torch.compile runs this eagerly and compiles the rest of the forward around it. Dynamo cannot
# trace the stack (out= writes into views; the backward's first nonzero row is a data-dependent
# int): left to try, it breaks the graph inside it several times and falls back to eager for
# whole frames. It is already one GEMM per tap with in-place elementwise work, so compiling it
# would buy little: on the CPU, training steps were no faster with Dynamo's attempt (bf16:
# slower) and its first step compiled longer.
@torch.compiler.disable
def residual_stack(layers: nn.ModuleList, h: torch.Tensor, extra: torch.Tensor | None = None,
                   first_output: int = 0) -> torch.Tensor:
    """The whole stack of ResidualBlocks at once, for teacher-forced passes over long inputs.

    Computes the same function as chaining `layer(h, extra_i)` and summing the skips, with the
    layers' own parameters, but faster on CPU: activations are time-major (T·B, C) matrices so
    that every convolution tap is one GEMM on a contiguous block of rows (a dilation d is a shift
    of d·B rows, with no padding copies); all layers' skip projections are one GEMM over their
    concatenated gated activations; the backward pass is written by hand (see `_GatedStack`).
    Only the outputs from time `first_output` on are computed: each layer computes just the
    time steps that those outputs depend on (training scores no output inside the first
    receptive field, so the top layers skip most of it).

    Args:
        layers: the ResidualBlocks, all with the same channel sizes and kernel size.
        h: (T, B, R) time-major input of the first layer.
        extra: (B, L·2G, T or 1) conditioning of all layers (as `WaveNet.conditioning`), or None.
        first_output: the first time step whose output is wanted.
    Returns:
        (T - first_output, B, S) the sum of all layers' skips from time first_output on; under
        autocast, in autocast's dtype (the whole stack runs in it).
    """
    first = layers[0]
    spec = _StackSpec([layer.dilation for layer in layers], first.kernel_size,
                      first.out.in_channels, first.out.out_channels - first.residual_channels,
                      first_output)
    params = [p for layer in layers for p in (layer.dilated.weight, layer.dilated.bias,
                                              layer.out.weight, layer.out.bias)]
    device = h.device.type
    if not torch.is_autocast_enabled(device):
        return _apply_stack(h, extra, spec, params)
    # Autocast would cast each GEMM's operands but not the in-place and out= ops around them,
    # so under autocast the whole stack runs in autocast's dtype: cast here, outside the
    # Function, so that autograd's cast backward hands float32 gradients to the float32
    # weights, and turn autocast off inside so that every op sees that one dtype.
    dtype = torch.get_autocast_dtype(device)
    with torch.autocast(device, enabled=False):
        return _apply_stack(h.to(dtype), extra.to(dtype) if extra is not None else None, spec,
                            [p.to(dtype) for p in params])


def residual_loop(layers: nn.ModuleList, h: torch.Tensor, extra: torch.Tensor | None = None,
                  first_output: int = 0) -> torch.Tensor:
    """The stack of ResidualBlocks in plain PyTorch ops, layer by layer, autograd's backward.

    Computes the same function as `residual_stack`, and as chaining `layer(h, extra_i)` over
    all time steps and summing the skips, but like `residual_stack` each layer computes only
    the time steps that the outputs from `first_output` on depend on (`needed_starts`): it is
    given its input from (k-1)·d steps before its own first one. The competitor against which
    the fused stack's hand-written code is measured (scripts/compare_training_paths.py), and
    a stack that `torch.compile` can trace.

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


def _apply_stack(h: torch.Tensor, extra: torch.Tensor | None, spec: _StackSpec,
                 params: list[torch.Tensor]) -> torch.Tensor:
    """`residual_stack` on inputs and parameters of one dtype; autograd only where needed."""
    if torch.is_grad_enabled() and (h.requires_grad or any(p.requires_grad for p in params)
                                    or (extra is not None and extra.requires_grad)):
        return _GatedStack.apply(h, extra, spec, *params)
    return _stack_forward(h, extra, spec, params, save=False)[0]


class _StackSpec:
    """Sizes of a stack (the residual width comes with the input)."""

    def __init__(self, dilations: list[int], kernel_size: int, gate: int, skip: int,
                 first_output: int):
        self.dilations, self.k = dilations, kernel_size
        self.g, self.s = gate, skip
        self.first = first_output
        self.starts = needed_starts(dilations, kernel_size, first_output)


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


def _stack_forward(h: torch.Tensor, extra: torch.Tensor | None, spec: _StackSpec,
                   params: list[torch.Tensor], save: bool):
    """Forward of `residual_stack`; with save, also what the backward needs."""
    T, B, R = h.shape
    N, G, S, k, L = T * B, spec.g, spec.s, spec.k, len(spec.dilations)
    # tanh(f) = 2·σ(2f) - 1, and σ is much faster than tanh on CPU: the filter half of the
    # pre-activation is computed doubled (weights, bias and conditioning) and one sigmoid
    # covers both halves.
    doubling = h.new_ones(2 * G)
    doubling[:G] = 2
    taps = (torch.stack(params[0::4]) * doubling[:, None, None]).permute(0, 3, 2, 1)
    taps = taps.contiguous()  # (L, k, R, 2G): taps[i, k-1] multiplies the newest input
    bias = torch.stack(params[1::4]) * doubling  # (L, 2G)
    out_w = torch.stack(params[2::4])[..., 0]  # (L, R+S, G)
    res_w = out_w[:, :R].transpose(1, 2).contiguous()  # (L, G, R)
    skip_w = out_w[:, R:].permute(0, 2, 1).reshape(L * G, S)  # all layers' skips, stacked
    out_b = torch.stack(params[3::4])  # (L, R+S)
    x = h.reshape(N, R)
    zs = h.new_empty(N, L * G)  # every layer's gated activation, side by side
    saved = []
    for i, d in enumerate(spec.dilations):
        a = spec.starts[i] * B  # rows before a are neither computed nor read
        pre = torch.addmm(bias[i], x[a:], taps[i, k - 1])
        for j in range(k - 1):
            shift = (k - 1 - j) * d * B  # tap j sees the input (k-1-j)·d steps back
            first_row = max(a, shift)
            if first_row < N:
                pre[first_row - a:].addmm_(x[first_row - shift:N - shift], taps[i, j])
        if extra is not None:
            e = extra[:, 2 * G * i:2 * G * (i + 1)].permute(2, 0, 1)  # (T or 1, B, 2G)
            if e.shape[0] > 1:
                e = e[spec.starts[i]:]
            pre3 = pre.view(-1, B, 2 * G)
            pre3[..., :G].add_(e[..., :G], alpha=2)
            pre3[..., G:].add_(e[..., G:])
        act = pre.sigmoid_()  # [σ(2f), σ(g)] of rows a…
        tanh_f, sig_g = act[:, :G], act[:, G:]
        tanh_f.mul_(2).sub_(1)
        z = zs[a:, G * i:G * (i + 1)]
        torch.mul(tanh_f, sig_g, out=z)
        if save:
            saved += [x, act]
        if i < L - 1:  # the last layer's residual output is unused
            x_next = x.new_empty(N, R)
            torch.addmm(out_b[i, :R], z, res_w[i], out=x_next[a:])
            x_next[a:].add_(x[a:]).mul_(math.sqrt(0.5))
            x = x_next
    first = spec.first * B
    skip = torch.addmm(out_b[:, R:].sum(0), zs[first:], skip_w)
    return skip.view(T - spec.first, B, S), saved, zs


class _GatedStack(torch.autograd.Function):
    """Autograd for `residual_stack`, with a hand-written backward.

    The backward reuses the saved sigmoid outputs (no tanh or sigmoid recomputation), fuses the
    gate's derivative into four elementwise passes, and skips the time steps at which the
    incoming gradient is exactly zero (e.g. the receptive-field warm-up columns that training
    does not score): for those, every product it would form has a zero factor.
    """

    @staticmethod
    def forward(ctx, h, extra, spec, *params):
        skip, saved, zs = _stack_forward(h, extra, spec, list(params), save=True)
        ctx.spec, ctx.shape = spec, h.shape
        ctx.extra_shape = None if extra is None else extra.shape
        ctx.save_for_backward(zs, *saved, *params)
        return skip

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_skip):
        # The forward ran with autocast off; so must this (it can be called inside autocast).
        device = grad_skip.device.type
        if not torch.is_autocast_enabled(device):
            return _GatedStack._backward(ctx, grad_skip)
        with torch.autocast(device, enabled=False):
            return _GatedStack._backward(ctx, grad_skip)

    @staticmethod
    def _backward(ctx, grad_skip):
        spec, (T, B, R) = ctx.spec, ctx.shape
        N, G, S, k, L = T * B, spec.g, spec.s, spec.k, len(spec.dilations)
        zs, *rest = ctx.saved_tensors
        saved, params = rest[:2 * L], rest[2 * L:]
        c = math.sqrt(0.5)
        taps = torch.stack(params[0::4]).permute(0, 3, 1, 2).contiguous()  # (L, k, 2G, R)
        out_w = torch.stack(params[2::4])[..., 0]  # (L, R+S, G)
        gs = grad_skip.new_zeros(N, S)  # the times before first_output get no gradient
        gs[spec.first * B:] = grad_skip.reshape(-1, S)
        # Rows before `lo` (time steps before the first nonzero gradient) have zero gradient.
        nonzero = gs.ne(0).any(dim=1)
        first = int(nonzero.int().argmax()) if bool(nonzero.any()) else N
        lo = first // B * B
        skip_w_grad = gs[lo:].t() @ zs[lo:]  # (S, L·G)
        skip_b_grad = gs[lo:].sum(0)
        grads = [None] * (4 * L)
        extra_grad = None
        if ctx.extra_shape is not None and ctx.needs_input_grad[1]:
            extra_grad = gs.new_zeros(ctx.extra_shape)
        gh = None  # gradient w.r.t. the output residual stream of layer i (rows lo: only)
        for i in reversed(range(L)):
            d = spec.dilations[i]
            x, act = saved[2 * i], saved[2 * i + 1]
            act = act[lo - spec.starts[i] * B:]  # act holds rows starts[i]·B… only (lo ≥ it)
            tanh_f, sig_g = act[:, :G], act[:, G:]
            z = zs[lo:, G * i:G * (i + 1)]
            dz = gs[lo:] @ out_w[i, R:]
            res_w_grad = gs.new_zeros(R, G)
            res_b_grad = gs.new_zeros(R)
            if gh is not None:
                gres = gh[lo:].mul_(c)  # gh is not needed afterwards
                dz.addmm_(gres, out_w[i, :R])
                res_w_grad = gres.t() @ z
                res_b_grad = gres.sum(0)
            # z = tanh(f)·σ(g): dz/df = σ(g)(1 - tanh²f), dz/dg = z(1 - σ(g)).
            dpre = torch.empty_like(act)
            df, dg = dpre[:, :G], dpre[:, G:]
            torch.mul(dz, z, out=dg)
            torch.mul(dz, sig_g, out=df)
            df.addcmul_(dg, tanh_f, value=-1)
            dg.addcmul_(dg, sig_g, value=-1)
            del dz
            if extra_grad is not None:
                e = extra_grad[:, 2 * G * i:2 * G * (i + 1)].permute(2, 0, 1)
                dpre3 = dpre.view(-1, B, 2 * G)
                if e.shape[0] == 1:
                    e[0] += dpre3.sum(0)
                else:
                    e[lo // B:] = dpre3
            # Gradients of the dilated conv: its input x (= this layer's input), weights, bias.
            lo_new = max(0, lo - (k - 1) * d * B)
            gx = x.new_empty(N, R)
            gx[lo_new:lo].zero_()
            if gh is not None:
                torch.addmm(gres, dpre, taps[i, k - 1], out=gx[lo:])
            else:
                torch.mm(dpre, taps[i, k - 1], out=gx[lo:])
            w_grad = x.new_zeros(2 * G, R, k)
            w_grad[:, :, k - 1] = dpre.t() @ x[lo:]
            for j in range(k - 1):
                shift = (k - 1 - j) * d * B
                start = max(lo, shift)
                if start < N:
                    gx[start - shift:N - shift].addmm_(dpre[start - lo:], taps[i, j])
                    w_grad[:, :, j] = dpre[start - lo:].t() @ x[start - shift:N - shift]
            grads[4 * i:4 * i + 4] = [
                w_grad, dpre.sum(0),
                torch.cat([res_w_grad, skip_w_grad[:, G * i:G * (i + 1)]])[..., None],
                torch.cat([res_b_grad, skip_b_grad])]
            gh, lo = gx, lo_new
            del dpre
        gh[:lo].zero_()
        return (gh.view(T, B, R), extra_grad, None, *grads)
