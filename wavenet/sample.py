"""The sample job: generate audio from a checkpoint into WAV files and spectrogram pictures."""

from __future__ import annotations

import logging
import time
import wave
from pathlib import Path

import numpy as np
import torch

from wavenet import checkpoint
from wavenet.audio import AudioConfig, AudioError, load_for_training
from wavenet.config import SampleJob
from wavenet.errors import UserError
from wavenet.features import log_mel, log_mel_distance_db
from wavenet.generate import METHODS, generate, resolve_method
from wavenet.model import WaveNet
from wavenet.plots import save_spectrogram
from wavenet.runtime import progress_bar, resolve_device, set_threads

log = logging.getLogger(__name__)


def load_prime(path: str, audio_cfg: AudioConfig, seconds: float | None) -> np.ndarray:
    """The prime as the model saw its training audio: resampled, normalized. Returns (P,)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AudioError(f"prime={path}: no such file")
    audio = load_for_training(path, audio_cfg, min_keep=audio_cfg.sample_rate // 10)
    if seconds is not None:
        audio = audio[-int(seconds * audio_cfg.sample_rate):]
    if audio.size < 1:
        raise AudioError(f"prime={path}: the file holds no samples")
    return audio


class StreamingWavs:
    """16-bit mono WAVs that grow as samples arrive.

    The standard library's wave writer rewrites the header's sizes after every chunk, so each
    file is a valid WAV of everything made so far: it can be played while generation runs, and
    an interrupted or killed run keeps what it made.
    """

    def __init__(self, paths: list[Path], sample_rate: int):
        self.paths, self.sample_rate = paths, sample_rate
        self.files: list[wave.Wave_write] = []

    def __enter__(self) -> StreamingWavs:
        for path in self.paths:
            w = wave.open(str(path), "wb")
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            self.files.append(w)
        return self

    def write(self, audio: np.ndarray) -> None:
        """audio: (streams, n) float in [-1, 1]."""
        pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
        for w, stream in zip(self.files, pcm, strict=True):
            w.writeframes(stream.tobytes())

    def __exit__(self, *exc) -> None:
        for w in self.files:
            w.close()


def speaker_id(job: SampleJob, model: WaveNet, speakers: list[str]) -> int | None:
    if not model.cfg.n_speakers:
        if job.speaker is not None:
            raise UserError(f"speaker={job.speaker}: this checkpoint has no speakers")
        return None
    if job.speaker is None or job.speaker not in speakers:
        what = "pick one with speaker=<name>" if job.speaker is None else \
            f"unknown speaker {job.speaker!r}"
        raise UserError(f"{what}; known speakers: {', '.join(speakers)}")
    return speakers.index(job.speaker)


def load_mel(job: SampleJob, model: WaveNet, audio_cfg: AudioConfig):
    """The log-mel frames (n_mels, F) to vocode, and the source audio when mel_from is audio."""
    mel_cfg = model.cfg.mel
    if mel_cfg is None:
        if job.mel_from is not None:
            raise UserError(f"mel_from={job.mel_from}: this checkpoint is not a vocoder")
        return None, None
    path = Path(job.mel_from).expanduser() if job.mel_from else None
    if path is None or not path.is_file():
        missing = "" if path is None else f" ({path}: no such file)"
        raise UserError("this checkpoint is a vocoder: give mel_from=speech.wav (copy synthesis) "
                        f"or mel_from=feats.npy{missing}")
    expected = (f"(frames, {mel_cfg.n_mels}) natural-log mel magnitudes, hop {mel_cfg.hop_length} "
                f"at {audio_cfg.sample_rate} Hz")
    if path.suffix == ".npy":
        try:
            feats = np.load(path)
        except (OSError, ValueError) as err:
            raise UserError(f"mel_from={path}: not a readable .npy file ({err})") from err
        if feats.ndim != 2 or feats.shape[1] != mel_cfg.n_mels or not len(feats):
            raise UserError(f"mel_from={path} has shape {feats.shape}; expected {expected}")
        return torch.from_numpy(np.ascontiguousarray(feats.T, dtype=np.float32)), None
    audio = load_for_training(path, audio_cfg, min_keep=mel_cfg.hop_length)
    audio = audio[: len(audio) // mel_cfg.hop_length * mel_cfg.hop_length]
    if not len(audio):
        raise UserError(f"mel_from={path} is shorter than one mel frame")
    frames = log_mel(audio, audio_cfg.sample_rate, mel_cfg)[:, : len(audio) // mel_cfg.hop_length]
    return frames, audio


def sample(job: SampleJob, out_dir: Path) -> list[Path]:
    """Generate `job.n_samples` streams as one batch; returns the WAV paths written."""
    set_threads(job.threads)
    device = resolve_device(job.device)
    if job.method not in METHODS:
        raise UserError(f"method={job.method!r}: use one of {', '.join(METHODS)}")
    if job.n_samples < 1 or job.seconds <= 0:
        raise UserError("n_samples must be at least 1 and seconds positive")
    model, ckpt = checkpoint.load_model(job.checkpoint, job.use_ema, device)
    trained = checkpoint.job_from_dict(ckpt["config"])
    rate = trained.data.audio.sample_rate
    dist = model.dist
    speaker = speaker_id(job, model, ckpt.get("speakers", []))
    mel, source = load_mel(job, model, trained.data.audio)
    if mel is not None and job.prime is not None:
        raise UserError("prime= and mel_from= don't go together: a vocoder follows its mel")
    out_dir = Path(job.out_dir) if job.out_dir else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    context, prime = None, None
    if job.prime is not None:
        prime = load_prime(job.prime, trained.data.audio, job.prime_seconds)
        context = dist.encode(torch.from_numpy(prime)).to(device)[None].repeat(job.n_samples, 1)
    speakers = (None if speaker is None else
                torch.full((job.n_samples,), speaker, dtype=torch.long, device=device))
    mels = None if mel is None else mel[None].repeat(job.n_samples, 1, 1).to(device)
    length = (mel.shape[1] * model.cfg.mel.hop_length if mel is not None
              else int(round(job.seconds * rate)))
    generator = torch.Generator(device=device).manual_seed(job.seed)
    print(f"generating {job.n_samples} x {length / rate:g} s at {rate} Hz from "
          f"{checkpoint.resolve(job.checkpoint)} (step {ckpt['step']}, "
          f"{'EMA' if job.use_ema and ckpt.get('ema') is not None else 'raw'} weights, "
          f"{resolve_method(model, job.method)} path, temperature {job.temperature:g}, "
          f"seed {job.seed}"
          + (f", speaker {job.speaker}" if speaker is not None else "")
          + (f", mel from {job.mel_from}" if mel is not None else "") + ")")
    paths = [out_dir / f"sample_{i:02d}.wav" for i in range(job.n_samples)]
    start = time.perf_counter()
    with progress_bar(total=length, unit="sample", unit_scale=True, disable=not job.progress,
                      desc="generating") as bar, StreamingWavs(paths, rate) as wavs:
        if prime is not None and job.include_prime:
            wavs.write(np.repeat(prime[None], job.n_samples, axis=0))

        made = 0  # per stream; bar.n stays 0 when the bar is disabled

        def on_samples(values: torch.Tensor) -> None:
            nonlocal made
            wavs.write(dist.decode(values.cpu()).numpy())
            made += values.shape[1]
            bar.update(values.shape[1])
            per_stream = made / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(streams=job.n_samples, rtf=f"{rate / per_stream:.2f}")

        values = generate(model, length, context, job.n_samples, job.temperature, generator,
                          on_samples=on_samples, speaker=speakers, mel=mels, method=job.method)
    elapsed = time.perf_counter() - start
    audio = dist.decode(values.cpu()).numpy()
    for wav, stream in zip(paths, audio, strict=True):
        if prime is not None and job.include_prime:
            stream = np.concatenate([prime, stream])
        save_spectrogram(wav.with_suffix(".png"), stream, rate,
                         title=f"{wav.name} (temperature {job.temperature:g}, seed {job.seed})")
    print(f"wrote {len(paths)} WAV + PNG to {out_dir} "
          f"({job.n_samples * length / elapsed:,.0f} samples/s in all, "
          f"real-time factor {elapsed * rate / length:.2f} per batch)")
    if source is not None:
        distance = log_mel_distance_db(torch.from_numpy(source), torch.from_numpy(audio[0]),
                                       rate, model.cfg.mel)
        print(f"copy synthesis: log-mel distance to {job.mel_from}: {distance:.2f} dB")
    return paths
