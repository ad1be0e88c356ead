"""The Hydra layer: compose configs, turn them into dataclasses, call the plain job functions.

This is the only module that imports Hydra or OmegaConf.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.resources
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from wavenet.config import BenchJob, EvaluateJob, SampleJob, TrainJob
from wavenet.errors import UserError
from wavenet.model import WaveNetConfig

# The source checkout, when wavenet runs from one (editable install, or PYTHONPATH).
REPO_ROOT = Path(__file__).resolve().parent.parent
# A wheel carries configs/ as wavenet/configs (pyproject.toml maps it there); a checkout, editable
# install included, has only its top-level configs/. Looking beside this copy of the package
# rather than importing wavenet.configs: setuptools' editable finder can't import that folder
# (it has no __init__.py), and the configs must belong to the code that runs.
_PACKAGED_CONFIGS = Path(str(importlib.resources.files("wavenet") / "configs"))
FROM_CHECKOUT = not _PACKAGED_CONFIGS.is_dir()
# Absolute, so the console scripts find the configs from any working folder.
CONFIG_DIR = str(REPO_ROOT / "configs" if FROM_CHECKOUT else _PACKAGED_CONFIGS)

log = logging.getLogger("wavenet")


def register_configs() -> None:
    """Schemas for the primary configs; groups merged into them are validated against them."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainJob)
    store.store(name="sample_schema", node=SampleJob)
    store.store(name="evaluate_schema", node=EvaluateJob)
    store.store(name="bench_schema", node=BenchJob)
    if not OmegaConf.has_resolver("repo"):
        OmegaConf.register_new_resolver("repo", checkout_path)


def checkout_path(rel: str) -> str:
    """${repo:data/demo/…}: an absolute path inside this checkout, whatever the working folder."""
    if not FROM_CHECKOUT:
        raise UserError(f"the bundled demo data ({rel}) comes with the source checkout, not with "
                        "an installed wavenet: run from a clone of the repository, or instead of "
                        "data=demo_… pass data.root=/path/to/your/audio")
    return str(REPO_ROOT / rel)


register_configs()


def to_job(cfg: DictConfig):
    """The composed config as its dataclass (TrainJob, SampleJob, …). A key that the job does
    not have (added with +key=…) is an error, not silently dropped."""
    job = OmegaConf.to_object(cfg)
    given = _flat_keys(OmegaConf.to_container(cfg, resolve=False))
    unknown = sorted(given - _flat_keys(dataclasses.asdict(job)) - {"hydra"})
    if unknown:
        raise UserError(f"{unknown[0]} is not a setting of this program: check its spelling "
                        "(`--cfg job` prints every key)")
    return job


def _flat_keys(d: dict, prefix: str = "") -> set[str]:
    """Every key path in a nested dict; a dict-valued key (e.g. model.mel) counts as itself."""
    keys = set()
    for key, value in d.items():
        keys.add(prefix + str(key))
        if isinstance(value, dict):
            keys |= _flat_keys(value, f"{prefix}{key}.")
    return keys


def _composed(config_name: str, overrides: list[str]) -> DictConfig:
    """The config Hydra composes for a program and overrides, outside a Hydra run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides)


def compose(config_name: str, overrides: list[str] | tuple[str, ...] = ()):
    """The job dataclass that `wavenet-<config_name> <overrides…>` would run, for notebooks and
    other programs: compose("train", ["experiment=demo", "train.max_steps=100"])."""
    cfg = _composed(config_name, list(overrides))
    try:
        return to_job(cfg)
    except MissingMandatoryValue as err:
        raise UserError(f"{err.full_key} is not set: pass {err.full_key}=…") from None
    except InterpolationResolutionError as err:
        cause = _user_error_behind(err)
        if cause is None:
            raise
        raise cause from None


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


# OS errors that come from the user's files and folders, each with what to do about it.
_OS_ERROR_ADVICE = {
    errno.ENOSPC: "free some space (files written before are intact)",
    errno.EDQUOT: "free some space (files written before are intact)",
    errno.EFBIG: "the file is larger than this system allows (files written before are intact)",
    errno.EACCES: "choose a folder you can write to",
    errno.EPERM: "choose a folder you can write to",
    errno.EROFS: "choose a folder on a writable disk",
    errno.ENOTDIR: "a file is in the way of that folder: choose another path",
    errno.EEXIST: "a file is in the way of that folder: choose another path",
    errno.EISDIR: "a folder is in the way of that file: choose another path",
    errno.EMFILE: "too many files open at once: lower n_samples, or raise the limit (ulimit -n)",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ELOOP: "a symbolic link in that path loops: choose another path",
    errno.ENOENT: "a folder in that path does not exist or cannot be created: check the path",
}


def os_error_line(err: OSError) -> str | None:
    """The one-line message for an OSError about the user's files, or None for others."""
    advice = _OS_ERROR_ADVICE.get(err.errno)
    if advice is None:
        return None
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror}; {advice}"


