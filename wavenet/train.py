"""Training: `train(job, run_dir) -> checkpoint path`, a plain function the CLI wraps."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from wavenet import checkpoint, checks
from wavenet.audio import AudioError
from wavenet.config import TrainConfig, TrainJob
from wavenet.data import (
    Conditioning,
    CropDataset,
    StepSampler,
    file_item,
    open_cache,
    speaker_labels,
    split_files,
)
from wavenet.distributed import World
from wavenet.errors import UserError
from wavenet.evaluate import heldout_nll
from wavenet.generate import generate
from wavenet.model import WaveNet
from wavenet.runtime import progress_bar, resolve_device, set_threads

log = logging.getLogger(__name__)


def lr_factor(step: int, cfg: TrainConfig, time_spent: float = 0.0) -> float:
    """Linear warm-up to 1, then cosine decay to final_lr / lr at the end of the run.

    The end is max_steps, or the end of the max_time budget, whichever the run is closer to:
    `time_spent` is the fraction of max_time used so far (0 without a budget).
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.final_lr is None:
        return 1.0
    progress = time_spent
    if cfg.max_steps is not None:
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = max(progress, (step - cfg.warmup_steps) / span)
    progress = min(1.0, progress)
    floor = cfg.final_lr / cfg.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def ema_update_fn(decay: float):
    """EMA whose decay ramps up as (1+n)/(10+n): early averages don't drag in the random init."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged):
        d = min(decay, (1 + int(n_averaged)) / (10 + int(n_averaged)))
        torch._foreach_lerp_(averaged, current, 1 - d)

    return update


# SIGUSR2 is what Slurm sends ahead of a job's time limit (sbatch --signal, submitit).
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM] + (
    [signal.SIGUSR2] if hasattr(signal, "SIGUSR2") else [])


class StopRequest:
    """Turns the first Ctrl-C / SIGTERM / SIGUSR2 into a flag the loop checks between steps.

    The loop then writes a checkpoint and returns; a second signal interrupts at once.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stop requested: finishing this step and writing a checkpoint "
                    "(press Ctrl-C again to abort now)")

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TrainingDiverged(UserError):
    pass


# Settings that say how a run is watched, stored or split into jobs, not what it computes: they
# may change when it resumes. Any other difference from the checkpoint changes the run.
FREE_ON_RESUME = {
    "name", "train.resume", "train.resume_changes", "train.stop_at", "train.progress",
    "train.threads", "train.device", "train.compile", "train.log_every", "train.eval_every",
    "train.eval_max_seconds", "train.sample_every", "train.sample_seconds",
    "train.checkpoint_every", "train.keep_last", "train.max_bad_steps", "data.num_workers",
    "data.cache_dir",
}


