"""Autoregressive generation by three methods that draw the same samples.

"incremental" keeps, per layer, a ring buffer of that layer's last (k-1)·d inputs, so one new
sample costs O(layers) matrix-vector products instead of a forward pass over the receptive field
("naive"). "fast" runs the same algorithm in the compiled step (wavenet/native.py), many steps
per call.
Every method computes with the weights of the generation precision (`wavenet.quantize`:
fp32, bf16 or int8 matrices), so all three draw the same samples within a precision; only the
compiled step reads fewer bytes for it.
Conditioning (conv biases, speaker, upsampled mel) is folded into one additive input per layer
and step, computed ahead of the loop a chunk at a time. All generation state is created and owned
by the generation call; modules hold no buffers.

Time runs over the whole sequence: positions 0..P-1 are the context (a prime, or one receptive
field of silence), P.. the new samples. The step that feeds sample t predicts sample t+1 and uses
the conditioning of sample t+1.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wavenet.config import METHODS
from wavenet.errors import UserError
from wavenet.model import WaveNet
from wavenet.native import NativeStepper, formats, library, unavailable_reason
from wavenet.quantize import DEFAULT_PRECISION, PRECISIONS, at_precision, check

log = logging.getLogger(__name__)
NOISE_BLOCK = 1024  # steps of uniforms drawn at a time; every method draws the same ones


@dataclass
class IncrementalState:
    """Per-layer ring buffers of past layer inputs plus the time index of the next input.

    buffers[i]: (B, R, (k-1)·d_i); the input of time s sits in slot s mod (k-1)·d_i. The buffers
    are views into one `storage` (B, Σ(k-1)·d_i·R) with time-major strides, so that one time
    slot is R contiguous floats: the layout the compiled step reads.
    """

    buffers: list[torch.Tensor]
    storage: torch.Tensor
    t: int = 0

    @classmethod
    def zeros(cls, model: WaveNet, batch_size: int, device=None) -> IncrementalState:
        cfg = model.cfg
        device = device or next(model.parameters()).device
        r = cfg.residual_channels
        spans = [(cfg.kernel_size - 1) * d for d in cfg.dilations]
        storage = torch.zeros(batch_size, sum(spans) * r, device=device)
        buffers, offset = [], 0
        for span in spans:
            block = storage[:, offset * r:(offset + span) * r]
            buffers.append(block.view(batch_size, span, r).transpose(1, 2))
            offset += span
        return cls(buffers, storage)

    @torch.no_grad()
    def fill_from_history(self, model: WaveNet, history: torch.Tensor,
                          speaker: torch.Tensor | None = None, mel: torch.Tensor | None = None,
                          mel_offset: int = 0) -> None:
        """Load the state as if `history` (B, P) had been stepped through, in one forward pass.

        Only the last receptive field (minus one) of inputs reaches the state, so only that is
        run, and streams that share the first stream's history and conditioning (a batch
        started from silence) are run once.

        mel, mel_offset: log-mel frames (B, n_mels, F) and where history[:, 0] sits on their
            time axis (vocoders; see `WaveNet.mel_features`).
        """
        n = history.shape[1]
        start = max(0, n - (model.receptive_field - 1))
        history = history[:, start:]
        inputs = (history, speaker, mel)
        if all(x is None or torch.equal(x, x[:1].expand_as(x)) for x in inputs):
            history, speaker, mel = (None if x is None else x[:1] for x in inputs)
        layer_inputs: list[torch.Tensor] = []
        model(history, speaker, mel, mel_offset + start, layer_inputs=layer_inputs)
        for buf, h in zip(self.buffers, layer_inputs, strict=True):
            span = buf.shape[2]
            times = torch.arange(max(0, h.shape[2] - span), h.shape[2], device=buf.device)
            buf[:, :, (times + start) % span] = h[:, :, times]  # broadcast over shared streams
        self.t = n


class StepBias:
    """Each layer's additive filter/gate input for each step: L tensors (B, 2G) per step.

    Conv biases and the speaker term are constant; the mel term is upsampled and projected for
    `chunk` steps at a time (only the frames those steps need), so memory stays bounded however
    long the utterance.

    Args:
        mel: (B, n_mels, F) frames of the utterance, whose sample 0 is at position `origin` of
            the generation (the context before it is silence).
    """

    def __init__(self, model: WaveNet, batch: int, speaker: torch.Tensor | None,
                 mel: torch.Tensor | None, origin: int = 0, chunk: int = 1024):
        self.model, self.mel, self.origin, self.chunk = model, mel, origin, chunk
        n_layers, two_g = len(model.layers), 2 * model.cfg.gate_channels
        base = torch.stack([layer.dilated.bias for layer in model.layers])  # (L, 2G)
        base = base.expand(batch, n_layers, two_g)
        voice = model.speaker_term(speaker)  # (B, L·2G) or None
        if voice is not None:
            base = base + voice.view(batch, n_layers, two_g)
        self.base = base.contiguous()
        self.static = self.base.unbind(1)  # per-layer views, made once
        self._start, self._block = -1, None

    def _load(self, t: int) -> int:
        """Make sure the block holding step t is projected; return its first step."""
        start = t - t % self.chunk
        if start != self._start:
            # The predictions of samples start… are made by the inputs one step earlier.
            local = self.model.mel_term(self.mel, start - 1 - self.origin, self.chunk)
            b, _, c = local.shape
            block = local.view(b, *self.base.shape[1:], c).permute(0, 3, 1, 2)
            self._block = (block + self.base[:, None]).contiguous()  # (B, C, L, 2G)
            self._start = start
        return start

    def at(self, t: int) -> tuple[torch.Tensor, ...]:
        """Each layer's (B, 2G) input for the prediction of sample t."""
        if self.mel is None:
            return self.static
        start = self._load(t)
        return self._block[:, t - start].unbind(1)

    def window(self, t: int) -> tuple[torch.Tensor, int, int]:
        """The inputs from the prediction of sample t on, for the compiled step.

        Returns:
            (B, L, 2G) view of step t's inputs, the element stride from one step to the next
            (0 when constant), and how many steps from t that view covers.
        """
        if self.mel is None:
            return self.base, 0, sys.maxsize
        start = self._load(t)
        return self._block[:, t - start], self._block.stride(1), start + self.chunk - t


