"""The data of a training run: caches, the held-out split, speakers, crops and their loader."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from wavenet.audio import AudioError
from wavenet.config import TrainJob
from wavenet.data import (
    AudioCache,
    Conditioning,
    CropDataset,
    StepSampler,
    open_cache,
    speaker_labels,
    split_files,
)
from wavenet.distributed import World
from wavenet.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    """What training reads.

    Attributes:
        dataset: the training crops (one receptive field of context + data.crop_samples each).
        valid_cache, valid_ids, valid_cond: the held-out files and their conditioning.
        speakers: the speaker table (names in id order), [] without speakers.
        sample_rate: of the cached audio.
    """

    dataset: CropDataset
    valid_cache: AudioCache
    valid_ids: list[int]
    valid_cond: Conditioning
    speakers: list[str]
    sample_rate: int

    @classmethod
    def open(cls, job: TrainJob, world: World) -> TrainData:
        """Open (rank 0 first builds) the caches and set up crops, split and speakers.

        A multi-speaker model's table is sized from the data here: `job.model.n_speakers` is
        filled in when it is 0.
        """
        if not world.is_main:  # rank 0 builds the cache while the others wait, then they open it
            world.barrier()
        try:
            return cls._open(job)
        finally:
            if world.is_main:
                world.barrier()

    @classmethod
    def _open(cls, job: TrainJob) -> TrainData:
        data, model = job.data, job.model
        if data.root in (None, "", "???"):
            raise AudioError("data.root is not set: pass data.root=/path/to/audio "
                             "(or data=demo_piano for the bundled demo)")
        rf = model.receptive_field
        train_cache = open_cache(data.root, data.audio, data.cache_dir, model.mel)
        if data.valid_root is not None:
            valid_cache = open_cache(data.valid_root, data.audio, data.cache_dir, model.mel,
                                     key="data.valid_root")
            train_ids = list(range(len(train_cache.files)))
            valid_ids = list(range(len(valid_cache.files)))
        else:
            valid_cache = train_cache
            train_ids, valid_ids = split_files(train_cache, data.valid_fraction)
        if model.n_speakers and data.speakers is None:
            raise UserError(f"model.n_speakers={model.n_speakers} but the data has no speaker "
                            "labels: set data.speakers=folder or data.speakers=<csv>")
        speakers: list[str] = []
        train_cond = valid_cond = Conditioning.for_model(model)
        if data.speakers is not None:
            labels = speaker_labels(train_cache, data.speakers)
            speakers = sorted({labels[i] for i in train_ids if labels[i] is not None})
            if not speakers:
                raise UserError(f"no training file in {train_cache.root} has a speaker from "
                                f"data.speakers={data.speakers}: list files as path,speaker "
                                "with paths relative to data.root")
            _size_speaker_table(job, speakers)
            index = {name: n for n, name in enumerate(speakers)}
            valid_labels = (labels if valid_cache is train_cache
                            else speaker_labels(valid_cache, data.speakers))
            train_cond = Conditioning.for_model(model, [index.get(s) for s in labels])
            valid_cond = Conditioning.for_model(model, [index.get(s) for s in valid_labels])
            unknown = {i for i in valid_ids if valid_cond.speakers[i] is None}
            if unknown:
                log.warning("%d held-out files have speakers not in training; not scored",
                            len(unknown))
                valid_ids = [i for i in valid_ids if i not in unknown]
        dataset = CropDataset(train_cache, train_ids, rf + data.crop_samples, job.train.seed,
                              train_cond, data.flip_polarity, data.speed_perturb)
        log.info("data: %d training files, %d held-out files, crops of %d samples%s",
                 len(dataset.file_ids), len(valid_ids), dataset.crop_length,
                 f", {len(speakers)} speakers" if speakers else "")
        return cls(dataset, valid_cache, valid_ids, valid_cond, speakers,
                   data.audio.sample_rate)

    def loader(self, job: TrainJob, first_step: int, world: World,
               device: torch.device) -> DataLoader:
        """This process's batches of steps first_step, first_step+1, … (see `StepSampler`)."""
        cfg, workers = job.train, job.data.num_workers
        if workers is None:
            workers = 2 if device.type == "cuda" else 0
        # Without a step limit (a time budget only), the crops run on until the loop stops.
        steps = 2**62 if cfg.max_steps is None else cfg.max_steps - first_step
        return DataLoader(self.dataset, batch_size=cfg.batch_size // world.size,
                          sampler=StepSampler(first_step, steps, cfg.batch_size, world.rank,
                                              world.size),
                          num_workers=workers, persistent_workers=False,
                          pin_memory=device.type == "cuda", drop_last=True,
                          prefetch_factor=4 if workers else None)


def _size_speaker_table(job: TrainJob, speakers: list[str]) -> None:
    model = job.model
    if model.n_speakers == 0:
        model.n_speakers = len(speakers)
    elif model.n_speakers < len(speakers):
        raise UserError(f"model.n_speakers={model.n_speakers} but the data has {len(speakers)} "
                        "speakers; set model.n_speakers=0 to size it from the data")