def _flat(d: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def run_changes(stored: dict, requested: dict) -> dict[str, tuple]:
    """Settings (dotted keys, model excluded) that differ between a checkpoint's job and the
    requested one in a way that changes the run: {key: (stored, requested)}."""
    old, new = _flat(stored), _flat(requested)
    return {k: (old[k], new[k]) for k in sorted(old.keys() & new.keys())
            if not k.startswith("model.") and k not in FREE_ON_RESUME and old[k] != new[k]}


class Trainer:
    """Holds the model, optimizer, EMA, data and bookkeeping of one training run."""

    def __init__(self, job: TrainJob, run_dir: Path):
        self.job, self.cfg = job, job.train
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        set_threads(self.cfg.threads)
        self.world, self.device = World.join(resolve_device(self.cfg.device))
        if self.cfg.batch_size % self.world.size:
            raise UserError(f"train.batch_size={self.cfg.batch_size} is the batch over all "
                            f"{self.world.size} processes: make it a multiple of that")
        if not self.world.is_main:  # rank 0 speaks for the job
            logging.getLogger("wavenet").setLevel(logging.WARNING)

        self.rf = job.model.receptive_field
        # First, as a multi-speaker model's size comes from the data. Rank 0 builds the cache
        # while the others wait, then they open it.
        if not self.world.is_main:
            self.world.barrier()
        self._open_data()
        if self.world.is_main:
            self.world.barrier()
        torch.manual_seed(self.cfg.seed)
        self.model = WaveNet(job.model).to(self.device)
        trained = self.model
        if self.world.distributed:
            trained = DistributedDataParallel(
                trained, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.forward = torch.compile(trained) if self.cfg.compile else trained
        opt_cls = torch.optim.AdamW if self.cfg.weight_decay else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=self.cfg.lr,
                                 betas=tuple(self.cfg.betas), weight_decay=self.cfg.weight_decay)
        self.ema = (AveragedModel(self.model, multi_avg_fn=ema_update_fn(self.cfg.ema_decay),
                                  use_buffers=True)
                    if self.cfg.ema_decay is not None else None)
        self.step = 0
        self.best_bits = math.inf
        self.spent_before = 0.0  # seconds of training loop in earlier runs (a resume)
        self.loop_start = time.monotonic()
        self.time_fraction = 0.0  # of train.max_time, agreed by all processes

    # ----------------------------------------------------------------------------------- data
    def _open_data(self) -> None:
        data = self.job.data
        if data.root in (None, "", "???"):
            raise AudioError("data.root is not set: pass data.root=/path/to/audio "
                             "(or data=demo_piano for the bundled demo)")
        mel = self.job.model.mel
        self.sample_rate = data.audio.sample_rate
        train_cache = open_cache(data.root, data.audio, data.cache_dir, self.rf, mel)
        if data.valid_root is not None:
            self.valid_cache = open_cache(data.valid_root, data.audio, data.cache_dir, self.rf,
                                          mel)
            train_ids, self.valid_ids = list(range(len(train_cache.files))), list(
                range(len(self.valid_cache.files)))
        else:
            self.valid_cache = train_cache
            train_ids, self.valid_ids = split_files(train_cache, data.valid_fraction)
        if self.job.model.n_speakers and data.speakers is None:
            raise UserError(f"model.n_speakers={self.job.model.n_speakers} but the data has no "
                            "speaker labels: set data.speakers=folder or data.speakers=<csv>")
        self.speakers: list[str] = []
        train_cond = valid_cond = Conditioning.for_model(self.job.model)
        if data.speakers is not None:
            labels = speaker_labels(train_cache, data.speakers)
            self.speakers = sorted({labels[i] for i in train_ids if labels[i] is not None})
            self._size_speaker_table()
            index = {name: n for n, name in enumerate(self.speakers)}
            valid_labels = (labels if self.valid_cache is train_cache
                            else speaker_labels(self.valid_cache, data.speakers))
            train_cond = Conditioning.for_model(self.job.model, [index.get(s) for s in labels])
            valid_cond = Conditioning.for_model(self.job.model,
                                                [index.get(s) for s in valid_labels])
            unknown = [i for i in self.valid_ids if valid_cond.speakers[i] is None]
            if unknown:
                log.warning("%d held-out files have speakers not in training; not scored",
                            len(unknown))
                self.valid_ids = [i for i in self.valid_ids if i not in set(unknown)]
        self.valid_cond = valid_cond
        self.dataset = CropDataset(train_cache, train_ids, self.rf + data.crop_samples,
                                   self.cfg.seed, train_cond)
        log.info("data: %d training files, %d held-out files, crops of %d samples%s",
                 len(self.dataset.file_ids), len(self.valid_ids), self.dataset.crop_length,
                 f", {len(self.speakers)} speakers" if self.speakers else "")

    def _size_speaker_table(self) -> None:
        model = self.job.model
        if model.n_speakers == 0:
            model.n_speakers = len(self.speakers)
        elif model.n_speakers < len(self.speakers):
            raise UserError(f"model.n_speakers={model.n_speakers} but the data has "
                            f"{len(self.speakers)} speakers; set model.n_speakers=0 to size it "
                            "from the data")

    def _loader(self) -> DataLoader:
        workers = self.job.data.num_workers
        # Without a step limit (a time budget only), the crops run on until the loop stops.
        steps = 2**62 if self.cfg.max_steps is None else self.cfg.max_steps - self.step
        return DataLoader(self.dataset, batch_size=self.cfg.batch_size // self.world.size,
                          sampler=StepSampler(self.step, steps,
                                              self.cfg.batch_size, self.world.rank,
                                              self.world.size),
                          num_workers=workers, persistent_workers=False,
                          pin_memory=self.device.type == "cuda", drop_last=True,
                          prefetch_factor=4 if workers else None)

    # ---------------------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {
            "format": checkpoint.FORMAT,
            "config": asdict(self.job),
            "step": self.step,
            "sample_rate": self.sample_rate,
            "speakers": self.speakers,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_n_averaged": int(self.ema.n_averaged) if self.ema is not None else 0,
            "optimizer": self.optimizer.state_dict(),
            "elapsed_s": self.spent(),
            "best_bits": float(self.best_bits),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def step_path(self) -> Path:
        return self.ckpt_dir / f"step-{self.step:08d}.pt"

    def restore(self, path: Path) -> None:
        ckpt = checkpoint.load(path, map_location=self.device)
        stored = ckpt["config"]["model"]
        if stored != asdict(self.job.model):
            diff = {k: (stored.get(k), v) for k, v in asdict(self.job.model).items()
                    if stored.get(k) != v}
            raise checkpoint.CheckpointError(
                f"{path} holds a model with a different config (checkpoint vs requested: {diff}); "
                "resume with the same model=… or start a new run with another name=…")
        if ckpt.get("speakers", []) != self.speakers:
            raise checkpoint.CheckpointError(
                f"{path} was trained with speakers {ckpt.get('speakers')}, the data now has "
                f"{self.speakers}; resume on the same data or start a new run with name=…")
        changes = run_changes(ckpt["config"], asdict(self.job))
        if changes:
            listed = ", ".join(f"{k}={checks.shown(a)} (now {checks.shown(b)})"
                               for k, (a, b) in changes.items())
            if self.cfg.resume_changes != "allow":
                raise checkpoint.CheckpointError(
                    f"{path} was trained with other settings: {listed}; resume with the same "
                    "values, or pass train.resume_changes=allow to continue with the new ones")
            log.warning("resuming with changed settings (train.resume_changes=allow): %s",
                        listed)
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
            self.ema.n_averaged.fill_(ckpt["ema_n_averaged"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step = ckpt["step"]
        self.spent_before = float(ckpt.get("elapsed_s", 0.0))
        self.best_bits = ckpt.get("best_bits", math.inf)
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if ckpt["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
        log.info("resumed from %s at step %d", path, self.step)

    def resume_or_start(self) -> None:
        existing = checkpoint.step_checkpoints(self.ckpt_dir) if self.ckpt_dir.is_dir() else []
        resume = self.cfg.resume
        if resume is None:
            if existing:
                raise checkpoint.CheckpointError(
                    f"{self.run_dir} already holds checkpoints of an earlier run: pass "
                    "train.resume=auto to continue it, or name=<new name> to start another")
            return
        if resume == "auto":
            if existing:
                self.restore(existing[-1])
            else:
                log.info("train.resume=auto: no checkpoint in %s, starting fresh", self.ckpt_dir)
            return
        self.restore(checkpoint.resolve(resume))

    # ------------------------------------------------------------------------------- training
    def eval_model(self) -> WaveNet:
        return self.ema.module if self.ema is not None else self.model

    def spent(self) -> float:
        """Seconds of training loop so far, earlier runs of this checkpoint's lineage included."""
        return self.spent_before + time.monotonic() - self.loop_start

    def time_up(self) -> bool:
        """Whether train.max_time is spent; also updates the schedule's time fraction. All
        processes agree on both (the mean of their clocks), so they stop at the same step and
        use the same learning rate."""
        if self.cfg.max_seconds is None:
            return False
        spent = self.world.mean(self.spent(), self.device)
        self.time_fraction = spent / self.cfg.max_seconds
        return spent >= self.cfg.max_seconds

    def finished(self) -> bool:
        """Whether the checkpoint resumed from had reached the step limit or spent the time
        budget (what it stored, so that every process reads the same)."""
        return ((self.cfg.max_steps is not None and self.step >= self.cfg.max_steps)
                or (self.cfg.max_seconds is not None
                    and self.spent_before >= self.cfg.max_seconds))

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float, bool]:
        """One optimizer step on a batch of crops (audio (B, RF + N), speaker (B,), mel
        (B, n_mels, frames)). Returns the loss in nats (mean over all processes), the gradient
        norm, and whether the step was taken: one with a non-finite loss or gradient is not."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        x = self.model.dist.encode(batch["audio"])
        self.model.train()
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=self.cfg.precision == "bf16")
        with autocast:
            # Column t predicts sample t+1; only columns with a full receptive field are scored.
            params = self.forward(x[:, :-1], batch.get("speaker"), batch.get("mel"),
                                  mel_offset=int(batch["mel_offset"][0]) if "mel" in batch else 0,
                                  first_output=self.rf - 1)
        loss = self.model.dist.nll(params, x[:, self.rf:])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP, gradients arrive averaged over the processes
        clip = self.cfg.grad_clip if self.cfg.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        loss_value = self.world.mean(loss.item(), self.device)
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, grad_norm, False
        lr = self.cfg.lr * lr_factor(self.step, self.cfg, self.time_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return loss_value, grad_norm, True

    def evaluate(self, writer) -> float:
        cfg = self.cfg
        max_samples = (None if cfg.eval_max_seconds is None
                       else int(cfg.eval_max_seconds * self.sample_rate))
        result = heldout_nll(self.eval_model(), self.valid_cache, self.valid_ids, max_samples,
                             self.valid_cond)
        bits = result["bits_per_sample"]
        writer.add_scalar("valid/bits_per_sample", bits, self.step)
        writer.add_scalar("valid/entropy_bits", result["entropy_bits"], self.step)
        log.info("step %d: held-out %.3f bits/sample (mu-law histogram entropy %.3f)",
                 self.step, bits, result["entropy_bits"])
        if bits < self.best_bits:
            self.best_bits = bits
            checkpoint.save_atomic(self.state(), self.ckpt_dir / "best.pt")
        return bits

    def log_audio(self, writer) -> None:
        from wavenet.plots import spectrogram_figure

        model = self.eval_model()
        length = int(self.cfg.sample_seconds * self.sample_rate)
        g = torch.Generator(device=self.device).manual_seed(self.cfg.seed + self.step)
        speaker = torch.zeros(1, dtype=torch.long, device=self.device) if self.speakers else None
        mel = None
        if self.job.model.mel is not None:  # copy synthesis of the start of a held-out file
            if not self.valid_ids:
                return
            item = file_item(self.valid_cache, self.valid_ids[0],
                             replace(self.valid_cond, context=0), 0,
                             min(length, self.valid_cache.files[self.valid_ids[0]].length))
            mel = item["mel"][None].to(self.device)
        values = generate(model, length, generator=g, speaker=speaker, mel=mel)
        audio = model.dist.decode(values[0].cpu()).numpy()
        writer.add_audio("sample/audio", audio[None], self.step, sample_rate=self.sample_rate)
        writer.add_figure("sample/spectrogram", spectrogram_figure(audio, self.sample_rate),
                          self.step)

    def fit(self) -> Path:
        from torch.utils.tensorboard import SummaryWriter

        cfg, main = self.cfg, self.world.is_main
        self.resume_or_start()
        if self.finished():
            path = checkpoint.step_checkpoints(self.ckpt_dir)[-1]
            if main:
                print(f"already trained to step {self.step} ({self._limits()}): nothing to do; "
                      f"checkpoint: {path}")
            return path
        if main:
            rf_ms = 1000.0 * self.rf / self.sample_rate
            print(f"model: {self.model.num_parameters():,} parameters, receptive field {self.rf} "
                  f"samples ({rf_ms:.1f} ms at {self.sample_rate} Hz); device {self.device}"
                  + (f" x {self.world.size} processes" if self.world.distributed else "")
                  + f"; run folder {self.run_dir}")
            print(f"training until {self._limits()}"
                  + (f"; {_clock(self.spent_before)} of the budget already used"
                     if self.spent_before and cfg.max_seconds is not None else ""))
        writer = (SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step)
                  if main else None)
        crop_pred = self.dataset.crop_length - self.rf
        bar = progress_bar(total=cfg.max_steps, initial=self.step,
                           disable=not (cfg.progress and main), unit="step")
        last_saved, bad_steps = None, 0
        tick, samples_since = time.perf_counter(), 0
        self.loop_start = time.monotonic()
        self.time_up()  # the schedule's time fraction where a resumed budget left off
        try:
            with StopRequest() as stop:
                for batch in self._loader():
                    loss, grad_norm, taken = self.train_step(batch)
                    self.step += 1
                    samples_since += batch["audio"].shape[0] * self.world.size * crop_pred
                    bar.update(1)
                    if not taken:
                        bad_steps += 1
                        log.warning("step %d: loss %s, gradient norm %s: step skipped (%d in a "
                                    "row; training stops at train.max_bad_steps=%d)", self.step,
                                    loss, grad_norm, bad_steps, cfg.max_bad_steps)
                        if bad_steps >= cfg.max_bad_steps:
                            break
                    else:
                        bad_steps = 0
                    time_up = self.time_up()
                    last = self.step == cfg.max_steps or time_up
                    if main and taken and (self.step % cfg.log_every == 0 or last):
                        rate = samples_since / (time.perf_counter() - tick)
                        tick, samples_since = time.perf_counter(), 0
                        self._log_scalars(writer, bar, loss, grad_norm, rate)
                    if main and self.valid_ids and (self.step % cfg.eval_every == 0 or last):
                        self.evaluate(writer)
                    if main and cfg.sample_every and self.step % cfg.sample_every == 0:
                        self.log_audio(writer)
                    # No checkpoint inside a run of skipped steps: the newest one then
                    # predates the trouble.
                    if taken and (self.step % cfg.checkpoint_every == 0 or last
                                  or self.step == cfg.stop_at):
                        last_saved = self.save()
                    # Every process must stop at the same step, whichever got the signal.
                    if self.world.any(stop.requested, self.device) or time_up or (
                            cfg.stop_at is not None and self.step >= cfg.stop_at):
                        break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if bad_steps >= cfg.max_bad_steps:
            self._diverged()
        if last_saved is None or last_saved != self.step_path():
            last_saved = self.save()
        if main:
            print(f"checkpoint: {last_saved} (step {self.step}"
                  + (f", best held-out {self.best_bits:.3f} bits/sample"
                     if np.isfinite(self.best_bits) else "") + ")")
        return last_saved

    def _limits(self) -> str:
        """The run's end, e.g. "step 2000 or 2h of training, whichever comes first"."""
        cfg = self.cfg
        steps = None if cfg.max_steps is None else f"step {cfg.max_steps}"
        budget = None if cfg.max_seconds is None else f"{_clock(cfg.max_seconds)} of training"
        if steps and budget:
            return f"{steps} or {budget}, whichever comes first"
        return steps or budget

    def _log_scalars(self, writer, bar, loss: float, grad_norm: float, rate: float) -> None:
        bits = loss / math.log(2)
        writer.add_scalar("train/loss", loss, self.step)
        writer.add_scalar("train/bits_per_sample", bits, self.step)
        writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
        writer.add_scalar("train/grad_norm", grad_norm, self.step)
        writer.add_scalar("train/samples_per_s", rate, self.step)
        bar.set_postfix(loss=f"{loss:.3f}", bits=f"{bits:.2f}", samples_s=f"{rate:,.0f}")
        if not self.cfg.progress:
            log.info("step %d: loss %.4f (%.3f bits/sample), %.0f samples/s",
                     self.step, loss, bits, rate)

    def _diverged(self) -> None:
        """Stop after max_bad_steps non-finite steps in a row. The newest checkpoint predates
        them (skipped steps change nothing and write none); with none yet, the current weights,
        which no non-finite step touched, are saved."""
        first = self.step - self.cfg.max_bad_steps + 1
        existing = checkpoint.step_checkpoints(self.ckpt_dir) if self.ckpt_dir.is_dir() else []
        path = existing[-1] if existing else self.save()
        raise TrainingDiverged(
            f"training diverged: steps {first}-{self.step} all had a non-finite loss or gradient; "
            f"{path} is from before that: lower train.lr (or set train.grad_clip) and continue "
            "with train.resume=auto")

    def save(self) -> Path | None:
        """Write this step's checkpoint (rank 0; other processes return None)."""
        if not self.world.is_main:
            return None
        path = self.step_path()
        checkpoint.save_atomic(self.state(), path)
        for old in checkpoint.step_checkpoints(self.ckpt_dir)[:-self.cfg.keep_last]:
            old.unlink()
        return path


def _clock(seconds: float) -> str:
    """3725 -> "1h 2m 5s"."""
    s = int(round(seconds))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return " ".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"


def train(job: TrainJob, run_dir: str | Path) -> Path:
    """Train (or resume) and return the path of the final checkpoint."""
    checks.validate(job)
    trainer = Trainer(job, Path(run_dir))
    try:
        return trainer.fit()
    finally:
        trainer.world.leave()
