"""Datasets over a folder tree of audio files.

A one-time preprocessing pass decodes, resamples, trims and normalizes every file into one flat
int16 file that training reads crops from (with pread), so a corpus larger than RAM works and
restarts are fast. The cache is reused while the source files are unchanged (same paths, sizes,
mtimes) and rebuilt when one changes. Crops never cross file boundaries; the held-out split is by
file.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from wavenet import checks
from wavenet.audio import (
    AudioConfig,
    AudioError,
    audio_extensions,
    load_for_training,
)
from wavenet.features import MelConfig, frame_window, frames_for, log_mel
from wavenet.files import write_atomic
from wavenet.runtime import progress_bar

if TYPE_CHECKING:  # the data layer reads a model config, but does not build models
    from wavenet.model import WaveNetConfig

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # 3: trimming keeps at least 0.1 s whatever the model; non-finite skipped


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
            field of context. 1000 beat 2000, 4000 and 8000 on the bundled piano and speech at a
            CPU budget (more steps, each worth nearly as much; README, Evaluate).
        speakers: where speaker labels come from: None (no labels), "folder" (the first
            sub-folder under root: root/<speaker>/**/*.wav, the VCTK layout) or the path of a CSV
            manifest with rows `path,speaker` (paths relative to root).
        flip_polarity: play half of the training crops (chosen by seed and crop number) with
            their sign flipped: a waveform and its negative sound the same, so the model sees
            twice the distinct waveforms, which held off overfitting a small corpus (README,
            Evaluate: fourth search).
        speed_perturb: play each training crop at a speed drawn uniformly from
            [1 - speed_perturb, 1 + speed_perturb] (pitch and tempo together, as a tape played
            faster or slower; band-limited resampling), chosen by seed and crop number; 0 plays
            every crop as recorded. Only for models of audio alone: a vocoder's mel frames
            would no longer describe the crop.
        num_workers: DataLoader worker processes; None: none when training on the CPU (crops
            are read from the preprocessed cache in microseconds: on 2 cores training ran as fast
            without workers, which each hold a copy of PyTorch; README: Train), 2 on a GPU.
        audio: preprocessing (rate, trimming, normalization).
    """

    root: str = "???"
    valid_root: str | None = None
    valid_fraction: float = 0.1
    cache_dir: str | None = None
    crop_samples: int = 1000
    speakers: str | None = None
    flip_polarity: bool = True
    speed_perturb: float = 0.0
    num_workers: int | None = None
    audio: AudioConfig = field(default_factory=AudioConfig)

    def __post_init__(self):
        for key in ("root", "valid_root", "cache_dir"):
            setattr(self, key, checks.path(getattr(self, key)))
        if self.speakers not in (None, "folder"):
            self.speakers = checks.path(self.speakers)
        checks.number("data.valid_fraction", self.valid_fraction, 0, 1, hi_open=True)
        checks.integer("data.crop_samples", self.crop_samples, 1)
        checks.number("data.speed_perturb", self.speed_perturb, 0, 0.5,
                      hint="a share of the speed, e.g. 0.1 for speeds 0.9 to 1.1")
        checks.integer("data.num_workers", self.num_workers, 0, 256, optional=True)


@dataclass
class CachedFile:
    path: str  # relative to the cache's root
    size: int
    mtime_ns: int
    offset: int = 0  # first sample in the flat file
    length: int = 0  # samples after preprocessing
    mel_offset: int = 0  # first frame in the flat feature file
    frames: int = 0  # log-mel frames (length // hop + 1), when features are cached


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wavenet"