def out_of_memory_line(err: BaseException) -> str | None:
    """The one-line message for running out of memory (CPU or GPU), or None for other errors."""
    text = str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or (
            isinstance(err, RuntimeError) and ("can't allocate memory" in text
                                               or "not enough memory" in text)):
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        return (f"out of memory ({first[:120]}): lower train.batch_size, data.crop_samples, "
                "n_samples, seconds or the model's size")
    return None


def _unwritable(path: Path) -> str | None:
    """Why files could not be created under `path`, or None."""
    p = path.expanduser().absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        return f"{p} is a file, not a folder"
    if not os.access(p, os.W_OK):
        return f"{p} is not writable"
    return None


def check_group_overrides(argv: list[str]) -> list[str]:
    """Hydra fails with a traceback on `group=null`: `experiment=null` is the default anyway
    (dropped here), and model= or data= need a choice."""
    kept = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") in ("model", "data", "experiment") and value in ("null", "None"):
            if key.lstrip("+~") != "experiment":
                folder = Path(CONFIG_DIR) / key.lstrip("+~")
                known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
                raise UserError(f"{arg}: choose one of {known}")
            continue
        kept.append(arg)
    return kept


_ABSENT = object()


def check_nested_overrides(config_name: str, argv: list[str]) -> None:
    """Hydra fails with a traceback on `a.b.c=…` where a.b is null (model.mel.n_mels=40 on a
    model without mel): compose the rest first and name the null block instead."""
    def key(arg: str) -> str:
        return arg.partition("=")[0].lstrip("+~")

    overrides = [a for a in argv if "=" in a and not a.startswith("-")
                 and not key(a).startswith("hydra")]
    nested = [a for a in overrides if key(a).count(".") >= 2]
    if not nested:
        return
    try:
        cfg = _composed(config_name, [a for a in overrides if a not in nested])
    except Exception:  # noqa: BLE001 - Hydra reports those itself, in its own words
        return
    for arg in nested:
        parent = key(arg).rpartition(".")[0]
        if OmegaConf.select(cfg, parent, default=_ABSENT, throw_on_missing=False) is None:
            raise UserError(f"{arg}: {parent} is null in this config, so it has no such key; "
                            f"set {parent} first (for model.mel: experiment=vocoder)")


def check_output_folders(argv: list[str]) -> None:
    """Hydra creates the run folder before any job code runs, and fails with a traceback; so
    check it first (the folder given by hydra.run.dir / hydra.sweep.dir, else this folder)."""
    given = False
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and value:
            given = True
            problem = None if "${" in value else _unwritable(Path(value))
            if problem:
                raise UserError(f"{key}={value}: {problem}; choose a writable folder")
    if not given and (problem := _unwritable(Path.cwd())):
        raise UserError(f"the run folder goes under the current folder, but {problem}: run from "
                        "another folder or pass hydra.run.dir=<writable folder>")


