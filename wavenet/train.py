"""Training: `train(job, run_dir) -> checkpoint path`, a plain function the CLI wraps.

The parts, one job each: `TrainData` (train_data.py) sets up what is read; `TrainState` is what a
checkpoint holds and restores; `Stepper` takes one optimizer step; `Clock` keeps the time budget;
`Periodic` says which periodic work (log, evaluate, sample, checkpoint) is due; `Trainer` runs the
loop that ties them together.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from wavenet import checkpoint, checks
from wavenet.config import TrainConfig, TrainJob
from wavenet.data import INPUT_NOISE_STREAM, file_frames, seeded_draws
from wavenet.distributed import World
from wavenet.errors import UserError
from wavenet.evaluate import heldout_nll
from wavenet.generate import generate
from wavenet.model import WaveNet, WaveNetConfig
from wavenet.runtime import (
    precision,
    progress_bar,
    resolve_device,
    set_threads,
    training_precision,
)
from wavenet.train_data import TrainData

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
    floor = min(1.0, cfg.final_lr / cfg.lr)
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


# Settings added since checkpoints were first written, with the value that does what runs did
# before the key existed: a checkpoint without the key is compared as if it held that value.
BEFORE_KEY_EXISTED = {"data.flip_polarity": False, "data.speed_perturb": 0.0,
                      "train.input_noise": 0.0}


def run_changes(stored: dict, requested: dict) -> dict[str, tuple]:
    """Settings (dotted keys, model excluded) that differ between a checkpoint's job and the
    requested one in a way that changes the run: {key: (stored, requested)}."""
    old, new = {**BEFORE_KEY_EXISTED, **_flat(stored)}, _flat(requested)
    return {k: (old[k], new[k]) for k in sorted(old.keys() & new.keys())
            if not k.startswith("model.") and k not in FREE_ON_RESUME and old[k] != new[k]}


class TrainState:
    """Everything a checkpoint holds and restores: the model, optimizer and EMA, the step, the
    best held-out score and the training time spent (RNG states are saved with it)."""

    def __init__(self, job: TrainJob, device: torch.device):
        cfg = job.train
        self.arithmetic = training_precision(device, cfg.precision)
        torch.manual_seed(cfg.seed)
        self.model = WaveNet(job.model).to(device)
        opt_cls = torch.optim.AdamW if cfg.weight_decay else torch.optim.Adam
        self.optimizer = opt_cls(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                 weight_decay=cfg.weight_decay)
        self.ema = (AveragedModel(self.model, multi_avg_fn=ema_update_fn(cfg.ema_decay),
                                  use_buffers=True)
                    if cfg.ema_decay is not None else None)
        self.step = 0
        self.best_bits = math.inf
        self.spent = 0.0  # seconds of training loop up to the checkpoint it was restored from

    def eval_model(self) -> WaveNet:
        """The weights evaluation and sampling use: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def to_checkpoint(self, job: TrainJob, data: TrainData, spent: float) -> dict:
        return {
            "format": checkpoint.FORMAT,
            "config": asdict(job),
            "step": self.step,
            "sample_rate": data.sample_rate,
            "speakers": data.speakers,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_n_averaged": int(self.ema.n_averaged) if self.ema is not None else 0,
            "optimizer": self.optimizer.state_dict(),
            "arithmetic": self.arithmetic,
            "elapsed_s": spent,
            "best_bits": float(self.best_bits),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def load(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
            self.ema.n_averaged.fill_(ckpt["ema_n_averaged"])
        # The checkpoint gives the optimizer's state (its moments), the job its settings:
        # load_state_dict would bring back the stored betas and weight decay (and AdamW's
        # decoupling), so that a resume with changed settings would silently keep the old.
        settings = [{k: v for k, v in group.items() if k != "params"}
                    for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group, own in zip(self.optimizer.param_groups, settings, strict=True):
            group.update(own)
        self.step = ckpt["step"]
        self.spent = float(ckpt.get("elapsed_s", 0.0))
        self.best_bits = ckpt.get("best_bits", math.inf)
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if ckpt["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])


def check_resumable(path: Path, ckpt: dict, job: TrainJob,
                    speakers: list[str] | None = None, arithmetic: str | None = None) -> None:
    """Refuse to resume a checkpoint into a different run (see FREE_ON_RESUME). Without
    `speakers` (before the data is read), what depends on the data is not checked yet.
    `arithmetic` is what train.precision runs as here (auto's choice depends on the machine)."""
    # Through the dataclass, keys added since the checkpoint was written take their defaults.
    stored = asdict(WaveNetConfig(**ckpt["config"]["model"]))
    requested = asdict(job.model)
    if stored["mel"] and requested["mel"] and stored["mel"]["sample_rate"] is None:
        stored["mel"]["sample_rate"] = requested["mel"]["sample_rate"]  # not recorded before
    if speakers is None and not requested["n_speakers"]:  # sized from the data later
        requested["n_speakers"] = stored.get("n_speakers")
    if stored != requested:
        diff = {k: (stored.get(k), v) for k, v in requested.items() if stored.get(k) != v}
        raise checkpoint.CheckpointError(
            f"{path} holds a model with a different config (checkpoint vs requested: {diff}); "
            "resume with the same model=… or start a new run with another name=…")
    if speakers is not None and ckpt.get("speakers", []) != speakers:
        raise checkpoint.CheckpointError(
            f"{path} was trained with speakers {ckpt.get('speakers')}, the data now has "
            f"{speakers}; resume on the same data or start a new run with name=…")
    if speakers is not None:
        return  # the settings were checked before the data was read
    changes = run_changes(ckpt["config"], asdict(job))
    ran = ckpt.get("arithmetic")  # not recorded before train.precision=auto existed
    if arithmetic and ran and ran != arithmetic and "train.precision" not in changes:
        changes["train.precision"] = (f"{ckpt['config']['train']['precision']} as {ran}",
                                      f"{job.train.precision} as {arithmetic} on this machine")
    if changes:
        listed = ", ".join(f"{k}={checks.shown(a)} (now {checks.shown(b)})"
                           for k, (a, b) in changes.items())
        if job.train.resume_changes != "allow":
            raise checkpoint.CheckpointError(
                f"{path} was trained with other settings: {listed}; resume with the same "
                "values, or pass train.resume_changes=allow to continue with the new ones")
        log.warning("resuming with changed settings (train.resume_changes=allow): %s", listed)


class Stepper:
    """One optimizer step: the forward (under autocast, compiled, data-parallel, as configured),
    the loss, the backward, clipping, the scheduled learning rate, the update and the EMA. A step
    whose loss or gradient is not finite changes nothing."""

    def __init__(self, state: TrainState, cfg: TrainConfig, world: World, device: torch.device):
        self.state, self.cfg, self.world, self.device = state, cfg, world, device
        self.precision = state.arithmetic
        forward = state.model
        if world.distributed:
            forward = DistributedDataParallel(
                forward, device_ids=[device] if device.type == "cuda" else None)
        self.forward = torch.compile(forward) if cfg.compile else forward

    def __call__(self, batch: dict[str, torch.Tensor],
                 time_fraction: float = 0.0) -> tuple[float, float, bool]:
        """One step on a batch of crops (audio (B, RF + N), speaker (B,), mel (B, n_mels, F),
        mel_offset (B,)); time_fraction: of train.max_time spent. Returns the loss in nats (mean
        over all processes), the gradient norm, and whether the step was taken."""
        state, cfg, model = self.state, self.cfg, self.state.model
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        mel_offset = int(batch["mel_offset"][0]) if "mel" in batch else 0
        x = model.encode_audio(batch["audio"], batch.get("mel"), mel_offset, batch.get("before"))
        rf = model.receptive_field
        model.train()
        inputs = x[:, :-1]
        if cfg.input_noise:
            draws = [seeded_draws(cfg.seed, int(crop), INPUT_NOISE_STREAM)
                     for crop in batch["crop"]]
            inputs = jitter_classes(inputs, cfg.input_noise, model.cfg.quantization_channels,
                                    draws)
        with precision(self.device, self.precision):
            # Column t predicts sample t+1; only columns with a full receptive field are scored.
            params = self.forward(inputs, batch.get("speaker"), batch.get("mel"),
                                  mel_offset=mel_offset,
                                  first_output=rf - 1)
        loss = model.dist.nll(params, x[:, rf:])
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP, gradients arrive averaged over the processes
        clip = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
        loss_value = self.world.mean(loss.item(), self.device)
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            state.optimizer.zero_grad(set_to_none=True)
            return loss_value, grad_norm, False
        lr = cfg.lr * lr_factor(state.step, cfg, time_fraction)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        state.optimizer.step()
        if state.ema is not None:
            state.ema.update_parameters(model)
        return loss_value, grad_norm, True


def jitter_classes(classes: torch.Tensor, sigma: float, levels: int,
                   draws: list[np.random.Generator]) -> torch.Tensor:
    """classes (B, T) moved by Gaussian noise of `sigma` classes, rounded, kept in
    [0, levels - 1]: the inputs of training with train.input_noise. Row b is a pure function of
    draws[b], which the step seeds from its crop's number, so a resumed run, or one on another
    number of processes, sees the same noise."""
    noise = np.stack([np.rint(d.normal(0.0, sigma, classes.shape[1])) for d in draws])
    return (classes + torch.from_numpy(noise.astype(np.int64)).to(classes.device)
            ).clamp_(0, levels - 1)


class Clock:
    """The training time budget (train.max_time): time spent, earlier runs included, and
    whether it is up. All processes agree (on the mean of their clocks), so they stop at the
    same step and use the same learning rate."""

    def __init__(self, cfg: TrainConfig, world: World, device: torch.device):
        self.budget, self.world, self.device = cfg.max_seconds, world, device
        self.before, self.started = 0.0, time.monotonic()
        self.fraction = 0.0  # of the budget, as last agreed
        self.agreed = 0.0  # seconds spent, as last agreed

    def start(self, spent_before: float) -> None:
        self.before, self.started = spent_before, time.monotonic()
        self.check()

    def spent(self) -> float:
        """Seconds spent; never less than what the processes last agreed on, so that a
        checkpoint (written by rank 0 alone) stores a time every process would accept."""
        return max(self.agreed, self.before + time.monotonic() - self.started)

    def check(self) -> bool:
        """Whether the budget is spent; updates `fraction`."""
        if self.budget is None:
            return False
        self.agreed = self.world.mean(self.spent(), self.device)
        self.fraction = self.agreed / self.budget
        return self.agreed >= self.budget


class Periodic:
    """Which periodic work is due after a step, from the configured intervals; the last step
    of a run gets a log line, an evaluation and a checkpoint whatever the intervals."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def log(self, step: int, last: bool) -> bool:
        return step % self.cfg.log_every == 0 or last

    def evaluate(self, step: int, last: bool) -> bool:
        return step % self.cfg.eval_every == 0 or last

    def sample(self, step: int) -> bool:
        return self.cfg.sample_every is not None and step % self.cfg.sample_every == 0

    def checkpoint(self, step: int, last: bool) -> bool:
        return step % self.cfg.checkpoint_every == 0 or last or step == self.cfg.stop_at


class Trainer:
    """One training run: its data, state, step, clock and periodic work, and the loop."""

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
        # A resume into another run is refused before any preprocessing.
        self.resumed_from = self._resume_path()
        self._resumed = None
        if self.resumed_from is not None:
            self._resumed = checkpoint.load(self.resumed_from, map_location=self.device)
            check_resumable(self.resumed_from, self._resumed, job,
                            arithmetic=training_precision(self.device, self.cfg.precision))
        # The data next: a multi-speaker model's size comes from it.
        self.data = TrainData.open(job, self.world)
        self.state = TrainState(job, self.device)
        self.stepper = Stepper(self.state, self.cfg, self.world, self.device)
        self.clock = Clock(self.cfg, self.world, self.device)
        self.periodic = Periodic(self.cfg)

    @property
    def model(self) -> WaveNet:
        return self.state.model

    @property
    def step(self) -> int:
        return self.state.step

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float, bool]:
        return self.stepper(batch, self.clock.fraction)

    # ---------------------------------------------------------------------------- checkpoints
    def step_path(self) -> Path:
        return self.ckpt_dir / f"step-{self.step:08d}.pt"

    def _resume_path(self) -> Path | None:
        """The checkpoint train.resume names (None: start fresh); refuses to overwrite a run."""
        existing = checkpoint.step_checkpoints(self.ckpt_dir) if self.ckpt_dir.is_dir() else []
        resume = self.cfg.resume
        if resume is None:
            if existing:
                raise checkpoint.CheckpointError(
                    f"{self.run_dir} already holds checkpoints of an earlier run: pass "
                    "train.resume=auto to continue it, or name=<new name> to start another")
            return None
        if resume == "auto":
            if not existing:
                log.info("train.resume=auto: no checkpoint in %s, starting fresh", self.ckpt_dir)
            return existing[-1] if existing else None
        return checkpoint.newest(resume)

    def resume_or_start(self) -> None:
        """Load the checkpoint to resume, now that the data (and so the speakers) are known."""
        if self._resumed is None:
            return
        check_resumable(self.resumed_from, self._resumed, self.job, self.data.speakers)
        self.state.load(self._resumed)
        self._resumed = None
        log.info("resumed from %s at step %d", self.resumed_from, self.step)
        if self.world.is_main and self.ckpt_dir.is_dir():
            aside = checkpoint.set_aside_after(self.ckpt_dir, self.step)
            if aside is not None:
                log.warning("%s held checkpoints from beyond step %d (a later part of the run "
                            "this resume leaves); moved them to %s", self.ckpt_dir, self.step,
                            aside)

    def save(self) -> Path | None:
        """Write this step's checkpoint (rank 0; other processes return None)."""
        if not self.world.is_main:
            return None
        path = self.step_path()
        checkpoint.save_atomic(self._checkpoint(), path)
        for old in checkpoint.step_checkpoints(self.ckpt_dir)[:-self.cfg.keep_last]:
            old.unlink()
        return path

    def _checkpoint(self) -> dict:
        return self.state.to_checkpoint(self.job, self.data, self.clock.spent())

    def finished(self) -> bool:
        """Whether the checkpoint resumed from had reached the step limit, `stop_at` or the end
        of the time budget (what it stored, so that every process reads the same)."""
        cfg = self.cfg
        return ((cfg.max_steps is not None and self.step >= cfg.max_steps)
                or (cfg.stop_at is not None and self.step >= cfg.stop_at)
                or (cfg.max_seconds is not None and self.state.spent >= cfg.max_seconds))

    # ------------------------------------------------------------------------------ the loop
    def fit(self) -> Path:
        from torch.utils.tensorboard import SummaryWriter

        cfg, main = self.cfg, self.world.is_main
        self.resume_or_start()
        if self.finished():
            path = self.resumed_from
            if main:
                print(f"already trained: {self.resumed_from} is at step {self.step}, and the run "
                      f"ends at {self._limits()}; nothing to do")
            return path
        if main:
            self._announce()
        writer = (SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step)
                  if main else None)
        crop_pred = self.data.dataset.crop_length - self.model.receptive_field
        bar = progress_bar(total=cfg.max_steps, initial=self.step,
                           disable=not (cfg.progress and main), unit="step")
        last_saved, bad_steps = None, 0
        tick, samples_since = time.perf_counter(), 0
        self.clock.start(self.state.spent)
        try:
            with StopRequest() as stop:
                for batch in self.data.loader(self.job, self.step, self.world, self.device):
                    loss, grad_norm, taken = self.train_step(batch)
                    self.state.step += 1
                    step = self.step
                    samples_since += batch["audio"].shape[0] * self.world.size * crop_pred
                    bar.update(1)
                    if not taken:
                        bad_steps += 1
                        log.warning("step %d: loss %s, gradient norm %s: step skipped (%d in a "
                                    "row; training stops at train.max_bad_steps=%d)", step,
                                    loss, grad_norm, bad_steps, cfg.max_bad_steps)
                        if bad_steps >= cfg.max_bad_steps:
                            break
                    else:
                        bad_steps = 0
                    time_up = self.clock.check()
                    last = step == cfg.max_steps or time_up
                    if main and taken and self.periodic.log(step, last):
                        rate = samples_since / (time.perf_counter() - tick)
                        tick, samples_since = time.perf_counter(), 0
                        self._log_scalars(writer, bar, loss, grad_norm, rate)
                    if main and self.data.valid_ids and self.periodic.evaluate(step, last):
                        self.evaluate(writer)
                    if main and self.periodic.sample(step):
                        self.log_audio(writer)
                    # No checkpoint inside a run of skipped steps: the newest one then
                    # predates the trouble.
                    if taken and self.periodic.checkpoint(step, last):
                        last_saved = self.save()
                    # Every process must stop at the same step, whichever got the signal.
                    if self.world.any(stop.requested, self.device) or time_up or (
                            cfg.stop_at is not None and step >= cfg.stop_at):
                        break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if bad_steps >= cfg.max_bad_steps:
            self._diverged()
        if bad_steps:  # the run ended inside a run of skipped steps: no checkpoint of it
            last_saved = self._checkpoint_before(bad_steps)
        elif last_saved is None or last_saved != self.step_path():
            last_saved = self.save()
        if main:
            print(f"checkpoint: {last_saved} (step {self.step}"
                  + (f", best held-out {self.state.best_bits:.3f} bits/sample"
                     if np.isfinite(self.state.best_bits) else "") + ")")
        return last_saved

    # -------------------------------------------------------------------- the periodic work
    def evaluate(self, writer) -> float:
        cfg, data = self.cfg, self.data
        max_samples = (None if cfg.eval_max_seconds is None
                       else int(cfg.eval_max_seconds * data.sample_rate))
        result = heldout_nll(self.state.eval_model(), data.valid_cache, data.valid_ids,
                             max_samples, data.valid_cond)
        bits = result["bits_per_sample"]
        writer.add_scalar("valid/bits_per_sample", bits, self.step)
        writer.add_scalar("valid/entropy_bits", result["entropy_bits"], self.step)
        log.info("step %d: held-out %.3f bits/sample (histogram entropy %.3f)",
                 self.step, bits, result["entropy_bits"])
        if "waveform_bits_per_sample" in result:
            writer.add_scalar("valid/waveform_bits_per_sample",
                              result["waveform_bits_per_sample"], self.step)
            log.info("step %d: held-out %.3f bits/sample of the waveform's own classes",
                     self.step, result["waveform_bits_per_sample"])
        if bits < self.state.best_bits:
            self.state.best_bits = bits
            checkpoint.save_atomic(self._checkpoint(), self.ckpt_dir / "best.pt")
        return bits

    def log_audio(self, writer) -> None:
        from wavenet.plots import spectrogram_figure

        model, data = self.state.eval_model(), self.data
        length = int(self.cfg.sample_seconds * data.sample_rate)
        g = torch.Generator(device=self.device).manual_seed(self.cfg.seed + self.step)
        speaker = torch.zeros(1, dtype=torch.long, device=self.device) if data.speakers else None
        mel = None
        if self.job.model.mel is not None:  # copy synthesis of the start of a held-out file
            hop = self.job.model.mel.hop_length
            first = data.valid_ids[0] if data.valid_ids else None
            if first is not None:
                length = min(length, data.valid_cache.files[first].length) // hop * hop
            if first is None or not length:
                return
            following = length // hop + self.job.model.mel_context_frames
            mel = file_frames(data.valid_cache, first, 0, following)[None].to(self.device)
        values = generate(model, length, generator=g, speaker=speaker, mel=mel)
        audio = model.audio_decoder(mel)(values[:1])[0]
        writer.add_audio("sample/audio", audio[None], self.step, sample_rate=data.sample_rate)
        writer.add_figure("sample/spectrogram", spectrogram_figure(audio, data.sample_rate),
                          self.step)

    def _log_scalars(self, writer, bar, loss: float, grad_norm: float, rate: float) -> None:
        bits = loss / math.log(2)
        writer.add_scalar("train/loss", loss, self.step)
        writer.add_scalar("train/bits_per_sample", bits, self.step)
        writer.add_scalar("train/lr", self.state.optimizer.param_groups[0]["lr"], self.step)
        writer.add_scalar("train/grad_norm", grad_norm, self.step)
        writer.add_scalar("train/samples_per_s", rate, self.step)
        bar.set_postfix(loss=f"{loss:.3f}", bits=f"{bits:.2f}", samples_s=f"{rate:,.0f}")
        if not self.cfg.progress:
            log.info("step %d: loss %.4f (%.3f bits/sample), %.0f samples/s",
                     self.step, loss, bits, rate)

    def _announce(self) -> None:
        rf, rate = self.model.receptive_field, self.data.sample_rate
        print(f"model: {self.model.num_parameters():,} parameters, receptive field {rf} "
              f"samples ({1000.0 * rf / rate:.1f} ms at {rate} Hz); device {self.device}"
              + (f" x {self.world.size} processes" if self.world.distributed else "")
              + f", {self.stepper.precision} arithmetic"
              + (" (train.precision=auto)" if self.cfg.precision == "auto" else "")
              + f"; run folder {self.run_dir}")
        print(f"training until {self._limits()}"
              + (f"; {_clock(self.state.spent)} of the budget already used"
                 if self.state.spent and self.cfg.max_seconds is not None else ""))

    def _limits(self) -> str:
        """The run's end, e.g. "step 2000 or 2h of training, whichever comes first"."""
        cfg = self.cfg
        steps = None if cfg.max_steps is None else f"step {cfg.max_steps}"
        budget = None if cfg.max_seconds is None else f"{_clock(cfg.max_seconds)} of training"
        if steps and budget:
            return f"{steps} or {budget}, whichever comes first"
        return steps or budget

    def _checkpoint_before(self, bad_steps: int) -> Path | None:
        """The checkpoint to continue from when the last `bad_steps` steps were skipped: the
        newest one (none is written inside a run of skipped steps), or, with none yet, the
        weights now, which no skipped step changed, saved as of the step before the first
        skipped one, so that a resume goes through those steps' crops again."""
        existing = checkpoint.step_checkpoints(self.ckpt_dir) if self.ckpt_dir.is_dir() else []
        if existing:
            return existing[-1]
        now = self.state.step
        self.state.step = now - bad_steps
        try:
            return self.save()
        finally:
            self.state.step = now

    def _diverged(self) -> None:
        """Stop after max_bad_steps non-finite steps in a row, naming a checkpoint from
        before them."""
        first = self.step - self.cfg.max_bad_steps + 1
        path = self._checkpoint_before(self.cfg.max_bad_steps)
        raise TrainingDiverged(
            f"training diverged: steps {first}-{self.step} all had a non-finite loss or gradient; "
            f"{path or 'the newest checkpoint'} is from before that: lower train.lr (or set "
            "train.grad_clip) and continue with train.resume=auto")


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