class IncrementalStepper:
    """Weights of a WaveNet rearranged once for per-sample steps in PyTorch: the incremental
    reference that the compiled step is checked against, and the path on GPUs.

    In the step, T = 1 is squeezed away: activations are (B, C) rows so that each layer is two
    addmm calls. Ring buffers keep the (B, C, T) layout, T being the buffer's time slots.
    """

    def __init__(self, model: WaveNet):
        cfg = model.cfg
        self.kernel_size = cfg.kernel_size
        self.residual_channels = cfg.residual_channels
        self.continuous = model.dist.continuous_input
        if self.continuous:
            self.in_w = model.input_proj.weight.detach()[:, 0, 0]  # (R,)
            self.in_b = model.input_proj.bias.detach()
        else:
            self.embed = model.input_table().detach()  # (Q, R)
        self.dilations = cfg.dilations
        self.conv_w, self.out_w, self.out_b = [], [], []
        for layer in model.layers:
            w = layer.dilated.weight.detach()  # (2G, R, k) -> (k·R, 2G), oldest tap first
            self.conv_w.append(w.permute(2, 1, 0).reshape(-1, w.shape[0]).contiguous())
            self.out_w.append(layer.out.weight.detach()[:, :, 0].t().contiguous())  # (G, R+S)
            self.out_b.append(layer.out.bias.detach())
        self.skip_scale = model.skip_scale
        self.head1_w = model.head1.weight.detach()[:, :, 0].t().contiguous()
        self.head1_b = model.head1.bias.detach()
        self.head2_w = model.head2.weight.detach()[:, :, 0].t().contiguous()
        self.head2_b = model.head2.bias.detach()

    def step(self, state: IncrementalState, x: torch.Tensor,
             bias: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Feed sample t (the state's clock) and return the parameters for sample t+1.

        Args:
            x: (B,) model values of sample t.
            bias: each layer's (B, 2G) filter/gate input for sample t+1 (`StepBias.at`).
        Returns:
            (B, P) distribution parameters.
        """
        t = state.t
        k, r = self.kernel_size, self.residual_channels
        if self.continuous:
            h = torch.addcmul(self.in_b, x.float()[:, None], self.in_w)  # (B, R)
        else:
            h = self.embed[x]
        skip = None
        for i, buf in enumerate(state.buffers):
            d, span = self.dilations[i], buf.shape[2]
            taps = [buf[:, :, (t - j * d) % span] for j in range(k - 1, 0, -1)]
            z = torch.addmm(bias[i], torch.cat([*taps, h], dim=1), self.conv_w[i])
            buf[:, :, t % span] = h
            filt, gate = z.chunk(2, dim=1)
            out = torch.addmm(self.out_b[i], torch.tanh(filt) * torch.sigmoid(gate),
                              self.out_w[i])
            s = out[:, r:]
            skip = s if skip is None else skip + s
            h = (h + out[:, :r]) * 0.7071067811865476
        state.t = t + 1
        hidden = F.relu(torch.addmm(self.head1_b, F.relu(skip * self.skip_scale), self.head1_w))
        return torch.addmm(self.head2_b, hidden, self.head2_w)


def silence_context(model: WaveNet, batch_size: int, device=None) -> torch.Tensor:
    """A receptive field of silence (B, RF): the starting context without a prime."""
    device = device or next(model.parameters()).device
    return torch.full((batch_size, model.receptive_field), model.dist.silence(),
                      dtype=torch.float32 if model.dist.continuous_input else torch.long,
                      device=device)


@torch.no_grad()
def generate(
    model: WaveNet,
    length: int | None = None,
    context: torch.Tensor | None = None,
    batch_size: int = 1,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    params_out: torch.Tensor | None = None,
    on_samples: Callable[[torch.Tensor], None] | None = None,
    speaker: torch.Tensor | None = None,
    mel: torch.Tensor | None = None,
    method: str = "fast",
    threads: int | None = None,
    precision: str = DEFAULT_PRECISION,
):
    """Generate new samples per stream.

    Args:
        length: new samples per stream (vocoders: by default mel frames × hop; a shorter
            length leaves the last frames as the right context of the audio made).
        context: (B, P) model values to continue (a prime); None is a receptive field of silence.
        batch_size: streams, used when neither `context` nor `mel` says.
        temperature: sampling temperature; 0 is greedy.
        generator: torch.Generator for reproducible draws.
        params_out: if given, (B, P, length): filled with each step's distribution parameters.
        on_samples: called about 4 times a second with the values made since the last call,
            (B, n): for progress bars and streaming output.
        speaker: (B,) speaker ids (multi-speaker models).
        mel: (B, n_mels, F) log-mel frames of the audio to make (vocoders).
        method: "fast" (the compiled step on the CPU; elsewhere, or without a C++ compiler,
            "incremental"), "incremental" (ring buffers, O(layers) per sample, in PyTorch) or
            "naive" (the reference: a forward pass over the last receptive field per sample).
            All draw the same samples for the same generator.
        threads: CPU threads of the compiled step (default: torch.get_num_threads()).
        precision: the weights' format in the step, "fp32", "bf16" or "int8"
            (`wavenet.quantize`); every method computes with the same rounded weights, so all
            draw the same samples, but only the compiled step reads fewer bytes.
    Returns:
        values (B, length): classes, or amplitudes for "mol".
    """
    model.eval()
    if mel is not None:
        batch_size = mel.shape[0]
        covered = mel.shape[2] * model.cfg.mel.hop_length
        if length is not None and not 0 < length <= covered:
            raise UserError(f"length={length}: mel frames cover {covered} samples")
        length = covered if length is None else length
    if context is None:
        context = silence_context(model, batch_size)
    loop = make_loop(model, context, speaker, mel, method,
                     threads or torch.get_num_threads(), precision)
    return _sample_loop(model, loop, context[:, -1], length, temperature, generator,
                        params_out, on_samples)


def resolve_method(model: WaveNet, method: str) -> str:
    """The method that will run: "fast" becomes "native" where the compiled step can run."""
    if method not in METHODS:
        raise UserError(f"method={method!r}: use one of {', '.join(METHODS)}")
    if method != "fast":
        return method
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        return "incremental"  # the compiled step is for CPU float32
    if library() is None:
        if not _warned:
            _warned.append(True)
            log.warning("compiled generation step unavailable (%s); using the PyTorch "
                        "incremental path, which is slower and draws the same samples",
                        unavailable_reason())
        return "incremental"
    return "native"


_warned: list[bool] = []


def resolve_precision(model: WaveNet, method: str, precision: str) -> str:
    """The precision that will run: the compiled step falls back from a format this CPU lacks
    the instructions for to the next wider one it has (int8 -> bf16), saying so once; the
    PyTorch paths compute every precision."""
    check(precision)
    if resolve_method(model, method) != "native":
        return precision
    runs = formats()
    wider = PRECISIONS[:PRECISIONS.index(precision) + 1]  # fp32 first
    chosen = next(p for p in reversed(wider) if p in runs or p == "fp32")
    if chosen != precision and precision not in _fallbacks:
        _fallbacks.add(precision)
        log.warning("precision=%s: this CPU lacks the instructions of its compiled step; "
                    "generating with %s weights instead", precision, chosen)
    return chosen


_fallbacks: set[str] = set()


def make_loop(model, context, speaker=None, mel=None, method="fast", threads=1,
              precision=DEFAULT_PRECISION):
    """The stepping loop of a method, loaded with the context (B, P): see `StepLoop.advance`.

    mel: (B, n_mels, F) frames of the samples to make, the first of which follows the context.
    precision: of the step's weights (`wavenet.quantize`; see `resolve_precision`).
    """
    precision = resolve_precision(model, method, precision)
    method = resolve_method(model, method)
    model = at_precision(model, precision)
    p = context.shape[1]
    if method == "naive":
        return StepLoop(model, naive_step(model, context, speaker, mel))
    state = IncrementalState.zeros(model, context.shape[0], context.device)
    if p > 1:  # the context's sample 0 is P samples before the utterance's
        state.fill_from_history(model, context[:, :-1], speaker, mel, mel_offset=-p)
    stepper = IncrementalStepper(model)
    bias = StepBias(model, context.shape[0], speaker, mel, origin=p)
    if method == "native":
        return NativeLoop(NativeStepper(model, stepper, precision), state, bias, threads)
    return StepLoop(model, lambda x: stepper.step(state, x, bias.at(state.t + 1)))


@torch.no_grad()
def teacher_forced(model: WaveNet, values: torch.Tensor, speaker: torch.Tensor | None = None,
                   mel: torch.Tensor | None = None, method: str = "fast",
                   precision: str = DEFAULT_PRECISION, threads: int = 1) -> torch.Tensor:
    """The parameters a method's steps give for `values` (B, T) fed in place of their own
    draws, after a receptive field of silence: (B, P, T), column j predicting values[:, j]
    from values[:, :j] (how two precisions differ on the same inputs).

    mel: vocoders: (B, n_mels, F) frames whose sample 0 is values[:, 0].
    """
    batch, length = values.shape
    context = silence_context(model, batch, values.device)
    loop = make_loop(model, context, speaker, mel, method, threads, precision)
    params = torch.empty(batch, model.dist.num_params, length, device=values.device)
    noise = torch.full((batch, length, model.dist.noise_per_sample), 0.5, device=values.device)
    draws = torch.empty(batch, length, dtype=values.dtype, device=values.device)
    loop.advance(context[:, -1], noise, draws, params, 1.0, forced=values)
    return params


def naive_step(model, context, speaker=None, mel=None):
    """step(x) for the reference path: a forward pass over the newest receptive field."""
    rf, origin = model.receptive_field, context.shape[1]
    # The last output of a forward over the newest RF inputs sees exactly the receptive field;
    # a shorter window is zero-padded by the convolutions as the fast path's empty buffers are.
    window = context[:, :-1][:, -(rf - 1):] if rf > 1 else context[:, :0]
    t = context.shape[1] - 1  # time of the next input

    def step(x: torch.Tensor) -> torch.Tensor:
        nonlocal window, t
        window = torch.cat([window, x[:, None]], dim=1)[:, -rf:]
        first = t - window.shape[1] + 1
        t += 1
        return model(window, speaker, mel, mel_offset=first - origin)[:, :, -1]

    return step


class StepLoop:
    """Steps driven from Python: step(x) -> parameters, then the distribution's draw."""

    def __init__(self, model: WaveNet, step: Callable[[torch.Tensor], torch.Tensor]):
        self.dist, self.step = model.dist, step

    def advance(self, x: torch.Tensor, noise: torch.Tensor, out: torch.Tensor,
                params_out: torch.Tensor | None, temperature: float,
                forced: torch.Tensor | None = None) -> torch.Tensor:
        """Feed x (B,) and draw out.shape[1] samples into out (B, n), using the uniforms
        noise (B, n, k) and writing the parameters to params_out (B, P, n) if given. Each
        draw is the next input, or with `forced` (B, n), forced[:, j] is the input after
        step j (teacher forcing). Returns the last input (B,)."""
        for j in range(out.shape[1]):
            params = self.step(x)
            x = self.dist.sample(params, temperature, noise[:, j])
            out[:, j] = x
            if forced is not None:
                x = forced[:, j]
            if params_out is not None:
                params_out[:, :, j] = params
        return x


class NativeLoop:
    """Steps run by the compiled step (wavenet/csrc/fast_step.cpp), many per call."""

    def __init__(self, native: NativeStepper, state: IncrementalState, bias: StepBias,
                 threads: int):
        self.native, self.state, self.bias, self.threads = native, state, bias, threads

    def advance(self, x, noise, out, params_out, temperature, forced=None):
        """As `StepLoop.advance`."""
        x = x.to(torch.float32, copy=True).contiguous()  # the step overwrites it
        values = torch.empty(out.shape)
        if forced is not None:
            forced = forced.to(torch.float32).contiguous()
        done, n = 0, out.shape[1]
        while done < n:
            bias, bias_step, available = self.bias.window(self.state.t + 1)
            m = min(n - done, available)
            self.native.run(self.state.t, x, self.state.storage, bias, bias_step,
                            noise[:, done:done + m], values[:, done:done + m],
                            None if params_out is None else params_out[:, :, done:done + m],
                            temperature, self.threads,
                            None if forced is None else forced[:, done:done + m])
            self.state.t += m
            done += m
        out.copy_(values)
        return out[:, -1] if forced is None else forced[:, -1].to(out.dtype)


def _sample_loop(model, loop, last, length, temperature, generator, params, on_samples):
    """Shared draw loop, in chunks sized to about a quarter second each so that `on_samples`
    streams at a steady pace whatever the speed. Uniforms are drawn NOISE_BLOCK steps at a
    time, so every method consumes the generator identically."""
    batch, device = last.shape[0], last.device
    out = torch.empty(batch, length, dtype=last.dtype, device=device)
    if params is not None and params.shape != (batch, model.dist.num_params, length):
        raise ValueError(f"params_out has shape {tuple(params.shape)}; expected "
                         f"{(batch, model.dist.num_params, length)}")
    x, done, chunk, reported, tick = last, 0, 1, 0, time.monotonic()
    while done < length:
        offset = done % NOISE_BLOCK
        if offset == 0:  # drawn where the generator lives: a CPU generator gives a GPU run
            noise = torch.rand(batch, NOISE_BLOCK, model.dist.noise_per_sample,  # the CPU's
                               generator=generator,
                               device=generator.device if generator else device).to(device)
        n = min(chunk, length - done, NOISE_BLOCK - offset)
        start = time.monotonic()
        x = loop.advance(x, noise[:, offset:offset + n], out[:, done:done + n],
                         None if params is None else params[:, :, done:done + n], temperature)
        done += n
        elapsed = max(time.monotonic() - start, 1e-6)
        chunk = max(1, min(NOISE_BLOCK, int(n * 0.25 / elapsed)))
        if on_samples is not None and (time.monotonic() - tick > 0.25 or done == length):
            on_samples(out[:, reported:done])
            reported, tick = done, time.monotonic()
    return out
