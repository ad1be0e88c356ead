"""Datasets over a folder tree of audio files.

A one-time preprocessing pass decodes, resamples, trims and normalizes every file into one flat
int16 file that training memory-maps, so a corpus larger than RAM works and restarts are fast. The
cache is reused while the source files are unchanged (same paths, sizes, mtimes) and rebuilt when
one changes. Crops never cross file boundaries; the held-out split is by file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from wavenet.audio import (
    AudioConfig,
    AudioError,
    audio_extensions,
    load_for_training,
    mu_law_encode,
)
from wavenet.runtime import progress_bar

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class DataConfig:
    """Where the audio is and how it is split and cropped.

    Attributes:
        root: folder searched recursively for audio files.
        valid_root: a separate held-out folder; None holds out `valid_fraction` of root's files.
        valid_fraction: share of files held out (chosen by a hash of the relative path, so the
            split is stable when files are added).
        cache_dir: where preprocessed audio is kept; None uses $XDG_CACHE_HOME/wavenet or
            ~/.cache/wavenet.
        crop_samples: predicted samples per training crop; each crop also carries one receptive
            field of context.
        num_workers: DataLoader worker processes.
        audio: preprocessing (rate, trimming, normalization).
    """

    root: str = "???"
    valid_root: str | None = None
    valid_fraction: float = 0.1
    cache_dir: str | None = None
    crop_samples: int = 4000
    num_workers: int = 2
    audio: AudioConfig = field(default_factory=AudioConfig)


@dataclass
class CachedFile:
    path: str  # relative to the cache's root
    size: int
    mtime_ns: int
    offset: int = 0  # first sample in the flat file
    length: int = 0  # samples after preprocessing


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wavenet"


def list_audio_files(root: Path) -> list[Path]:
    """Audio files below root, sorted, hidden folders (like caches) skipped."""
    if not root.is_dir():
        raise AudioError(f"data folder {root} does not exist or is not a folder; "
                         "set data.root=/path/to/audio")
    exts = audio_extensions()
    files = [
        p for p in root.rglob("*")
        if p.suffix.lower() in exts and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if not files:
        raise AudioError(f"data folder {root} holds no audio files ({', '.join(sorted(exts)[:8])}"
                         ", …); point data.root at a folder of audio")
    return sorted(files)


class AudioCache:
    """All files of one folder, preprocessed, as int16 in one memory-mapped file.

    Attributes:
        files: per-file offsets and lengths into `samples`.
        sample_rate: rate of the cached audio.
    """

    def __init__(self, directory: Path, index: dict):
        self.directory = directory
        self.root = Path(index["root"])
        self.sample_rate = index["audio"]["sample_rate"]
        self.files = [CachedFile(**f) for f in index["files"]]
        self._samples_name = index["samples_file"]
        self._samples: np.ndarray | None = None  # opened lazily: memmaps must not be pickled

    @property
    def samples(self) -> np.ndarray:
        if self._samples is None:
            total = sum(f.length for f in self.files)
            self._samples = (np.memmap(self.directory / self._samples_name, dtype=np.int16,
                                       mode="r", shape=(total,)) if total else
                             np.zeros(0, np.int16))
        return self._samples

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_samples"] = None
        return state

    def audio(self, i: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Float32 waveform (T,) of file i, optionally a slice of it."""
        f = self.files[i]
        length = f.length - start if length is None else length
        chunk = self.samples[f.offset + start: f.offset + start + length]
        return chunk.astype(np.float32) / 32768.0


