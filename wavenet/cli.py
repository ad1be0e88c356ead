"""The Hydra layer: compose configs, turn them into dataclasses, call the plain job functions.

This is the only module that imports Hydra or OmegaConf.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from wavenet.config import BenchJob, EvaluateJob, SampleJob, TrainJob
from wavenet.errors import UserError
from wavenet.model import WaveNetConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
# Absolute, so the console scripts find the configs from any working folder (editable install).
CONFIG_DIR = str(REPO_ROOT / "configs")

log = logging.getLogger("wavenet")


def register_configs() -> None:
    """Schemas for the primary configs; groups merged into them are validated against them."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainJob)
    store.store(name="sample_schema", node=SampleJob)
    store.store(name="evaluate_schema", node=EvaluateJob)
    store.store(name="bench_schema", node=BenchJob)
    if not OmegaConf.has_resolver("repo"):
        # ${repo:data/demo} -> an absolute path inside this checkout, whatever the working folder.
        OmegaConf.register_new_resolver("repo", lambda rel: str(REPO_ROOT / rel))


register_configs()


def to_job(cfg: DictConfig):
    """The composed config as its dataclass (TrainJob, SampleJob, …)."""
    return OmegaConf.to_object(cfg)


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _entry(config_name: str, body: Callable[[DictConfig], object]) -> Callable[[], None]:
    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
    def main(cfg: DictConfig) -> None:
        try:
            body(cfg)
        except MissingMandatoryValue as err:
            print(f"error: {err.full_key} is not set: pass {err.full_key}=…", file=sys.stderr)
            sys.exit(1)
        except UserError as err:
            # A user error is one line, not a traceback.
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    return main


def _train(cfg: DictConfig):
    from wavenet.train import train

    return train(to_job(cfg), run_dir())


def _sample(cfg: DictConfig):
    from wavenet.sample import sample

    return sample(to_job(cfg), run_dir())


def _evaluate(cfg: DictConfig):
    from wavenet.evaluate import evaluate

    return evaluate(to_job(cfg), run_dir())


def model_config(name: str) -> WaveNetConfig:
    """configs/model/<name>.yaml as a validated WaveNetConfig."""
    path = Path(CONFIG_DIR) / "model" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise UserError(f"no model config {path.name}; known: {', '.join(known)}")
    schema = OmegaConf.structured(WaveNetConfig)
    return OmegaConf.to_object(OmegaConf.merge(schema, OmegaConf.load(path)))


def _bench(cfg: DictConfig):
    from wavenet.bench import bench

    job: BenchJob = to_job(cfg)
    return bench(job, {name: model_config(name) for name in job.models}, run_dir())


train_main = _entry("train", _train)
sample_main = _entry("sample", _sample)
evaluate_main = _entry("evaluate", _evaluate)
bench_main = _entry("bench", _bench)
