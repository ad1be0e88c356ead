"""The WaveNet: input layer, a stack of gated dilated residual layers, an output head, and
optional speaker (global) and log-mel (local) conditioning."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wavenet import checks
from wavenet.distributions import make_distribution
from wavenet.errors import UserError
from wavenet.features import MelConfig, frame_window, frames_for
from wavenet.layers import ResidualBlock, residual_loop
from wavenet.whitening import Colouring, Filter, MelPredictor, PastPredictor, whiten

INPUTS = ("onehot", "scalar", "both")


@dataclass
class WaveNetConfig:
    """Architecture, output distribution and conditioning.

    Attributes:
        layers_per_cycle: layers in one cycle of dilations 1, 2, …, 2**(layers_per_cycle-1).
        cycles: how many times the dilation cycle repeats.
        kernel_size: taps of each dilated convolution (2 as in the paper; 3 allowed).
        residual_channels: width of the residual stream (and of the input layer).
        gate_channels: width after the tanh·sigmoid gate (the dilated conv outputs twice this).
        skip_channels: width of the skip connections and the output head.
        output: "mulaw" (softmax over quantization_channels mu-law classes, 8-bit by default)
            or "mol" (discretized mixture of logistics over 16-bit linear PCM).
        quantization_channels: mu-law classes (256 = 8 bits); "mulaw" only.
        input: how a "mulaw" model reads its past samples: "onehot" (a learned vector per
            class, the paper's one-hot input), "scalar" (the class's position in [-1, 1], the
            mu-law amplitude, times a learned vector: neighbouring classes start alike) or
            "both" (their sum). "mol" models read the amplitude.
        mixtures: logistic components; "mol" only.
        log_scale_min: floor of each logistic's log-scale; "mol" only.
        n_speakers: speakers of global conditioning; 0 is none. Training fills it in from the
            data when data.speakers is set.
        speaker_channels: size of the speaker embedding.
        mel: log-mel features for local conditioning (a vocoder); None is unconditioned.
        upsample_scales: the upsampler's stages; their product must equal mel.hop_length.
        pre_emphasis: β of the filter 1 − β·z^-1 applied to the audio before it is modelled
            (generation de-emphasizes); 0 is none. See `wavenet.whitening`.
        lpc_order: vocoders: model the residual of a linear predictor of this order computed
            from each mel frame (as LPCNet does), instead of the audio itself; 0 is none.
        excitation_rms: with lpc_order: scale each frame's residual to this RMS, by the level
            the predictor expects from the frame; 0 leaves it as it is.
        adaptive_lpc_order: model the residual of a linear predictor of this order fitted to
            the audio's own recent past (backward-adaptive, `whitening.PastPredictor`), which
            needs no conditioning; 0 is none. Not with lpc_order.
        adaptive_lpc_window: samples of past audio the predictor is fitted to.
        adaptive_lpc_hop: samples between fits.
        adaptive_lpc_gamma: bandwidth expansion: the predictor's poles are pulled in to this
            radius, so that drawn excitation cannot ring for ever (1 leaves them).
        cond_layers: vocoders: convolutions (3 frames wide, each with a residual connection)
            that turn the log-mel frames into features before upsampling: a frame of context
            on each side per layer; 0 upsamples the frames as they are.
        cond_channels: width of those features, which replace the mel bands as the
            upsampler's input.
    """

    layers_per_cycle: int = 10
    cycles: int = 3
    kernel_size: int = 2
    residual_channels: int = 64
    gate_channels: int = 128
    skip_channels: int = 256
    output: str = "mulaw"
    quantization_channels: int = 256
    input: str = "onehot"
    mixtures: int = 10
    log_scale_min: float = -7.0
    n_speakers: int = 0
    speaker_channels: int = 16
    mel: MelConfig | None = None
    upsample_scales: list[int] = field(default_factory=lambda: [4, 4, 4, 4])
    pre_emphasis: float = 0.0
    lpc_order: int = 0
    excitation_rms: float = 0.0
    adaptive_lpc_order: int = 0
    adaptive_lpc_window: int = 512
    adaptive_lpc_hop: int = 128
    adaptive_lpc_gamma: float = 0.99
    cond_layers: int = 0
    cond_channels: int = 64

    def __post_init__(self):
        k = "model."
        checks.integer(k + "layers_per_cycle", self.layers_per_cycle, 1, 24)
        checks.integer(k + "cycles", self.cycles, 1, 100)
        for key in ("residual_channels", "gate_channels", "skip_channels", "speaker_channels"):
            checks.integer(k + key, getattr(self, key), 1, 8192)
        checks.integer(k + "mixtures", self.mixtures, 1, 1024)
        checks.number(k + "log_scale_min", self.log_scale_min, -20, 0)
        checks.integer(k + "n_speakers", self.n_speakers, 0, 1_000_000)
        if self.kernel_size not in (2, 3):
            raise UserError(f"model.kernel_size={self.kernel_size}: use 2 or 3")
        checks.integer(k + "quantization_channels", self.quantization_channels, 2, 65536)
        checks.choice(k + "input", self.input, INPUTS)
        for i, scale in enumerate(self.upsample_scales):
            checks.integer(f"{k}upsample_scales[{i}]", scale, 1, 65536)
        make_distribution(self.output, self.quantization_channels, self.mixtures,
                          self.log_scale_min)  # validates output
        if isinstance(self.mel, dict):  # rebuilt from a checkpoint's plain dict
            self.mel = MelConfig(**self.mel)
        checks.number(k + "pre_emphasis", self.pre_emphasis, 0, 1, hi_open=True)
        checks.integer(k + "lpc_order", self.lpc_order, 0, 64)
        checks.number(k + "excitation_rms", self.excitation_rms, 0, 1)
        if self.excitation_rms and not self.lpc_order:
            raise UserError(f"model.excitation_rms={self.excitation_rms:g} scales a linear "
                            "predictor's residual: set model.lpc_order too, or "
                            "model.excitation_rms=0")
        checks.integer(k + "adaptive_lpc_order", self.adaptive_lpc_order, 0, 256)
        checks.integer(k + "adaptive_lpc_window", self.adaptive_lpc_window, 2, 1 << 16)
        if self.adaptive_lpc_window <= self.adaptive_lpc_order:
            raise UserError(f"model.adaptive_lpc_window={self.adaptive_lpc_window} is no longer "
                            f"than model.adaptive_lpc_order={self.adaptive_lpc_order}: fit the "
                            "predictor to more samples than it has taps")
        checks.integer(k + "adaptive_lpc_hop", self.adaptive_lpc_hop, 1, 1 << 16)
        checks.number(k + "adaptive_lpc_gamma", self.adaptive_lpc_gamma, 0, 1, lo_open=True)
        checks.integer(k + "cond_layers", self.cond_layers, 0, 64)
        checks.integer(k + "cond_channels", self.cond_channels, 1, 8192)
        if self.lpc_order and self.mel is None:
            raise UserError(f"model.lpc_order={self.lpc_order} needs mel conditioning (a "
                            "vocoder, e.g. experiment=vocoder): set model.lpc_order=0")
        if self.adaptive_lpc_order and self.lpc_order:
            raise UserError(f"model.adaptive_lpc_order={self.adaptive_lpc_order} and "
                            f"model.lpc_order={self.lpc_order} are two predictors: set one of "
                            "them to 0")
        if self.mel is not None and math.prod(self.upsample_scales) != self.mel.hop_length:
            raise UserError(f"model.upsample_scales={list(self.upsample_scales)} multiply to "
                            f"{math.prod(self.upsample_scales)}, but model.mel.hop_length is "
                            f"{self.mel.hop_length}: make them agree")

    @property
    def dilations(self) -> list[int]:
        return [2**i for i in range(self.layers_per_cycle)] * self.cycles

    @property
    def receptive_field(self) -> int:
        """How many past samples one prediction depends on (the newest included)."""
        return (self.kernel_size - 1) * sum(self.dilations) + 1

    @property
    def mel_context_frames(self) -> int:
        """Frames of context a window of mel frames needs on each side so that the upsampler's
        edges reach none of its samples: its reach in whole frames. Stage i smooths over s_i
        steps each way at its own rate, a step being Π_{j>i} s_j samples, and its repeat can
        shift that by one more step: at most Σ_i (s_i + 1)·Π_{j>i} s_j samples. 0 without mel."""
        if self.mel is None:
            return 0
        scales = list(self.upsample_scales)
        reach = sum((s + 1) * math.prod(scales[i + 1:]) for i, s in enumerate(scales))
        return -(-reach // self.mel.hop_length) + self.cond_layers  # one per 3-frame conv

    @property
    def whitening_order(self) -> int:
        """Taps of the whitening filter W(z) (0: the audio is modelled as it is)."""
        return self.lpc_order + self.adaptive_lpc_order + (self.pre_emphasis > 0)

    @property
    def whitening_history(self) -> int:
        """Samples of audio before a stretch that its whitening filter reads: its taps, or the
        window a backward-adaptive predictor is fitted to."""
        return self.adaptive_lpc_window if self.adaptive_lpc_order else self.whitening_order

    def past_predictor(self) -> PastPredictor | None:
        """The backward-adaptive predictor (`adaptive_lpc_order`), or None."""
        if not self.adaptive_lpc_order:
            return None
        return PastPredictor(self.adaptive_lpc_order, self.adaptive_lpc_window,
                             self.adaptive_lpc_hop, self.adaptive_lpc_gamma, self.pre_emphasis)

    def distribution(self):
        return make_distribution(self.output, self.quantization_channels, self.mixtures,
                                 self.log_scale_min)


class MelEncoder(nn.Module):
    """Log-mel frames -> frame features, the input of the upsampler.

    Log-mels span [log(log_floor), ~0]; they are first mapped affinely to about [-1, 1]. With
    `layers`, a linear projection to `channels` follows, then that many 3-frame convolutions,
    each adding tanh of its output to its input: frame context and nonlinear features (voicing
    or pitch, which no linear map of the bands gives) at the frame rate, for 1/hop of the cost
    of a per-sample layer.
    The tanh bounds what each layer adds, so the conditioning cannot grow without bound.
    """

    def __init__(self, n_mels: int, log_floor: float, layers: int = 0, channels: int = 64):
        super().__init__()
        self.centre = math.log(log_floor) / 2
        self.out_channels = channels if layers else n_mels
        self.proj = nn.Conv1d(n_mels, channels, 1) if layers else None
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, 3, padding=1)
                                   for _ in range(layers))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: (B, n_mels, F) -> (B, out_channels, F)."""
        h = (mel - self.centre) / -self.centre
        if self.proj is None:
            return h
        h = self.proj(h)
        for conv in self.convs:
            h = h + torch.tanh(conv(h))
        return h