def _fingerprint(root: Path, paths: list[Path]) -> list[CachedFile]:
    out = []
    for p in paths:
        st = p.stat()
        out.append(CachedFile(str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    return out


def open_cache(root: str | Path, audio_cfg: AudioConfig, cache_dir: str | Path | None = None,
               min_length: int = 1) -> AudioCache:
    """Return the preprocessed cache of `root`, building it first if missing or stale.

    Files that cannot be decoded, or are empty, are skipped with a warning; at least one file
    must survive.
    """
    root = Path(root).resolve()
    sources = list_audio_files(root)
    key = hashlib.sha1(json.dumps([str(root), asdict(audio_cfg), CACHE_VERSION]).encode())
    directory = Path(cache_dir or default_cache_dir()) / f"{root.name}-{key.hexdigest()[:12]}"
    index_path = directory / "index.json"
    current = _fingerprint(root, sources)
    if index_path.exists():
        index = json.loads(index_path.read_text())
        cached = [(f["path"], f["size"], f["mtime_ns"]) for f in index["scanned"]]
        if cached == [(f.path, f.size, f.mtime_ns) for f in current]:
            log.info("using cached audio for %s (%s)", root, directory)
            return AudioCache(directory, index)
        log.info("audio in %s changed since it was cached: rebuilding", root)
    return _build_cache(root, current, audio_cfg, directory, min_length)


def _build_cache(root: Path, scanned: list[CachedFile], audio_cfg: AudioConfig, directory: Path,
                 min_length: int) -> AudioCache:
    directory.mkdir(parents=True, exist_ok=True)
    # A new samples file per build, named by its content's fingerprint, then the index swapped in
    # atomically: a crash mid-build leaves the previous cache usable.
    digest = hashlib.sha1(json.dumps([asdict(f) for f in scanned]).encode()).hexdigest()[:12]
    samples_name = f"samples-{digest}.i16"
    tmp = directory / (samples_name + f".tmp{os.getpid()}")
    kept: list[CachedFile] = []
    skipped: list[str] = []
    offset = 0
    with open(tmp, "wb") as out:
        for f in progress_bar(iterable=scanned, desc=f"preprocessing {root.name}", unit="file",
                              leave=False):
            try:
                audio = load_for_training(root / f.path, audio_cfg, min_keep=min_length)
            except AudioError as err:
                log.warning("skipping %s", err)
                skipped.append(f.path)
                continue
            if audio.size == 0:
                log.warning("skipping %s: no samples", root / f.path)
                skipped.append(f.path)
                continue
            pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
            out.write(pcm.tobytes())
            kept.append(CachedFile(f.path, f.size, f.mtime_ns, offset, len(pcm)))
            offset += len(pcm)
        out.flush()
        os.fsync(out.fileno())
    if not kept:
        tmp.unlink()
        raise AudioError(f"no usable audio in {root}: all {len(scanned)} files failed to decode")
    os.replace(tmp, directory / samples_name)
    index = {
        "version": CACHE_VERSION,
        "root": str(root),
        "audio": asdict(audio_cfg),
        "samples_file": samples_name,
        "scanned": [asdict(f) for f in scanned],
        "files": [asdict(f) for f in kept],
        "skipped": skipped,
    }
    tmp_index = directory / f"index.json.tmp{os.getpid()}"
    tmp_index.write_text(json.dumps(index, indent=1))
    os.replace(tmp_index, directory / "index.json")
    for stale in directory.glob("samples-*.i16"):
        if stale.name != samples_name:
            stale.unlink()
    hours = offset / audio_cfg.sample_rate / 3600
    log.info("cached %d files (%.2f h) of %s in %s; %d skipped", len(kept), hours, root,
             directory, len(skipped))
    return AudioCache(directory, index)


def split_files(cache: AudioCache, valid_fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic (train, valid) file indices from a hash of each relative path.

    With at least two files and a positive fraction, at least one file is held out and at least
    one is kept for training.
    """
    def unit(path: str) -> float:
        return int(hashlib.sha1(path.encode()).hexdigest()[:8], 16) / 16**8

    scores = [unit(f.path) for f in cache.files]
    valid = [i for i, s in enumerate(scores) if s < valid_fraction]
    if valid_fraction > 0 and not valid and len(scores) > 1:
        valid = [int(np.argmin(scores))]
    if len(valid) == len(scores) and len(scores) > 1:
        valid.remove(int(np.argmax(scores)))
    train = [i for i in range(len(scores)) if i not in set(valid)]
    return train, valid


class CropDataset(Dataset):
    """Random fixed-length crops of mu-law classes, each inside one file.

    Item i is a pure function of (seed, i), so a run that resumes at step s sees exactly the
    crops a run that never stopped would, whatever the number of DataLoader workers.
    """

    def __init__(self, cache: AudioCache, file_ids: list[int], crop_length: int, seed: int,
                 quantization_channels: int):
        self.cache = cache
        self.crop_length = crop_length
        self.seed = seed
        self.quantization_channels = quantization_channels
        lengths = {i: cache.files[i].length for i in file_ids}
        self.file_ids = [i for i in file_ids if lengths[i] >= crop_length]
        too_short = len(file_ids) - len(self.file_ids)
        if too_short:
            log.warning("%d of %d files are shorter than one crop (%d samples) and are not used "
                        "for training", too_short, len(file_ids), crop_length)
        if not self.file_ids:
            raise AudioError(f"no file in {cache.root} is as long as one training crop "
                             f"({crop_length} samples = receptive field + data.crop_samples); "
                             "lower data.crop_samples or use a smaller model")
        positions = np.array([lengths[i] - crop_length + 1 for i in self.file_ids], np.int64)
        self.cum_positions = np.cumsum(positions)

    def __len__(self) -> int:
        return int(self.cum_positions[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Crop number -> (file index in the cache, start sample)."""
        rng = np.random.default_rng([self.seed, index])
        pos = int(rng.integers(self.cum_positions[-1]))
        k = int(np.searchsorted(self.cum_positions, pos, side="right"))
        start = pos - (int(self.cum_positions[k - 1]) if k else 0)
        return self.file_ids[k], start

    def __getitem__(self, index: int) -> torch.Tensor:
        """Returns (crop_length,) int64 classes."""
        file_id, start = self.locate(index)
        audio = self.cache.audio(file_id, start, self.crop_length)
        return torch.from_numpy(mu_law_encode(audio, self.quantization_channels))


class StepSampler(torch.utils.data.Sampler):
    """Crop numbers first, first+1, …: a batch's crops depend only on the step number."""

    def __init__(self, first: int, count: int):
        self.first, self.count = first, max(0, count)

    def __iter__(self):
        return iter(range(self.first, self.first + self.count))

    def __len__(self) -> int:
        return self.count
