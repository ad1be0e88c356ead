"""The Python API: load a trained model, generate audio as arrays, write it.

    import wavenet
    model = wavenet.load("outputs/demo")                 # a run folder or a checkpoint file
    audio = model.generate(seconds=2, n=2, temperature=0.9, seed=0)   # (2, 32000) float32
    wavenet.write_wav("out.wav", audio[0], model.sample_rate)

Training from Python takes the job dataclasses the command line fills (`wavenet.TrainJob`, or
`wavenet.compose("train", [overrides])` for the same presets) and
`wavenet.train.train(job, run_dir)`.
The `sample` program is this module plus files and a progress bar.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from wavenet import checkpoint, checks
from wavenet.audio import AudioError, load_for_training
from wavenet.config import TrainJob, check_sampling
from wavenet.errors import UserError
from wavenet.features import log_mel
from wavenet.files import replacing
from wavenet.generate import generate, resolve_method, resolve_precision
from wavenet.model import WaveNet
from wavenet.quantize import DEFAULT_PRECISION
from wavenet.runtime import resolve_device

AudioLike = str | Path | np.ndarray | torch.Tensor


def real_array(value, key: str) -> np.ndarray:
    """An array-like of real numbers (numpy, torch, nested lists) as float32; anything else
    (text, booleans, complex numbers, objects) is a UserError naming `key`."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise UserError(f"{key} must be an array of numbers ({err})") from None
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise UserError(f"{key} must be an array of real numbers, not {array.dtype}")
    with np.errstate(over="ignore"):
        array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise UserError(f"{key} holds NaN or infinite values (or values beyond float32)")
    return array


