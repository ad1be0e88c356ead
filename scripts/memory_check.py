"""Peak memory of training against corpus size: `python scripts/memory_check.py [--hours 30]`.

Writes two synthetic corpora (noisy tones as 16-bit WAV) of --hours and --hours/10, trains
model=small on each for --steps steps from a fresh cache (so preprocessing is included), and
prints the peak resident memory of each run. Preprocessing streams file by file and training
reads crops with pread, so the peak should not grow with the corpus. Needs about 4 bytes of disk
per sample of audio (the WAVs plus the cache); everything goes under --work and is removed.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
RATE = 16000


def write_corpus(folder: Path, hours: float, file_seconds: float = 600.0) -> int:
    """Noisy harmonic tones, file_seconds each; returns the number of samples written."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    total, n = int(hours * 3600 * RATE), 0
    written = 0
    while written < total:
        length = min(int(file_seconds * RATE), total - written)
        t = np.arange(length) / RATE
        f0 = rng.uniform(100, 400)
        x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal(length)
        sf.write(folder / f"f{n:04d}.wav", x.astype(np.float32), RATE, subtype="PCM_16")
        written, n = written + length, n + 1
    return written


def peak_rss_mb(folder: Path, work: Path, steps: int) -> tuple[float, float]:
    """Train in a child process; return (its peak RSS in MB, seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.monotonic()
    subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "model=small",
                    f"data.root={folder}", f"data.cache_dir={work / 'cache'}",
                    f"train.max_steps={steps}", "train.eval_max_seconds=5",
                    "train.sample_every=null", "train.progress=false",
                    f"hydra.run.dir={work / ('run-' + folder.name)}"], check=True,
                   stdout=subprocess.DEVNULL)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest of any child so far, in KB on Linux.
    return max(peak, before) / 1024, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wavenet-memory-", dir=args.work))
    try:
        rows = []
        for hours in (args.hours / 10, args.hours):  # small first: ru_maxrss only grows
            folder = work / f"corpus-{hours:g}h"
            samples = write_corpus(folder, hours)
            rss, seconds = peak_rss_mb(folder, work, args.steps)
            cache_gb = sum(p.stat().st_size for p in (work / "cache").rglob("*.i16")) / 1e9
            rows.append((hours, samples * 2 / 1e9, cache_gb, rss, seconds))
            shutil.rmtree(folder)
            shutil.rmtree(work / "cache")
        print("| corpus | audio (int16) | cache on disk | peak RSS of preprocessing + "
              f"{args.steps} training steps | time |")
        print("|---:|---:|---:|---:|---:|")
        for hours, audio_gb, cache_gb, rss, seconds in rows:
            print(f"| {hours:g} h | {audio_gb:.2f} GB | {cache_gb:.2f} GB | {rss:,.0f} MB "
                  f"| {seconds:.0f} s |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
