"""Job configurations: plain dataclasses that the Hydra layer fills and validates.

Nothing here imports Hydra or OmegaConf; `wavenet.cli` registers these as structured configs, so
an unknown key or a wrong type is rejected with Hydra's own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wavenet import checks
from wavenet.data import DataConfig
from wavenet.errors import UserError
from wavenet.model import WaveNetConfig
from wavenet.quantize import DEFAULT_PRECISION
from wavenet.quantize import PRECISIONS as WEIGHT_PRECISIONS
from wavenet.runtime import PRECISIONS

# Generation methods (wavenet.generate): they draw the same samples.
METHODS = ("fast", "incremental", "naive")


@dataclass
class TrainConfig:
    """Optimization, logging and checkpointing.

    Attributes:
        max_steps: optimizer steps in all (a resumed run continues up to this); None: no step
            limit (then max_time must be set).
        max_time: a wall-clock budget for the training loop, e.g. "10m", "2h", "1h30m" (plain
            numbers are seconds); training stops with a checkpoint when it is spent, and the
            learning-rate schedule spans it. With max_steps also set, whichever is reached
            first ends the run (and the schedule follows whichever is further along). Time
            already spent is stored in checkpoints, so a resumed run keeps the same budget.
        batch_size: crops per step, over all processes (torchrun splits it evenly), so a run
            resumes unchanged on another number of processes. 4 with lr 8e-3 won the quality
            benchmark's 6-minute search on the bundled piano and speech (over batch 8 and 2,
            lr 1e-3 … 8e-3; README, Evaluate): at a CPU budget, more steps beat bigger ones.
        lr: peak learning rate (Adam); see batch_size.
        final_lr: learning rate that cosine decay reaches at the end of the run (max_steps or
            max_time); one above lr is taken as lr; None keeps lr constant.
        warmup_steps: linear warm-up from 0 to lr.
        betas: Adam's (beta1, beta2).
        weight_decay: decoupled weight decay (AdamW); 0 is plain Adam. 0.01, then 0.05, held
            off overfitting the bundled corpora at 12 CPU-minutes (README, Evaluate: fourth and
            fifth searches).
        grad_clip: clip the global gradient norm to this; None does not clip.
        input_noise: standard deviation, in mu-law classes, of Gaussian noise (rounded to
            whole classes) added to the past samples a "mulaw" model reads in training; the
            targets stay clean. The model learns to continue from contexts as imperfect as its
            own samples will be in generation (LPCNet injects noise for the same reason);
            0 is none.
        ema_decay: decay of the exponential moving average of weights; None turns EMA off.
        log_every: steps between logged training scalars.
        eval_every: steps between held-out evaluations (and best-checkpoint updates).
        eval_max_seconds: held-out audio scored per evaluation; None scores all of it.
        sample_every: steps between audio snippets in TensorBoard; None turns them off.
        sample_seconds: length of those snippets.
        checkpoint_every: steps between checkpoints (one is always written at the end).
        keep_last: step checkpoints kept besides best.pt.
        resume: "auto" continues from the newest checkpoint in the run folder (or starts fresh
            if there is none); a path continues from that checkpoint; None starts fresh and
            refuses to overwrite a run folder that holds checkpoints.
        stop_at: stop (with a checkpoint) at this step without changing the schedule, to split a
            run into jobs under a cluster's time limit; resume with train.resume=auto.
        resume_changes: "refuse" stops a resume whose settings differ from the checkpoint's in
            a way that changes the run (learning rate, schedule, batch, step or time budget,
            data); "allow" continues with the new settings.
        max_bad_steps: steps in a row with a non-finite loss or gradient (each skipped with a
            warning) before training stops.
        seed: seeds initialization and the crop sequence.
        device: "auto" (CUDA if available, else CPU), "cpu" or "cuda".
        precision: "auto" (bf16 on a CPU with native bf16, else fp32: see
            `runtime.training_precision`), "fp32", "tf32" (CUDA tensor cores for matmuls and
            convolutions; fp32 on the CPU) or "bf16" (autocast: bf16 compute, fp32 weights
            and loss); see `runtime.precision`.
        compile: torch.compile the training forward.
        threads: CPU threads for PyTorch; None keeps its default.
        progress: show a progress bar.
    """

    max_steps: int | None = 2000
    max_time: str | None = None
    batch_size: int = 4
    lr: float = 8e-3
    final_lr: float | None = 1e-5
    warmup_steps: int = 200
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.05
    grad_clip: float | None = 1.0
    input_noise: float = 0.0
    ema_decay: float | None = 0.999
    log_every: int = 50
    eval_every: int = 500
    eval_max_seconds: float | None = 20.0
    sample_every: int | None = 1000
    sample_seconds: float = 1.0
    checkpoint_every: int = 500
    keep_last: int = 3
    resume: str | None = None
    stop_at: int | None = None
    resume_changes: str = "refuse"
    max_bad_steps: int = 5
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    threads: int | None = None
    progress: bool = True

    def __post_init__(self):
        k = "train."
        checks.integer(k + "max_steps", self.max_steps, 1, optional=True)
        self.max_seconds = checks.duration_seconds(k + "max_time", self.max_time)
        if self.max_steps is None and self.max_seconds is None:
            raise UserError("train.max_steps=null needs a time budget: set "
                                   "train.max_time=… (e.g. 2h) or a step count")
        checks.integer(k + "batch_size", self.batch_size, 1)
        checks.number(k + "lr", self.lr, 0, 10, lo_open=True)
        checks.number(k + "final_lr", self.final_lr, 0, optional=True)
        checks.integer(k + "warmup_steps", self.warmup_steps, 0)
        if len(self.betas) != 2:
            raise UserError(f"train.betas={list(self.betas)}: give two values, e.g. "
                                   "[0.9,0.999]")
        for i, beta in enumerate(self.betas):
            checks.number(f"{k}betas[{i}]", beta, 0, 1, hi_open=True)
        checks.number(k + "weight_decay", self.weight_decay, 0)
        checks.number(k + "grad_clip", self.grad_clip, 0, lo_open=True, optional=True)
        checks.number(k + "input_noise", self.input_noise, 0, 64)
        checks.number(k + "ema_decay", self.ema_decay, 0, 1, hi_open=True, optional=True)
        for key in ("log_every", "eval_every", "checkpoint_every", "keep_last", "max_bad_steps"):
            checks.integer(k + key, getattr(self, key), 1)
        checks.integer(k + "sample_every", self.sample_every, 1, optional=True)
        checks.number(k + "eval_max_seconds", self.eval_max_seconds, 0, lo_open=True,
                      optional=True)
        checks.number(k + "sample_seconds", self.sample_seconds, 0, 3600, lo_open=True)
        if self.resume not in (None, "auto"):
            self.resume = checks.path(self.resume)
        checks.integer(k + "stop_at", self.stop_at, 1, optional=True)
        checks.choice(k + "resume_changes", self.resume_changes, ("refuse", "allow"))
        checks.integer(k + "seed", self.seed, 0, 2**63 - 1)
        checks.device(k + "device", self.device)
        checks.choice(k + "precision", self.precision, PRECISIONS)
        checks.integer(k + "threads", self.threads, 1, optional=True)


@dataclass
class TrainJob:
    """Everything `train` needs; stored whole in every checkpoint.

    Attributes:
        name: run name; the run folder is outputs/<name>.
    """

    name: str = "wavenet"
    model: WaveNetConfig = field(default_factory=WaveNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        rate = self.data.audio.sample_rate
        for key in ("eval_max_seconds", "sample_seconds"):
            seconds = getattr(self.train, key)
            if seconds is not None and seconds * rate < 1:
                raise UserError(f"train.{key}={seconds:g} is less than one sample at {rate} Hz")
        if self.train.input_noise and self.model.output != "mulaw":
            raise UserError(f"train.input_noise={self.train.input_noise:g} perturbs mu-law "
                            f"classes; model.output={self.model.output} has none: set it to 0")
        mel = self.model.mel
        if mel is not None:
            if mel.sample_rate is None:
                mel.sample_rate = rate
            elif mel.sample_rate != rate:
                raise UserError(f"model.mel.sample_rate={mel.sample_rate} but "
                                f"data.audio.sample_rate={rate}: leave the first unset")
            nyquist = rate / 2
            checks.number("model.mel.f_max", mel.f_max, mel.f_min, nyquist, lo_open=True,
                          optional=True, hint=f"half of data.audio.sample_rate is {nyquist:g}")
            checks.number("model.mel.f_min", mel.f_min, 0, nyquist, hi_open=True)
            if self.data.speed_perturb:
                raise UserError(f"data.speed_perturb={self.data.speed_perturb:g} changes a "
                                "crop's pitch and timing, which its mel frames would no longer "
                                "describe: set data.speed_perturb=0 for a vocoder")


@dataclass
class SampleJob:
    """Generation from a checkpoint.

    Attributes:
        checkpoint: a checkpoint file, or a run folder (its best.pt, else its newest checkpoint).
        n_samples: streams generated together as one batch; one WAV and PNG each.
        seconds: length of each stream's new audio (vocoders: set by the mel frames instead).
        temperature: softmax temperature; 0 is greedy, below 1 is more conservative.
        seed: seeds the draws; the same seed gives the same audio.
        prime: an audio file to continue (resampled and normalized like the training data).
        prime_seconds: use only the last this-many seconds of the prime; None uses all of it.
        include_prime: write the prime before the continuation in each WAV.
        speaker: the voice, by name, for multi-speaker checkpoints.
        mel_from: vocoders: an audio file to re-synthesize from its log-mel spectrogram (copy
            synthesis), or a .npy array (frames, n_mels) of natural-log mel magnitudes computed
            as `wavenet.features.log_mel` does (hop, bands and rate as the checkpoint's); or a
            folder of them, each vocoded into out_dir at the same relative path (.wav).
        batch_size: vocoding a folder: files generated together.
        use_ema: use the EMA weights when the checkpoint has them.
        method: "fast" (the compiled C++ step on the CPU; the PyTorch incremental path on a GPU
            or without a C++ compiler), "incremental" (ring buffers, O(layers) per sample, in
            PyTorch) or "naive" (a full forward pass per sample). All draw the same samples.
        precision: the step's weights: "fp32", "bf16" (half the bytes: faster on the CPU) or
            "int8" (a quarter); see `wavenet.quantize` and the README's accuracy table.
        out_dir: where files go; None uses the Hydra run folder.
        device, threads, progress: as in training.
    """

    checkpoint: str = "???"
    n_samples: int = 1
    seconds: float = 2.0
    temperature: float = 1.0
    seed: int = 0
    prime: str | None = None
    prime_seconds: float | None = None
    include_prime: bool = True
    speaker: str | None = None
    mel_from: str | None = None
    batch_size: int = 8
    use_ema: bool = True
    method: str = "fast"
    precision: str = DEFAULT_PRECISION
    out_dir: str | None = None
    device: str = "auto"
    threads: int | None = None
    progress: bool = True

    def __post_init__(self):
        for key in ("checkpoint", "prime", "mel_from", "out_dir"):
            setattr(self, key, checks.path(getattr(self, key)))
        check_sampling(self.n_samples, self.seconds, self.temperature, self.seed,
                       self.prime_seconds, self.method, self.threads, n_key="n_samples",
                       precision=self.precision)
        checks.integer("batch_size", self.batch_size, 1, 4096)
        checks.device("device", self.device)


def check_sampling(n: int, seconds: float, temperature: float, seed: int,
                   prime_seconds: float | None, method: str, threads: int | None,
                   n_key: str = "n", precision: str = DEFAULT_PRECISION) -> None:
    """The sampling settings of the sample job and of `Model.generate`, checked alike."""
    checks.integer(n_key, n, 1, 65536)
    checks.number("seconds", seconds, 0, 86400, lo_open=True)
    checks.number("temperature", temperature, 0, 100,
                  hint="1 samples the model as trained, below 1 is more conservative, 0 is "
                  "greedy")
    checks.integer("seed", seed, 0, 2**63 - 1)
    checks.number("prime_seconds", prime_seconds, 0, lo_open=True, optional=True)
    checks.choice("method", method, METHODS)
    checks.choice("precision", precision, WEIGHT_PRECISIONS)
    checks.integer("threads", threads, 1, optional=True)


@dataclass
class EvalData:
    """Which audio `evaluate` scores; None takes the value the checkpoint was trained with."""

    root: str | None = None
    valid_root: str | None = None
    valid_fraction: float | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        for key in ("root", "valid_root", "cache_dir"):
            setattr(self, key, checks.path(getattr(self, key)))
        checks.number("data.valid_fraction", self.valid_fraction, 0, 1, hi_open=True,
                      optional=True)


@dataclass
class EvaluateJob:
    """Held-out likelihood of a checkpoint.

    Attributes:
        split: "valid" (the held-out files), "train" or "all".
        max_seconds: score at most this much audio; None scores all of it.
        resynth_files: vocoders only: how many held-out files to re-synthesize from their
            log-mel features (copy synthesis); 0 skips it.
        resynth_seconds: re-synthesize only the start of each of those files; None: all of it.
        seed: seeds the copy-synthesis draws.
        temperature: the sampling temperature of the copy synthesis and of the samples.
        sample_streams: models of audio (not vocoders): streams generated from silence (one
            batch, fast path, seeded; multi-speaker models: the scored files' speakers in turn)
            whose frames (log-mel spectrum, band flatness, pitch) are compared with the scored
            audio's (`sample_quality` in the results); 0 skips it.
        sample_seconds: length of each of those streams.
        precision: the generation precision of the copy synthesis and of the samples (as in
            sampling).
        precisions: generation precisions to compare (e.g. [fp32,bf16,int8]): for each, the
            held-out NLL with its rounded weights, its per-step outputs against fp32's on the
            same inputs (teacher-forced through the fast path over `precision_seconds` of the
            first scored file) and, for models of audio, the sample quality; [] skips it.
        precision_seconds: length of that teacher-forced comparison.
        out: JSON file for the results; None writes evaluation.json in the Hydra run folder.
    """

    checkpoint: str = "???"
    data: EvalData = field(default_factory=EvalData)
    split: str = "valid"
    max_seconds: float | None = None
    resynth_files: int = 8
    resynth_seconds: float | None = None
    seed: int = 0
    temperature: float = 1.0
    sample_streams: int = 4
    sample_seconds: float = 4.0
    precision: str = DEFAULT_PRECISION
    precisions: list[str] = field(default_factory=list)
    precision_seconds: float = 1.0
    use_ema: bool = True
    out: str | None = None
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self):
        self.checkpoint, self.out = checks.path(self.checkpoint), checks.path(self.out)
        checks.choice("split", self.split, ("valid", "train", "all"))
        checks.number("max_seconds", self.max_seconds, 0, lo_open=True, optional=True)
        checks.integer("resynth_files", self.resynth_files, 0)
        checks.number("resynth_seconds", self.resynth_seconds, 0, 3600, lo_open=True,
                      optional=True)
        checks.integer("seed", self.seed, 0, 2**63 - 1)
        checks.number("temperature", self.temperature, 0, 100)
        checks.integer("sample_streams", self.sample_streams, 0, 4096)
        checks.number("sample_seconds", self.sample_seconds, 0, 3600, lo_open=True)
        checks.choice("precision", self.precision, WEIGHT_PRECISIONS)
        for i, precision in enumerate(self.precisions):
            checks.choice(f"precisions[{i}]", precision, WEIGHT_PRECISIONS)
        checks.number("precision_seconds", self.precision_seconds, 0, 3600, lo_open=True)
        checks.device("device", self.device)
        checks.integer("threads", self.threads, 1, optional=True)


@dataclass
class BenchJob:
    """Speed measurements.

    Attributes:
        models: names of configs/model/*.yaml to measure.
        batch_sizes: generation batch sizes.
        fast_seconds: wall time spent timing each fast or incremental generation case.
        naive_steps: steps timed for the naive path (it is slow).
        train_steps: training steps timed.
        train_batch_size: crops per timed training step.
        train_crop: predicted samples per crop in the timed training steps.
        vocoder: also time copy synthesis with the vocoder preset's model (batch 1, 1 thread).
        train_device: where the training comparison runs: "auto" (CUDA when present), "cpu",
            "cuda".
        train_precisions: the arithmetic of each timed training variant (`train.precision`):
            fp32, tf32 (timed on CUDA only: the CPU has no TF32) and bf16.
        train_compile: also time torch.compile'd variants; None: on CUDA only (compiling a
            training graph takes minutes on a small CPU).
        precisions: generation weight precisions timed on the fast path (and their floors).
        out: JSON file; None writes bench.json in the Hydra run folder.
    """

    models: list[str] = field(default_factory=lambda: ["small", "base"])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    fast_seconds: float = 3.0
    naive_steps: int = 3
    train_steps: int = 3
    train_batch_size: int = 4
    train_crop: int = 2000
    vocoder: bool = True
    train_device: str = "auto"
    train_precisions: list[str] = field(default_factory=lambda: ["fp32", "tf32", "bf16"])
    precisions: list[str] = field(default_factory=lambda: list(WEIGHT_PRECISIONS))
    train_compile: bool | None = None
    out: str | None = None

    def __post_init__(self):
        self.out = checks.path(self.out)
        checks.device("train_device", self.train_device)
        for i, name in enumerate(self.train_precisions):
            checks.choice(f"train_precisions[{i}]", name, PRECISIONS[1:])  # named, not auto
        for i, name in enumerate(self.precisions):
            checks.choice(f"precisions[{i}]", name, WEIGHT_PRECISIONS)
        if not self.models:
            raise UserError("models=[]: name at least one model config, e.g. models=[small]")
        if not self.batch_sizes:
            raise UserError("batch_sizes=[]: name at least one generation batch size, e.g. "
                            "batch_sizes=[1,32]")
        for i, batch in enumerate(self.batch_sizes):
            checks.integer(f"batch_sizes[{i}]", batch, 1, 65536)
        checks.number("fast_seconds", self.fast_seconds, 0, lo_open=True)
        for key in ("naive_steps", "train_steps", "train_batch_size", "train_crop"):
            checks.integer(key, getattr(self, key), 1)