class Model:
    """A trained WaveNet with what generation needs to know of its training.

    Attributes:
        net: the WaveNet module (eval mode).
        job: the TrainJob it was trained with.
        step: the training step of its checkpoint.
        speakers: voice names, in id order (multi-speaker models), else [].
        path: the checkpoint file it was loaded from.
        weights: "ema" or "raw".
    """

    def __init__(self, net: WaveNet, ckpt: dict, path: Path, weights: str):
        self.net, self.path, self.weights = net, path, weights
        self.job: TrainJob = checkpoint.job_from_dict(ckpt["config"])
        self.step: int = ckpt["step"]
        self.speakers: list[str] = list(ckpt.get("speakers", []))

    @classmethod
    def load(cls, path: str | Path, use_ema: bool = True, device: str = "auto") -> Model:
        """A checkpoint file, or a run folder (its best.pt, else its newest checkpoint)."""
        if not isinstance(path, (str, Path)):
            raise UserError(f"load takes a checkpoint file or run folder path, not "
                            f"{type(path).__name__}")
        checks.device("device", device)
        resolved = checkpoint.resolve(path)
        net, ckpt = checkpoint.load_model(resolved, use_ema, resolve_device(device))
        weights = "ema" if use_ema and ckpt.get("ema") is not None else "raw"
        return cls(net, ckpt, resolved, weights)

    def __repr__(self) -> str:
        kind = "vocoder" if self.is_vocoder else "WaveNet"
        return (f"<wavenet {kind} from {self.path} (step {self.step}, {self.weights} weights): "
                f"{self.net.num_parameters():,} parameters, receptive field "
                f"{self.receptive_field}, {self.sample_rate} Hz"
                + (f", speakers {self.speakers}" if self.speakers else "") + ">")

    @property
    def sample_rate(self) -> int:
        return self.job.data.audio.sample_rate

    @property
    def receptive_field(self) -> int:
        return self.net.receptive_field

    @property
    def is_vocoder(self) -> bool:
        return self.net.cfg.mel is not None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    # ------------------------------------------------------------------------------ inputs
    def speaker_id(self, speaker: str | int | None, key: str = "speaker") -> int | None:
        """A voice by name (or id) -> its id; None for a model without speakers."""
        if not self.net.cfg.n_speakers:
            if speaker is not None:
                raise UserError(f"{key}={speaker}: this checkpoint has no speakers")
            return None
        if isinstance(speaker, (bool, np.bool_)) or not isinstance(speaker, (str, numbers.Integral,
                                                                          type(None))):
            raise UserError(f"{key}={speaker!r}: give a speaker's name or id")
        if isinstance(speaker, numbers.Integral):
            speaker = int(speaker)
            if 0 <= speaker < len(self.speakers):
                return speaker
            raise UserError(f"{key}={speaker}: ids run 0..{len(self.speakers) - 1}; "
                            f"known speakers: {', '.join(self.speakers)}")
        if speaker is None or speaker not in self.speakers:
            what = (f"pick one with {key}=<name>" if speaker is None
                    else f"unknown speaker {speaker!r}")
            raise UserError(f"{what}; known speakers: {', '.join(self.speakers)}")
        return self.speakers.index(speaker)

    def load_audio(self, path: str | Path, key: str = "prime") -> np.ndarray:
        """An audio file preprocessed as the training audio was (rate, trimming, level): (T,)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise AudioError(f"{key}={path}: no such file")
        return load_for_training(path, self.job.data.audio)

    def log_mel(self, audio: np.ndarray | torch.Tensor) -> np.ndarray:
        """The features this vocoder is driven by: (T,) audio at `sample_rate` -> (n_mels, F)
        natural-log mel magnitudes, F = T // hop (frame j drives samples j·hop … (j+1)·hop-1)."""
        mel = self._mel_config()
        audio = real_array(audio, "audio")
        if audio.ndim != 1:
            raise UserError(f"audio has shape {audio.shape}; expected one stream (T,)")
        frames = len(audio) // mel.hop_length
        if frames < 1:
            raise UserError(f"audio of {len(audio)} samples is shorter than one mel frame "
                            f"({mel.hop_length} samples)")
        return log_mel(audio, self.sample_rate, mel)[:, :frames].numpy()

    def load_mel(self, source: str | Path, key: str = "mel"
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Features to vocode from a file: an audio file (copy synthesis) or a .npy array of
        shape (frames, n_mels). Returns ((n_mels, F) features, the source audio or None)."""
        mel = self._mel_config()
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"{key}={path}: no such file; give an audio file (copy synthesis) "
                            "or a .npy array of shape (frames, n_mels)")
        if path.suffix.lower() != ".npy":
            audio = self.load_audio(path, key)
            if len(audio) < mel.hop_length:
                raise UserError(f"{key}={path} is shorter than one mel frame")
            feats = self.log_mel(audio)
            return feats, audio[: feats.shape[1] * mel.hop_length]
        try:
            feats = np.load(path)
        except (OSError, ValueError) as err:
            raise UserError(f"{key}={path}: not a readable .npy file ({err})") from err
        feats = real_array(feats, f"{key}={path}")
        if feats.ndim != 2 or feats.shape[1] != mel.n_mels or not len(feats):
            raise UserError(f"{key}={path} has shape {feats.shape}; expected {self._mel_shape()}")
        return np.ascontiguousarray(feats.T), None

    def _mel_config(self):
        if self.net.cfg.mel is None:
            raise UserError("this checkpoint is not a vocoder: it takes no mel features")
        return self.net.cfg.mel

    def _mel_shape(self) -> str:
        mel = self._mel_config()
        return (f"(frames, {mel.n_mels}) natural-log mel magnitudes, hop {mel.hop_length} at "
                f"{self.sample_rate} Hz")

    # -------------------------------------------------------------------------- generation
    def generate(self, seconds: float = 2.0, n: int = 1, *, prime: AudioLike | None = None,
                 prime_seconds: float | None = None, speaker: str | int | None = None,
                 mel: AudioLike | None = None, temperature: float = 1.0, seed: int = 0,
                 method: str = "fast", threads: int | None = None,
                 precision: str = DEFAULT_PRECISION,
                 on_samples: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """Generate `n` streams of new audio.

        Args:
            seconds: new audio per stream (vocoders: set by the mel frames instead).
            n: streams, generated together as one batch (vocoders: from `mel` if it is 3-D).
            prime: audio to continue: a file (preprocessed like the training audio) or an array
                (T,) or (n, T) in [-1, 1] at `sample_rate`; None starts from silence.
            prime_seconds: keep only the last this-many seconds of the prime.
            speaker: a voice name or id (multi-speaker models).
            mel: vocoders: an audio file (copy synthesis), a .npy file (frames, n_mels), or an
                array (n_mels, F) or (n, n_mels, F) of natural-log mel magnitudes (see
                `log_mel`).
            temperature: 1 samples the model as trained, below 1 is more conservative, 0 is
                greedy.
            seed: the same seed gives the same audio, whichever the method.
            method: "fast", "incremental" or "naive" (see `wavenet.generate.generate`).
            threads: CPU threads of the fast path (default: torch's).
            precision: the step's weights, "fp32", "bf16" or "int8" (`wavenet.quantize`);
                the fast path reads a half or a quarter of fp32's bytes per sample.
            on_samples: called about 4 times a second with the new audio (n, m) float32 made
                since the last call (for streaming or progress).
        Returns:
            (n, T) float32 audio in [-1, 1], the new samples only (the prime is not repeated).
        """
        check_sampling(n, seconds, temperature, seed, prime_seconds, method, threads,
                       precision=precision)
        if on_samples is not None and not callable(on_samples):
            raise UserError(f"on_samples must be a function of the new audio, not "
                            f"{type(on_samples).__name__}")
        net, device = self.net, self.device
        feats = self._mel_batch(mel, n)
        if feats is not None:
            if prime is not None:
                raise UserError("a prime and mel features don't go together: a vocoder "
                                "follows its mel")
            n = feats.shape[0]
        history = None if prime is None else self.prime_audio(prime, prime_seconds)
        context = self._prime_values(history, n)
        speaker_id = self.speaker_id(speaker)
        speakers = (None if speaker_id is None
                    else torch.full((n,), speaker_id, dtype=torch.long, device=device))
        length = self.samples(seconds) if feats is None else None  # a vocoder: its frames
        generator = torch.Generator(device=device).manual_seed(seed)
        # Values become audio in order, a stretch at a time (a whitening model's de-emphasis
        # and linear prediction carry over from one stretch to the next).
        decode = net.audio_decoder(feats, n, None if history is None
                                   else np.broadcast_to(history.numpy(), (n, history.shape[-1])))
        made: list[np.ndarray] = []

        def callback(values: torch.Tensor) -> None:
            made.append(decode(values))
            if on_samples is not None:
                on_samples(made[-1])

        values = generate(net, length, context, n, temperature, generator, on_samples=callback,
                          speaker=speakers, mel=feats, method=method, threads=threads,
                          precision=precision)
        done = sum(m.shape[1] for m in made)
        if done < values.shape[1]:
            made.append(decode(values[:, done:]))
        return np.concatenate(made, axis=1)

    def samples(self, seconds: float) -> int:
        """How many samples `seconds` of audio is at this model's rate (at least one)."""
        length = int(round(seconds * self.sample_rate))
        if length < 1:
            raise UserError(f"seconds={seconds:g} is less than one sample at "
                            f"{self.sample_rate} Hz")
        return length

    def method(self, method: str = "fast") -> str:
        """What a method runs as here: "native" (the compiled step), "incremental" or "naive"."""
        return resolve_method(self.net, method)

    def precision(self, method: str = "fast", precision: str = DEFAULT_PRECISION) -> str:
        """The weight precision a method runs with here (the compiled step falls back from a
        format this CPU lacks the instructions for)."""
        return resolve_precision(self.net, method, precision)

    def prime_audio(self, prime: AudioLike, seconds: float | None = None) -> torch.Tensor:
        """A prime as the model continues it: a file preprocessed like the training audio, or
        an array (T,) or (B, T) in [-1, 1]; only its last `seconds` if given. -> (T,) or (B, T)
        float32."""
        if isinstance(prime, (str, Path)):
            audio = torch.from_numpy(self.load_audio(prime, "prime"))
        else:
            audio = torch.from_numpy(real_array(prime, "prime"))
            if audio.ndim not in (1, 2):
                raise UserError(f"prime has shape {tuple(audio.shape)}; expected (T,) or (B, T) "
                                "audio in [-1, 1]")
        if seconds is not None:
            audio = audio[..., -max(1, int(seconds * self.sample_rate)):]
        if audio.shape[-1] < 1:
            raise AudioError(f"prime={prime if isinstance(prime, (str, Path)) else 'array'}: "
                             "it holds no samples")
        return audio.clamp(-1, 1)

    def _prime_values(self, audio: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """The prime's audio (T,) or (1 or n, T) as model values (n, P), or None."""
        if audio is None:
            return None
        if audio.ndim == 2 and audio.shape[0] not in (1, n):
            raise UserError(f"prime has {audio.shape[0]} rows for {n} streams: give one row, "
                            f"or one per stream")
        values = self.net.encode_audio(audio if audio.ndim == 2 else audio[None]).to(self.device)
        return values.expand(n, -1).contiguous() if values.ndim == 1 or values.shape[0] == 1 \
            else values

    def _mel_batch(self, mel: AudioLike | None, n: int) -> torch.Tensor | None:
        """Features (n, n_mels, F) on the model's device, or None for a non-vocoder."""
        if not self.is_vocoder:
            if mel is not None:
                raise UserError("this checkpoint is not a vocoder: it takes no mel features")
            return None
        if mel is None:
            raise UserError("this checkpoint is a vocoder: give mel features (an audio file to "
                            "re-synthesize, a .npy file or an array)")
        if isinstance(mel, (str, Path)):
            feats = self.load_mel(mel)[0]
        else:
            feats = real_array(mel, "mel")
            n_mels = self._mel_config().n_mels
            if feats.ndim not in (2, 3) or feats.shape[-2] != n_mels or feats.shape[-1] < 1 \
                    or feats.shape[0] < 1:
                raise UserError(f"mel has shape {feats.shape}; expected (n_mels={n_mels}, F) "
                                f"or (B, {n_mels}, F) natural-log mel magnitudes")
        feats = torch.from_numpy(feats).to(self.device)
        return feats[None].expand(n, -1, -1).contiguous() if feats.ndim == 2 else feats


def load(path: str | Path, use_ema: bool = True, device: str = "auto") -> Model:
    """Load a trained model: a checkpoint file, or a run folder (its best.pt, else its newest
    step checkpoint). EMA weights are used when the checkpoint has them and `use_ema`."""
    return Model.load(path, use_ema, device)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono audio (T,) in [-1, 1] as a 16-bit PCM WAV (folders are created); a file
    already at `path` is replaced only once the new one is complete."""
    import soundfile as sf

    audio = real_array(audio, "audio")
    if audio.ndim != 1:
        raise UserError(f"write_wav takes one stream (T,), not shape {audio.shape}: write "
                        "each row of a batch to its own file")
    checks.integer("sample_rate", sample_rate, 1, 768000)
    path = Path(path).expanduser()
    if path.suffix.lower() != ".wav":
        raise UserError(f"write_wav writes .wav files; {path} has another suffix")
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), int(sample_rate), subtype="PCM_16",
                 format="WAV")
    return path
