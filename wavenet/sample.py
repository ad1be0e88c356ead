"""The sample job: generate audio from a checkpoint into WAV files and spectrogram pictures."""

from __future__ import annotations

import logging
import time
import wave
from pathlib import Path

import numpy as np
import torch

from wavenet import checks
from wavenet.api import Model
from wavenet.audio import AudioError
from wavenet.config import SampleJob
from wavenet.errors import UserError
from wavenet.features import log_mel_distance_db
from wavenet.plots import save_spectrogram
from wavenet.runtime import progress_bar, set_threads
from wavenet.vocode import vocode_folder

log = logging.getLogger(__name__)


class StreamingWavs:
    """16-bit mono WAVs that grow as samples arrive.

    The standard library's wave writer rewrites the header's sizes after every chunk, so each
    file is a valid WAV of everything made so far: it can be played while generation runs, and
    an interrupted or killed run keeps what it made.
    """

    def __init__(self, paths: list[Path], sample_rate: int):
        self.paths, self.sample_rate = paths, sample_rate
        self.files: list = []  # the open files, and their wave writers
        self.writers: list[wave.Wave_write] = []

    def __enter__(self) -> StreamingWavs:
        try:
            for path in self.paths:
                f = open(path, "wb")  # first, so that a failure leaves no half-made writer
                self.files.append(f)
                w = wave.open(f, "wb")
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(self.sample_rate)
                self.writers.append(w)
        except OSError:
            self.__exit__()
            for path in self.paths[:len(self.files)]:  # nothing was written to them yet
                path.unlink(missing_ok=True)
            raise
        return self

    def write(self, audio: np.ndarray) -> None:
        """audio: (streams, n) float in [-1, 1]."""
        pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
        for w, stream in zip(self.writers, pcm, strict=True):
            w.writeframes(stream.tobytes())

    def __exit__(self, *exc) -> None:
        for w in self.writers:
            w.close()  # rewrites the header; leaves the file it did not open to us
        for f in self.files:
            f.close()


def _check_open_files(streams: int) -> None:
    """One WAV stays open per stream: more than the process may open fails half-way."""
    try:
        import resource
    except ImportError:  # not a Unix
        return
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit != resource.RLIM_INFINITY and streams > limit - 64:
        raise UserError(f"n_samples={streams} needs as many files open at once, and this "
                        f"process may open {limit}: lower n_samples, or raise the limit "
                        "(ulimit -n)")


def sample(job: SampleJob, out_dir: Path) -> list[Path]:
    """Generate `job.n_samples` streams as one batch; returns the WAV paths written."""
    checks.validate(job)
    set_threads(job.threads)
    folder = job.mel_from is not None and Path(job.mel_from).is_dir()
    for key in ("prime", "mel_from"):  # before the checkpoint is even read
        path = getattr(job, key)
        if path is not None and not Path(path).is_file() and not (key == "mel_from" and folder):
            raise AudioError(f"{key}={path}: no such file")
    model = Model.load(job.checkpoint, job.use_ema, job.device)
    rate = model.sample_rate
    model.speaker_id(job.speaker)
    if model.is_vocoder and job.mel_from is None:
        raise UserError("this checkpoint is a vocoder: give mel_from=speech.wav (copy "
                        "synthesis), mel_from=feats.npy (frames, n_mels) or mel_from=<folder>")
    if folder:
        if not model.is_vocoder:
            raise UserError(f"mel_from={job.mel_from}: this checkpoint is not a vocoder")
        if job.prime is not None:
            raise UserError("prime= and mel_from= don't go together: a vocoder follows its mel")
        out = Path(job.out_dir) if job.out_dir else out_dir
        return vocode_folder(model, Path(job.mel_from), out, job.batch_size, job.temperature,
                             job.seed, job.method, job.threads, job.speaker, job.progress,
                             job.precision)
    mel, source = (model.load_mel(job.mel_from, "mel_from") if job.mel_from is not None
                   else (None, None))
    if mel is not None and job.prime is not None:
        raise UserError("prime= and mel_from= don't go together: a vocoder follows its mel")
    prime = (None if job.prime is None
             else model.prime_audio(job.prime, job.prime_seconds).numpy())
    _check_open_files(job.n_samples)
    out_dir = Path(job.out_dir) if job.out_dir else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    length = (mel.shape[1] * model.net.cfg.mel.hop_length if mel is not None
              else model.samples(job.seconds))
    print(f"generating {job.n_samples} x {length / rate:g} s at {rate} Hz from {model.path} "
          f"(step {model.step}, {'EMA' if model.weights == 'ema' else 'raw'} weights, "
          f"{model.method(job.method)} path, {model.precision(job.method, job.precision)} "
          f"weights, temperature {job.temperature:g}, seed {job.seed}"
          + (f", speaker {job.speaker}" if job.speaker is not None else "")
          + (f", mel from {job.mel_from}" if mel is not None else "") + ")")
    paths = [out_dir / f"sample_{i:02d}.wav" for i in range(job.n_samples)]
    start = time.perf_counter()
    with progress_bar(total=length, unit="sample", unit_scale=True, disable=not job.progress,
                      desc="generating") as bar, StreamingWavs(paths, rate) as wavs:
        if prime is not None and job.include_prime:
            wavs.write(np.repeat(prime[None], job.n_samples, axis=0))

        made = 0  # per stream; bar.n stays 0 when the bar is disabled

        def on_samples(audio: np.ndarray) -> None:
            nonlocal made
            wavs.write(audio)
            made += audio.shape[1]
            bar.update(audio.shape[1])
            per_stream = made / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(streams=job.n_samples, rtf=f"{rate / per_stream:.2f}")

        audio = model.generate(job.seconds, job.n_samples, prime=prime, speaker=job.speaker,
                               mel=mel, temperature=job.temperature, seed=job.seed,
                               method=job.method, threads=job.threads,
                               precision=job.precision, on_samples=on_samples)
    elapsed = time.perf_counter() - start
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
                                       rate, model.net.cfg.mel)
        print(f"copy synthesis: log-mel distance to {job.mel_from}: {distance:.2f} dB")
    return paths