def list_audio_files(root: Path, key: str = "data.root") -> list[Path]:
    """Audio files below root, sorted, hidden folders (like caches) skipped."""
    if not root.is_dir():
        raise AudioError(f"data folder {root} does not exist or is not a folder; "
                         f"set {key}=/path/to/audio")
    exts = audio_extensions()
    files = [
        p for p in root.rglob("*")
        if p.suffix.lower() in exts and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if not files:
        raise AudioError(f"data folder {root} holds no audio files ({', '.join(sorted(exts)[:8])}"
                         f", …); point {key} at a folder of audio")
    return sorted(files)


class AudioCache:
    """All files of one folder, preprocessed, as int16 in one flat file, and their log-mel
    features (float16, frames × n_mels) in another when a MelConfig is given.

    Crops are read with pread, not memory-mapped: pages a map touches count as the process's
    memory until the kernel reclaims them, so a long run over a corpus larger than RAM would
    look like (and, under cgroup limits, act like) a leak. Reads keep memory flat.

    Attributes:
        files: per-file offsets and lengths into the flat files.
        sample_rate: rate of the cached audio.
        mel: the feature config, or None.
    """

    def __init__(self, directory: Path, index: dict):
        self.directory = directory
        self.root = Path(index["root"])
        self.sample_rate = index["audio"]["sample_rate"]
        self.mel = MelConfig(**index["mel"]) if index.get("mel") else None
        self.files = [CachedFile(**f) for f in index["files"]]
        self._names = {"samples": index["samples_file"], "mels": index.get("mels_file")}
        self._fds: dict[str, int] = {}  # opened lazily, per process (never pickled)

    def _read(self, kind: str, start: int, count: int) -> np.ndarray:
        """Rows start … start+count-1 of a flat file: (count,) int16 samples or
        (count, n_mels) float16 frames."""
        dtype, width = (np.int16, 1) if kind == "samples" else (np.float16, self.mel.n_mels)
        row = np.dtype(dtype).itemsize * width
        if count <= 0:
            data = np.zeros(0, dtype)
        else:
            if kind not in self._fds:
                self._fds[kind] = os.open(self.directory / self._names[kind], os.O_RDONLY)
            data = np.frombuffer(os.pread(self._fds[kind], count * row, start * row), dtype)
        return data if width == 1 else data.reshape(-1, width)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def mels(self, i: int, start: int = 0, frames: int | None = None) -> np.ndarray:
        """Log-mel frames of file i as float32 (n_mels, frames)."""
        f = self.files[i]
        frames = f.frames - start if frames is None else frames
        return self._read("mels", f.mel_offset + start, frames).astype(np.float32).T

    def audio(self, i: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Float32 waveform (T,) of file i, optionally a slice of it."""
        f = self.files[i]
        length = f.length - start if length is None else length
        return self._read("samples", f.offset + start, length).astype(np.float32) / 32768.0


def _fingerprint(root: Path, paths: list[Path]) -> list[CachedFile]:
    out = []
    for p in paths:
        st = p.stat()
        out.append(CachedFile(str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    return out


def cache_name(root: Path, audio_cfg: AudioConfig, mel: MelConfig | None) -> str:
    """The cache folder's name: the source folder and a hash of everything that shapes the
    cached audio and features: the audio config (trimming's minimum follows its rate), the
    features' config and the cache's version."""
    # The rate is the audio config's; a mel config that states it makes the same features.
    mel_key = {**asdict(mel), "sample_rate": None} if mel is not None else None
    key = json.dumps([str(root), asdict(audio_cfg), mel_key, CACHE_VERSION])
    return f"{root.name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def open_cache(root: str | Path, audio_cfg: AudioConfig, cache_dir: str | Path | None = None,
               mel: MelConfig | None = None, key: str = "data.root") -> AudioCache:
    """Return the preprocessed cache of `root`, building it first if missing or stale.

    Files that cannot be decoded, or are empty, are skipped with a warning; at least one file
    must survive. With `mel`, log-mel features are computed and cached beside the audio.
    """
    root = Path(root).expanduser().resolve()
    sources = list_audio_files(root, key)
    directory = Path(cache_dir or default_cache_dir()) / cache_name(root, audio_cfg, mel)
    index_path = directory / "index.json"
    current = _fingerprint(root, sources)
    if index_path.exists():
        index = json.loads(index_path.read_text())
        cached = [(f["path"], f["size"], f["mtime_ns"]) for f in index["scanned"]]
        if cached == [(f.path, f.size, f.mtime_ns) for f in current]:
            log.info("using cached audio for %s (%s)", root, directory)
            return AudioCache(directory, index)
        log.info("audio in %s changed since it was cached: rebuilding", root)
    return _build_cache(root, current, audio_cfg, directory, mel)


def _build_cache(root: Path, scanned: list[CachedFile], audio_cfg: AudioConfig, directory: Path,
                 mel: MelConfig | None) -> AudioCache:
    directory.mkdir(parents=True, exist_ok=True)
    _remove_orphans(directory)
    # A new samples file per build, named by its content's fingerprint, then the index swapped in
    # atomically: a crash mid-build leaves the previous cache usable.
    digest = hashlib.sha1(json.dumps([asdict(f) for f in scanned]).encode()).hexdigest()[:12]
    samples_name, mels_name = f"samples-{digest}.i16", f"mels-{digest}.f16"
    tmp = directory / (samples_name + f".tmp{os.getpid()}")
    tmp_mels = directory / (mels_name + f".tmp{os.getpid()}")
    try:
        kept, skipped = _preprocess(root, scanned, audio_cfg, mel, tmp, tmp_mels)
        if not kept:
            raise AudioError(f"no usable audio in {root}: all {len(scanned)} files failed to "
                             "decode")
        os.replace(tmp, directory / samples_name)
        if mel is not None:
            os.replace(tmp_mels, directory / mels_name)
    finally:  # Ctrl-C or a full disk mid-build: no half-written files left behind
        for leftover in (tmp, tmp_mels):
            leftover.unlink(missing_ok=True)
    index = {
        "version": CACHE_VERSION,
        "root": str(root),
        "audio": asdict(audio_cfg),
        "samples_file": samples_name,
        "mel": asdict(mel) if mel is not None else None,
        "mels_file": mels_name if mel is not None else None,
        "scanned": [asdict(f) for f in scanned],
        "files": [asdict(f) for f in kept],
        "skipped": skipped,
    }
    write_atomic(directory / "index.json", json.dumps(index, indent=1))
    for stale in [*directory.glob("samples-*.i16"), *directory.glob("mels-*.f16")]:
        if stale.name not in (samples_name, mels_name):
            stale.unlink()
    hours = sum(f.length for f in kept) / audio_cfg.sample_rate / 3600
    log.info("cached %d files (%.2f h) of %s in %s", len(kept), hours, root, directory)
    if skipped:
        log.warning("skipped %d of %d files in %s that could not be used (listed in %s)",
                    len(skipped), len(scanned), root, directory / "index.json")
    return AudioCache(directory, index)


def _remove_orphans(directory: Path) -> None:
    """Temporary files of builds that were killed (SIGTERM, kill -9, a power cut) and so could
    not clean up: those whose process is gone."""
    for tmp in directory.glob("*.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _preprocess(root: Path, scanned: list[CachedFile], audio_cfg: AudioConfig,
                mel: MelConfig | None, samples_path: Path, mels_path: Path
                ) -> tuple[list[CachedFile], list[str]]:
    """Decode every file into the flat samples (and features) files; unusable files are
    skipped with a warning. Returns the kept files' rows and the skipped paths."""
    kept: list[CachedFile] = []
    skipped: list[str] = []
    offset = mel_offset = 0
    with open(samples_path, "wb") as out, open(mels_path, "wb") as out_mels:
        for f in progress_bar(iterable=scanned, desc=f"preprocessing {root.name}", unit="file",
                              leave=False):
            try:
                audio = load_for_training(root / f.path, audio_cfg)
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
            frames = 0
            if mel is not None:  # from the stored int16 audio: exactly what training sees
                feats = log_mel(pcm.astype(np.float32) / 32768.0, audio_cfg.sample_rate, mel)
                out_mels.write(feats.T.numpy().astype(np.float16).tobytes())
                frames = feats.shape[1]
            kept.append(CachedFile(f.path, f.size, f.mtime_ns, offset, len(pcm), mel_offset,
                                   frames))
            offset += len(pcm)
            mel_offset += frames
        for f in (out, out_mels):
            f.flush()
            os.fsync(f.fileno())
    return kept, skipped


def split_files(cache: AudioCache, valid_fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic (train, valid) file indices from a hash of each relative path.

    At least one file is always kept for training (a corpus of one file has no held-out part),
    and with at least two files and a positive fraction at least one is held out.
    """
    def unit(path: str) -> float:
        return int(hashlib.sha1(path.encode()).hexdigest()[:8], 16) / 16**8

    scores = [unit(f.path) for f in cache.files]
    valid = [i for i, s in enumerate(scores) if s < valid_fraction]
    if valid_fraction > 0 and not valid and len(scores) > 1:
        valid = [int(np.argmin(scores))]
    if valid and len(valid) == len(scores):
        valid.remove(int(np.argmax(scores)))
    train = [i for i in range(len(scores)) if i not in set(valid)]
    return train, valid


def speaker_labels(cache: AudioCache, source: str) -> list[str | None]:
    """Each cached file's speaker: its first sub-folder ("folder") or a CSV manifest's entry.

    Files a manifest does not list get None (and are left out of training, with a warning).
    """
    if source == "folder":
        labels = []
        for f in cache.files:
            parts = Path(f.path).parts
            if len(parts) < 2:
                raise AudioError(f"{cache.root / f.path} is not in a speaker folder: with "
                                 "data.speakers=folder, put each speaker's files in "
                                 "root/<speaker>/ (or use a manifest CSV)")
            labels.append(parts[0])
        return labels
    manifest = Path(source)
    if not manifest.is_file():
        raise AudioError(f"data.speakers={source}: use folder, or the path of a CSV manifest "
                         "with rows path,speaker")
    table: dict[str, str] = {}
    try:
        with open(manifest, newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if not row or (n == 1 and [c.strip().lower() for c in row[:2]]
                               == ["path", "speaker"]):
                    continue
                if len(row) < 2 or not row[1].strip():
                    raise AudioError(f"{manifest}:{n}: expected path,speaker")
                path = Path(row[0].strip()).expanduser()
                if path.is_absolute():
                    if not path.is_relative_to(cache.root):
                        raise AudioError(f"{manifest}:{n}: {path} is not under data.root "
                                         f"({cache.root}); give paths relative to data.root")
                    path = path.relative_to(cache.root)
                table[str(path)] = row[1].strip()
    except (UnicodeDecodeError, csv.Error) as err:
        raise AudioError(f"data.speakers={manifest} is not a UTF-8 CSV file of rows "
                         f"path,speaker ({err})") from err
    labels = [table.get(f.path) for f in cache.files]
    missing = sum(label is None for label in labels)
    if missing:
        log.warning("%d files in %s are not in %s and are not used", missing, cache.root, manifest)
    return labels


@dataclass
class Conditioning:
    """What a dataset attaches to each crop besides audio.

    Attributes:
        speakers: each cached file's speaker id (None: unlabelled, not used), or None for an
            unconditioned model.
        hop: samples per log-mel frame when features are attached, else None.
        context: frames attached on each side of a stretch beyond those covering it
            (`WaveNetConfig.mel_context_frames`), so that the model conditions the stretch
            exactly as it would the whole file; 0 for generation, which takes a stretch's own
            frames.
        history: samples of audio before a stretch that its whitening filter reaches
            (`WaveNetConfig.whitening_history`), attached as "before" so that a crop is whitened
            from its true past (a mel predictor's exactly as in the whole file; a backward-
            adaptive one is fitted at the crop's own samples 0, hop, 2·hop, …).
    """

    speakers: list[int | None] | None = None
    hop: int | None = None
    context: int = 0
    history: int = 0

    @classmethod
    def for_model(cls, cfg: WaveNetConfig, speakers: list[int | None] | None = None
                  ) -> Conditioning:
        """What a model with this config is conditioned on, with the context it needs."""
        hop = cfg.mel.hop_length if cfg.mel is not None else None
        return cls(speakers, hop, cfg.mel_context_frames, cfg.whitening_history)


# The random streams of a run, each a pure function of (seed, index, stream, …): a crop's
# position (no stream), its sign, its speed and training's input noise, all by crop number.
# numpy seeds [a, b] and [a, b, 0] alike, so no stream is 0.
FLIP_STREAM, SPEED_STREAM, INPUT_NOISE_STREAM = 1, 2, 3


def seeded_draws(seed: int, index: int, *stream: int) -> np.random.Generator:
    """The generator of draw `index` of `stream` in a run seeded with `seed`."""
    return np.random.default_rng([seed, index, *stream])


class CropDataset(Dataset):
    """Random fixed-length crops of audio, each inside one file, with their conditioning.

    Item i is a pure function of (seed, i), so a run that resumes at step s sees exactly the
    crops a run that never stopped would, whatever the number of DataLoader workers. With mel
    features, crops start on frame boundaries and span whole frames.
    """

    def __init__(self, cache: AudioCache, file_ids: list[int], crop_length: int, seed: int,
                 cond: Conditioning | None = None, flip_polarity: bool = False,
                 speed_perturb: float = 0.0):
        self.cache = cache
        self.flip_polarity = flip_polarity
        self.speed_perturb = speed_perturb
        self.cond = cond or Conditioning()
        if speed_perturb and self.cond.hop:
            raise ValueError("speed perturbation would misalign a crop with its mel frames")
        self.stride = self.cond.hop or 1
        self.crop_length = -(-crop_length // self.stride) * self.stride  # whole frames
        self.seed = seed
        if self.cond.speakers is not None:
            file_ids = [i for i in file_ids if self.cond.speakers[i] is not None]
        lengths = {i: cache.files[i].length for i in file_ids}
        self.file_ids = [i for i in file_ids if lengths[i] >= self.crop_length]
        too_short = len(file_ids) - len(self.file_ids)
        if too_short:
            log.warning("%d of %d files are shorter than one crop (%d samples) and are not used "
                        "for training", too_short, len(file_ids), self.crop_length)
        if not self.file_ids:
            raise AudioError(f"no file in {cache.root} is as long as one training crop "
                             f"({self.crop_length} samples = receptive field + "
                             "data.crop_samples); lower data.crop_samples or use a smaller model")
        positions = np.array([(lengths[i] - self.crop_length) // self.stride + 1
                              for i in self.file_ids], np.int64)
        self.cum_positions = np.cumsum(positions)

    def __len__(self) -> int:
        return int(self.cum_positions[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Crop number -> (file index in the cache, start sample)."""
        pos = int(self.draws(index).integers(self.cum_positions[-1]))
        k = int(np.searchsorted(self.cum_positions, pos, side="right"))
        start = pos - (int(self.cum_positions[k - 1]) if k else 0)
        return self.file_ids[k], start * self.stride

    def draws(self, index: int, *stream: int) -> np.random.Generator:
        """The random draws of crop `index` (see `seeded_draws`), so a resumed run or another
        worker count sees the same crops."""
        return seeded_draws(self.seed, index, *stream)

    def flipped(self, index: int) -> bool:
        """Whether crop `index` is played with its sign flipped (half of them, when asked)."""
        return self.flip_polarity and bool(self.draws(index, FLIP_STREAM).integers(2))

    def speed(self, index: int) -> float:
        """The speed crop `index` is played at: 1 unless perturbed, then drawn uniformly from
        [1 - speed_perturb, 1 + speed_perturb]."""
        if not self.speed_perturb:
            return 1.0
        return float(self.draws(index, SPEED_STREAM).uniform(1 - self.speed_perturb,
                                                   1 + self.speed_perturb))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        file_id, start = self.locate(index)
        item = file_item(self.cache, file_id, self.cond, start, self.crop_length)
        speed, history = self.speed(index), self.cond.history
        if speed != 1.0:  # the whitening history is played at the same speed as the crop
            played = torch.from_numpy(played_at(self.cache, file_id, start - history,
                                                history + self.crop_length, speed))
            item["audio"] = played[history:]
            if history:
                item["before"] = played[:history]
        if self.flipped(index):  # the mel frames do not change with the sign
            for key in ("audio", "before"):
                if key in item:
                    item[key] = -item[key]
        item["crop"] = torch.tensor(index)  # keys what else is drawn for it (input noise)
        return item


# Output samples resampled beyond each end of a sped-up or slowed-down crop, then dropped, so
# that the resampling filter sees the file's audio there rather than the cut.
SPEED_MARGIN = 32


def played_at(cache: AudioCache, file_id: int, start: int, length: int, speed: float
              ) -> np.ndarray:
    """`length` samples of a file played `speed` times as fast, centred where samples start …
    start+length-1 are: output sample n is the audio at time c + (n - length // 2)·speed + d,
    c = start + length // 2 and |d| ≤ speed / 2 (the resampling starts on a whole sample),
    with silence beyond the file's ends. Band-limited resampling (soxr, which librosa also
    uses). Returns float32 (length,) in [-1, 1]."""
    import soxr  # deferred, as the audio layer defers librosa

    centre, half = start + length // 2, length // 2
    left = math.ceil((half + SPEED_MARGIN) * speed)  # input samples before the centre
    first = centre - left
    span = left + math.ceil((length - half + SPEED_MARGIN) * speed) + 1
    lo, hi = max(first, 0), min(first + span, cache.files[file_id].length)
    source = np.zeros(span, np.float32)
    source[lo - first:hi - first] = cache.audio(file_id, lo, hi - lo)
    out = soxr.resample(source, speed * 1000.0, 1000.0)  # out[k] is source at k·speed
    begin = round(left / speed) - half
    out = out[begin:begin + length]
    return np.clip(np.pad(out, (0, length - len(out))), -1.0, 1.0).astype(np.float32)


def file_item(cache: AudioCache, file_id: int, cond: Conditioning, start: int = 0,
              length: int | None = None) -> dict[str, torch.Tensor]:
    """A stretch of one file with its conditioning.

    Returns:
        audio: (T,) float32 in [-1, 1]; speaker: () int64 when labelled; when features are
        attached, mel: (n_mels, ceil(T / hop) + 2·context) float32 log-mel frames (silence
        outside the file) and mel_offset: () int64, where audio[0] sits on their time axis
        (frame j covers samples j·hop … (j+1)·hop - 1 of it; `start` must be a multiple of hop);
        with `cond.history`, before: (history,) float32, the samples before the stretch
        (silence before the file's start).
    """
    length = cache.files[file_id].length - start if length is None else length
    item = {"audio": torch.from_numpy(cache.audio(file_id, start, length))}
    if cond.history:
        lo = max(0, start - cond.history)
        before = cache.audio(file_id, lo, start - lo)
        item["before"] = torch.from_numpy(np.pad(before, (cond.history - len(before), 0)))
    if cond.speakers is not None:
        item["speaker"] = torch.tensor(cond.speakers[file_id])
    if cond.hop is not None:
        first, stop = frames_for(start, start + length - 1, cond.hop, cond.context)
        item["mel"] = file_frames(cache, file_id, first, stop)
        item["mel_offset"] = torch.tensor(start - first * cond.hop)
    return item


def file_frames(cache: AudioCache, file_id: int, first: int, stop: int) -> torch.Tensor:
    """Log-mel frames first … stop-1 of one file (n_mels, stop - first), silence outside it."""
    lo, hi = max(first, 0), min(stop, cache.files[file_id].frames)
    read = torch.from_numpy(cache.mels(file_id, lo, max(0, hi - lo)))
    return frame_window(read, first - lo, stop - lo, cache.mel.log_floor)


class StepSampler(torch.utils.data.Sampler):
    """Crop numbers of steps first_step, first_step+1, …: step s uses crops s·B … s·B+B-1 of
    the global batch B, of which process `rank` of `world` takes its even share. A batch's
    crops depend only on the step number, whatever the number of processes."""

    def __init__(self, first_step: int, steps: int, batch: int, rank: int = 0, world: int = 1):
        self.first_step, self.steps = first_step, max(0, steps)
        self.local = batch // world
        self.batch, self.offset = batch, rank * self.local

    def __iter__(self):
        for step in range(self.first_step, self.first_step + self.steps):
            start = step * self.batch + self.offset
            yield from range(start, start + self.local)

    def __len__(self) -> int:
        return self.steps * self.local
