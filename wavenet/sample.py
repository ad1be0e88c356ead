"""The sample job: generate audio from a checkpoint into WAV files and spectrogram pictures."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from wavenet import checkpoint
from wavenet.audio import AudioError, load_for_training, mu_law_decode, mu_law_encode, write_audio
from wavenet.config import SampleJob
from wavenet.errors import UserError
from wavenet.generate import generate, generate_naive
from wavenet.plots import save_spectrogram
from wavenet.runtime import progress_bar, resolve_device, set_threads

log = logging.getLogger(__name__)


def load_prime(path: str, audio_cfg, seconds: float | None) -> np.ndarray:
    """The prime as the model saw its training audio: resampled, normalized. Returns (P,)."""
    if not Path(path).is_file():
        raise AudioError(f"prime={path}: no such file")
    audio = load_for_training(path, audio_cfg, min_keep=audio_cfg.sample_rate // 10)
    if seconds is not None:
        audio = audio[-int(seconds * audio_cfg.sample_rate):]
    if audio.size < 1:
        raise AudioError(f"prime={path}: the file holds no samples")
    return audio


def sample(job: SampleJob, out_dir: Path) -> list[Path]:
    """Generate `job.n_samples` streams as one batch; returns the WAV paths written."""
    set_threads(job.threads)
    device = resolve_device(job.device)
    if job.method not in ("fast", "naive"):
        raise UserError(f"method={job.method!r}: use fast or naive")
    if job.n_samples < 1 or job.seconds <= 0:
        raise UserError("n_samples must be at least 1 and seconds positive")
    model, ckpt = checkpoint.load_model(job.checkpoint, job.use_ema, device)
    trained = checkpoint.job_from_dict(ckpt["config"])
    rate = trained.data.audio.sample_rate
    q = trained.model.quantization_channels
    out_dir = Path(job.out_dir) if job.out_dir else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    context, prime = None, None
    if job.prime is not None:
        prime = load_prime(job.prime, trained.data.audio, job.prime_seconds)
        context = torch.from_numpy(mu_law_encode(prime, q)).to(device)[None].repeat(
            job.n_samples, 1)
    length = int(round(job.seconds * rate))
    generator = torch.Generator(device=device).manual_seed(job.seed)
    print(f"generating {job.n_samples} x {job.seconds:g} s at {rate} Hz from "
          f"{checkpoint.resolve(job.checkpoint)} (step {ckpt['step']}, "
          f"{'EMA' if job.use_ema and ckpt.get('ema') is not None else 'raw'} weights, "
          f"{job.method} path, temperature {job.temperature:g}, seed {job.seed})")
    start = time.perf_counter()
    with progress_bar(total=length, unit="sample", unit_scale=True, disable=not job.progress,
                      desc="generating") as bar:
        made = 0

        def progress(n: int) -> None:
            nonlocal made
            made += n
            bar.update(n)
            per_stream = made / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(streams=job.n_samples, rtf=f"{rate / per_stream:.2f}")

        method = generate if job.method == "fast" else generate_naive
        classes = method(model, length, context, job.n_samples, job.temperature, generator,
                         on_progress=progress)
    elapsed = time.perf_counter() - start
    audio = mu_law_decode(classes.cpu(), q).numpy()
    paths = []
    for i, stream in enumerate(audio):
        if prime is not None and job.include_prime:
            stream = np.concatenate([prime, stream])
        wav = out_dir / f"sample_{i:02d}.wav"
        write_audio(wav, stream, rate)
        save_spectrogram(wav.with_suffix(".png"), stream, rate,
                         title=f"{wav.name} (temperature {job.temperature:g}, seed {job.seed})")
        paths.append(wav)
    print(f"wrote {len(paths)} WAV + PNG to {out_dir} "
          f"({job.n_samples * length / elapsed:,.0f} samples/s in all, "
          f"real-time factor {elapsed / job.seconds:.2f} per batch)")
    return paths