def _entry(config_name: str, body: Callable[[DictConfig], object]) -> Callable[[], None]:
    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
    def main(cfg: DictConfig) -> None:
        try:
            body(cfg)
        except MissingMandatoryValue as err:
            _fail(f"{err.full_key} is not set: pass {err.full_key}=…")
        except UserError as err:
            _fail(str(err))  # a user error is one line, not a traceback
        except InterpolationResolutionError as err:
            cause = _user_error_behind(err)
            if cause is None:
                raise
            _fail(str(cause))
        except OSError as err:
            line = os_error_line(err)
            if line is None:
                raise
            _fail(line)
        except (MemoryError, RuntimeError) as err:
            line = out_of_memory_line(err)
            if line is None:
                raise
            _fail(line)

    def entry() -> None:
        try:
            sys.argv[1:] = check_group_overrides(sys.argv[1:])
            check_nested_overrides(config_name, sys.argv[1:])
            check_output_folders(sys.argv[1:])
            main()
        except UserError as err:
            _fail(str(err))
        except BrokenPipeError:  # `wavenet-train --help | head`: the reader left
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except KeyboardInterrupt:
            # Training turns the first Ctrl-C into a checkpoint and a clean exit; this is a
            # second one, or one outside training. Files are written atomically, so nothing
            # already written is lost.
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return entry


def _user_error_behind(err: BaseException | None) -> UserError | None:
    """The UserError a resolver raised, which OmegaConf hands on wrapped in its own errors."""
    while err is not None and not isinstance(err, UserError):
        err = err.__cause__ or err.__context__
    return err


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


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


def vocoder_model_config() -> WaveNetConfig:
    """The vocoder preset's model: configs/experiment/vocoder.yaml's model block over the model
    config its defaults name (read as files: inside a Hydra run, Hydra cannot compose again)."""
    preset = OmegaConf.load(Path(CONFIG_DIR) / "experiment" / "vocoder.yaml")
    base = next(d["override /model"] for d in preset.defaults
                if isinstance(d, DictConfig) and "override /model" in d)
    merged = OmegaConf.merge(OmegaConf.structured(WaveNetConfig),
                             OmegaConf.load(Path(CONFIG_DIR) / "model" / f"{base}.yaml"),
                             preset.model)
    return OmegaConf.to_object(merged)


def _bench(cfg: DictConfig):
    from wavenet.bench import bench

    job: BenchJob = to_job(cfg)
    vocoder = vocoder_model_config() if job.vocoder else None
    return bench(job, {name: model_config(name) for name in job.models}, run_dir(), vocoder)


def quality_main(argv: list[str] | None = None) -> None:
    """`make quality`: each recipe of `wavenet.recipes` trained for each budget on each bundled
    corpus, scored on held-out audio; a Markdown table on stdout and JSON beside the runs."""
    import argparse

    from wavenet.recipes import CORPORA, RECIPES, Run, budget_overrides, format_table, run_all

    parser = argparse.ArgumentParser(prog="wavenet-quality", description=quality_main.__doc__)
    parser.add_argument("--minutes", type=float, nargs="+", default=[3, 6, 12])
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES),
                        help="built-in recipes to run (none: only the --recipe ones)")
    parser.add_argument("--recipe", nargs="+", action="append", default=[],
                        metavar=("NAME", "OVERRIDE"),
                        help="one more recipe: a name and its train overrides (repeatable)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="outputs/quality")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        register_configs()
        recipes = {name: RECIPES[name] for name in args.recipes}
        recipes |= {name: overrides for name, *overrides in args.recipe}
        runs = [Run(corpus, name, minutes, compose("train", [
                    CORPORA[corpus], *overrides, *budget_overrides(minutes, args.threads)]))
                for corpus in args.corpora for minutes in args.minutes
                for name, overrides in recipes.items()]
        report = run_all(runs, Path(args.out))
    except UserError as err:
        _fail(str(err))
    print(format_table(report))
    print(f"written to {Path(args.out) / 'quality.json'}")


train_main = _entry("train", _train)
sample_main = _entry("sample", _sample)
evaluate_main = _entry("evaluate", _evaluate)
bench_main = _entry("bench", _bench)
