"""wavenet: train a WaveNet on a folder of audio, generate fast, configure with Hydra.

The Python API (names load lazily, so `import wavenet` stays cheap):

    model = wavenet.load("outputs/demo")               # a run folder or a checkpoint file
    audio = model.generate(seconds=2, n=2, seed=0)     # (2, T) float32 in [-1, 1]
    wavenet.write_wav("out.wav", audio[0], model.sample_rate)

    from wavenet.train import train                    # the jobs are functions of dataclasses
    job = wavenet.compose("train", ["experiment=demo"])   # the presets the CLI composes, or
    job = wavenet.TrainJob(...)                            # the dataclasses themselves
    checkpoint = train(job, "outputs/demo")

(`wavenet.train`, `wavenet.sample` and `wavenet.evaluate` are the modules of the jobs.)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load": "wavenet.api", "Model": "wavenet.api", "write_wav": "wavenet.api",
    "compose": "wavenet.cli",
    "TrainJob": "wavenet.config", "TrainConfig": "wavenet.config", "SampleJob": "wavenet.config",
    "EvaluateJob": "wavenet.config", "EvalData": "wavenet.config", "BenchJob": "wavenet.config",
    "WaveNetConfig": "wavenet.model", "WaveNet": "wavenet.model",
    "DataConfig": "wavenet.data", "AudioConfig": "wavenet.audio", "MelConfig": "wavenet.features",
    "UserError": "wavenet.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wavenet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