class MelUpsampler(nn.Module):
    """Frame features -> one feature vector per sample, by learned interpolation.

    Each stage repeats every step `scale` times and smooths each channel with its own
    width-(2s+1) filter, initialized to a moving average. There is no channel mixing and no
    nonlinearity: the features stay at their input scale, and mixing is left to the per-layer
    projections (a channel-mixing upsampler let the conditioning grow a hundredfold in a few
    hundred Adam steps and saturate every gate). Output length = frames · prod(scales).
    """

    def __init__(self, channels: int, scales: list[int]):
        super().__init__()
        self.scales = list(scales)
        self.stages = nn.ModuleList(
            nn.Conv1d(channels, channels, 2 * s + 1, padding=s, groups=channels, bias=False)
            for s in self.scales)
        for conv in self.stages:
            nn.init.constant_(conv.weight, 1.0 / conv.kernel_size[0])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, C, F) -> (B, C, F · prod(scales))."""
        for scale, conv in zip(self.scales, self.stages, strict=True):
            h = conv(h.repeat_interleave(scale, dim=2))
        return h


class WaveNet(nn.Module):
    """Autoregressive model of audio samples.

    `forward(x)[:, :, t]` parametrizes the distribution of sample t+1 given samples ≤ t (and
    the conditioning of sample t+1).
    """

    def __init__(self, cfg: WaveNetConfig):
        super().__init__()
        self.cfg = cfg
        self.dist = cfg.distribution()
        # Built on first use: linear prediction needs model.mel.sample_rate, which a checkpoint
        # may lack (`whitening` says so).
        self._mel_predictor: MelPredictor | None = None
        r, g = cfg.residual_channels, cfg.gate_channels
        if self.dist.continuous_input or cfg.input != "onehot":
            self.input_proj = nn.Conv1d(1, r, 1)
        if not self.dist.continuous_input and cfg.input != "scalar":
            self.embed = nn.Embedding(cfg.quantization_channels, r)
        self.layers = nn.ModuleList(
            ResidualBlock(r, g, cfg.skip_channels, cfg.kernel_size, d) for d in cfg.dilations)
        n_layers = len(self.layers)
        # Conditioning reaches every layer's filter and gate; one projection for all layers.
        if cfg.n_speakers:
            self.speaker_embed = nn.Embedding(cfg.n_speakers, cfg.speaker_channels)
            self.speaker_proj = nn.Linear(cfg.speaker_channels, n_layers * 2 * g, bias=False)
        if cfg.mel is not None:
            self.mel_encoder = MelEncoder(cfg.mel.n_mels, cfg.mel.log_floor, cfg.cond_layers,
                                          cfg.cond_channels)
            features = self.mel_encoder.out_channels
            self.upsampler = MelUpsampler(features, cfg.upsample_scales)
            self.mel_proj = nn.Conv1d(features, n_layers * 2 * g, 1, bias=False)
        self.head1 = nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1)
        self.head2 = nn.Conv1d(cfg.skip_channels, self.dist.num_params, 1)
        # Summing many skips grows their scale with depth; this keeps it fixed.
        self.skip_scale = math.sqrt(1.0 / n_layers)

    @property
    def receptive_field(self) -> int:
        return self.cfg.receptive_field

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def whitening(self, mel: torch.Tensor | None, first: int, length: int) -> Filter:
        """The whitening filter of samples first … first+length−1 of the utterance whose
        frames are `mel` (B, n_mels, F); see `wavenet.whitening`."""
        cfg = self.cfg
        if cfg.lpc_order and mel is None:
            raise UserError("this vocoder models a linear-prediction residual: give mel "
                            "features")
        if cfg.lpc_order and cfg.mel.sample_rate is None:
            raise UserError("the checkpoint's model.mel.sample_rate is not set: linear "
                            "prediction needs it")
        if self._mel_predictor is None:
            self._mel_predictor = MelPredictor(cfg.pre_emphasis, cfg.lpc_order,
                                               cfg.excitation_rms, cfg.mel)
        return self._mel_predictor.whitening(mel, first, length)

    def encode_audio(self, audio: torch.Tensor, mel: torch.Tensor | None = None,
                     mel_offset: int = 0, before: torch.Tensor | None = None) -> torch.Tensor:
        """Audio (B, T) in [-1, 1] -> model values (B, T): whitened if the model whitens,
        then encoded by the output distribution.

        mel, mel_offset: the utterance's frames and where audio[:, 0] sits on their time axis.
        before: (B, P) the audio before the stretch that the whitening filter reaches (a
            crop's "before"); None is silence.
        """
        if not self.cfg.whitening_order:
            return self.dist.encode(audio)
        return self.dist.encode(self.excitation(audio, mel, mel_offset, before)[0].clamp(-1, 1))

    def excitation(self, audio: torch.Tensor, mel: torch.Tensor | None = None,
                   mel_offset: int = 0, before: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """A whitening model's excitation of the audio, before clipping and encoding, and its
        gain: audio = gain·excitation − Σ_k w_k·(the audio k samples back).

        Args as `encode_audio`. Returns (B, T) float32 each (the gain broadcast).
        """
        p = 0 if before is None else before.shape[1]
        if p:
            audio = torch.cat([before.to(audio), audio], dim=1)
        predictor = self.cfg.past_predictor()
        filt = (predictor.whitening(audio, p) if predictor is not None
                else self.whitening(mel, mel_offset - p, audio.shape[1]))
        gain = filt.gain[:, 0].to(audio.device).expand(audio.shape[0], audio.shape[1])
        return whiten(audio, filt)[:, p:], gain[:, p:]

    def audio_decoder(self, mel: torch.Tensor | None = None, batch: int = 1,
                      history: np.ndarray | None = None):
        """A function from generated values (B, n) to audio (B, n) float32 numpy, to be fed
        the stretches of one generation in order from its first new sample (sample 0 of `mel`'s
        utterance). history: (B, P) audio before it (a prime), or None for silence."""
        def decode(values: torch.Tensor) -> np.ndarray:
            return self.dist.decode(values.cpu()).numpy()

        if not self.cfg.whitening_order:
            return decode
        colour = self.colouring(mel, batch, history)
        return lambda values: colour(decode(values))

    def colouring(self, mel: torch.Tensor | None = None, batch: int = 1,
                  history: np.ndarray | None = None) -> Colouring:
        """The inverse of `excitation` for a generation (args as `audio_decoder`): excitation
        (B, n) float -> audio, a stretch at a time."""
        predictor = self.cfg.past_predictor()
        if predictor is None:
            return Colouring(lambda first, n, past: self.whitening(mel, first, n), batch,
                             self.cfg.whitening_order, history)
        # Generation fits the predictor to the audio it has made, as training did to the true
        # audio: the last window before each block.
        return Colouring(lambda first, n, past: predictor.block_filter(past), batch,
                         self.cfg.whitening_order, history, memory=predictor.window,
                         block=predictor.hop)

    def input_table(self) -> torch.Tensor:
        """(Q, R): the input vector of each class ("mulaw"); one lookup in every path."""
        if self.cfg.input == "onehot":
            return self.embed.weight
        levels = self.cfg.quantization_channels
        position = torch.linspace(-1.0, 1.0, levels, device=self.input_proj.weight.device)
        table = self.input_proj(position.to(self.input_proj.weight.dtype)[None, None])[0].t()
        return table if self.cfg.input == "scalar" else table + self.embed.weight

    def embed_input(self, x: torch.Tensor) -> torch.Tensor:
        """Model values (B, T) (classes, or amplitudes for "mol") -> (B, R, T)."""
        if self.dist.continuous_input:
            return self.input_proj(x[:, None].to(self.input_proj.weight.dtype))
        return F.embedding(x, self.input_table()).transpose(1, 2)

    def head(self, skip: torch.Tensor) -> torch.Tensor:
        """Summed skips (B, S, T) -> distribution parameters (B, P, T)."""
        return self.head2(F.relu(self.head1(F.relu(skip * self.skip_scale))))

    def conditioning(self, speaker: torch.Tensor | None = None, mel: torch.Tensor | None = None,
                     mel_offset: int = 0, length: int = 1) -> torch.Tensor | None:
        """Every layer's additive filter/gate input for `length` input columns, stacked.

        Args:
            speaker: (B,) speaker ids, if the model has speakers.
            mel, mel_offset: log-mel frames and where the first column sits (see `mel_term`),
                if the model has mel conditioning.
        Returns:
            (B, layers·2G, length, or 1 with speakers only), or None for an unconditioned model.
        """
        voice, local = self.speaker_term(speaker), self.mel_term(mel, mel_offset, length)
        if voice is None:
            return local
        return voice[:, :, None] if local is None else voice[:, :, None] + local

    def speaker_term(self, speaker: torch.Tensor | None) -> torch.Tensor | None:
        """(B,) speaker ids -> (B, layers·2G), or None for a model without speakers."""
        if not self.cfg.n_speakers:
            return None
        if speaker is None:
            raise UserError("this model is multi-speaker: give a speaker")
        return self.speaker_proj(self.speaker_embed(speaker))

    def mel_term(self, mel: torch.Tensor | None, offset: int = 0,
                 length: int = 1) -> torch.Tensor | None:
        """Each layer's mel input for `length` input columns: (B, layers·2G, length), or None
        for a model without mel. See `mel_features` for the alignment."""
        if self.cfg.mel is None:
            return None
        if mel is None:
            raise UserError("this model is a vocoder: give mel features")
        return self.mel_proj(self.mel_features(mel, offset, length))

    def mel_features(self, mel: torch.Tensor, offset: int, length: int) -> torch.Tensor:
        """Log-mel frames -> the upsampled features of `length` input columns: the one place
        that knows how frames align with samples.

        Frame j covers samples j·hop … (j+1)·hop − 1 of mel's time axis; the first input column
        sits at sample `offset` of that axis (negative: before the utterance, as generation's
        context does). Column t predicts sample offset + t + 1, so it gets that sample's
        features. Frames outside the given ones are silence. Only the frames the columns need
        are upsampled, with `cfg.mel_context_frames` more on each side so that the upsampler's
        edges reach none of them: a window gets exactly what the whole utterance would give it,
        and memory is bounded by the window, not the utterance.

        Args:
            mel: (B, n_mels, F) natural-log mel magnitudes.
        Returns:
            (B, features, length).
        """
        hop = self.cfg.mel.hop_length
        first = offset + 1  # the first sample the columns predict
        lo, hi = frames_for(first, offset + length, hop, self.cfg.mel_context_frames)
        up = self.upsampler(self.mel_encoder(frame_window(mel, lo, hi, self.cfg.mel.log_floor)))
        start = first - lo * hop
        return up[:, :, start:start + length]

    def forward(self, x: torch.Tensor, speaker: torch.Tensor | None = None,
                mel: torch.Tensor | None = None, mel_offset: int = 0,
                layer_inputs: list[torch.Tensor] | None = None,
                first_output: int = 0) -> torch.Tensor:
        """Teacher-forced pass.

        Args:
            x: (B, T) model values (see `embed_input`).
            speaker: (B,) speaker ids (multi-speaker models).
            mel: (B, n_mels, F) log-mel frames (vocoders); x[:, 0] sits at sample `mel_offset`
                of their time axis (see `mel_features`).
            layer_inputs: if given, each layer's input (B, R, T) is appended to it (used to prime
                incremental generation from a whole recording in one pass).
            first_output: return columns first_output… only; in training, the first column
                with a full receptive field, so that no work goes into unscored columns.
        Returns:
            (B, P, T - first_output) distribution parameters; column j is for sample
            first_output + j + 1.
        """
        h = self.embed_input(x)
        extra = self.conditioning(speaker, mel, mel_offset, x.shape[1])
        if layer_inputs is None:
            return self.head(residual_loop(self.layers, h, extra, first_output))
        # Layer by layer, so that each layer's input can be captured.
        per_layer = extra.chunk(len(self.layers), dim=1) if extra is not None else None
        skip = 0
        for i, layer in enumerate(self.layers):
            layer_inputs.append(h)
            h, s = layer(h, per_layer[i] if per_layer is not None else None)
            skip = skip + s
        return self.head(skip[:, :, first_output:])
