"""wavenet installed from its wheel, the way `pip install .` or `pip install git+…` installs it.

An editable install or a checkout on PYTHONPATH finds configs/ beside the package; only a real
install shows whether the wheel carries what the console scripts need.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import tiny_train_overrides, write_tone_folder
from wavenet.cli import REPO_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of what the build reads, so the checkout gets no build/."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    for name in ("wavenet", "configs"):
        shutil.copytree(REPO_ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # No build isolation: the setuptools already installed builds it, with no network.
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                           "--no-build-isolation", "--disable-pip-version-check", "-q",
                           "-w", str(tmp / "dist"), str(src)],
                          cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = (tmp / "dist").glob("wavenet-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; returns its bin folder.

    Its dependencies come from this interpreter's site-packages through a .pth file, so nothing
    is downloaded. Python runs the .pth files of its own site-packages only, not of folders a
    .pth adds, so an editable install of wavenet there stays out of the fresh environment.
    """
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = [*site.getsitepackages()]
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        deps.append(site.getusersitepackages())
    (Path(purelib) / "_wavenet_test_deps.pth").write_text("\n".join(deps) + "\n")
    # --ignore-installed: the wavenet visible through the .pth is not this environment's.
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index",
                           "--ignore-installed", "--disable-pip-version-check", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=300, env=_clean_env(env_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir / "bin"


def _clean_env(cache_root: Path) -> dict[str, str]:
    """This environment without PYTHONPATH (which would bring back the checkout), with caches
    under `cache_root`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["XDG_CACHE_HOME"] = str(cache_root / "cache")
    env["WAVENET_CACHE"] = str(cache_root / "cache")
    return env


def _run(bin_dir: Path, program: str, *args: str, cwd: Path):
    return subprocess.run([str(bin_dir / program), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=_clean_env(cwd))


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A working folder outside the checkout, with no configs/ to fall back on."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def test_wheel_holds_every_config_and_the_cpp_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.relative_to(REPO_ROOT / "configs").as_posix()
                     for p in (REPO_ROOT / "configs").rglob("*.yaml"))
    assert "train.yaml" in configs and "experiment/base.yaml" in configs
    missing = [c for c in configs if f"wavenet/configs/{c}" not in names]
    assert not missing, f"not in the wheel (list their folders in pyproject.toml): {missing}"
    assert "wavenet/csrc/fast_step.cpp" in names
    assert not [n for n in names if n.split("/")[0] in ("configs", "data", "tests", "scripts")]


def test_the_fresh_environment_imports_the_installed_wavenet(installed, elsewhere):
    done = subprocess.run([str(installed / "python"), "-c",
                           "import wavenet; print(wavenet.__file__)"],
                          cwd=elsewhere, capture_output=True, text=True, env=_clean_env(elsewhere))
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve().is_relative_to(installed.parent.resolve())


def test_console_scripts_train_sample_evaluate(installed, elsewhere, tmp_path):
    audio = write_tone_folder(tmp_path / "audio")
    done = _run(installed, "wavenet-train", *tiny_train_overrides(audio, tmp_path), "name=wheel",
                cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "receptive field 16 samples" in done.stdout
    assert (elsewhere / "outputs/wheel/checkpoints/step-00000004.pt").is_file()

    done = _run(installed, "wavenet-sample", "checkpoint=outputs/wheel", "seconds=0.1",
                "progress=false", "out_dir=gen", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert (elsewhere / "gen/sample_00.wav").is_file()
    assert (elsewhere / "gen/sample_00.png").is_file()
    if shutil.which("c++") or shutil.which("g++"):  # the C++ source came with the wheel
        assert "native path" in done.stdout, done.stdout + done.stderr

    done = _run(installed, "wavenet-evaluate", "checkpoint=outputs/wheel", "out=eval.json",
                cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    result = json.loads((elsewhere / "eval.json").read_text())
    assert 7 < result["bits_per_sample"] < 9  # a barely trained 256-way softmax: about 8 bits


def test_config_groups_and_launcher_from_the_wheel(installed, elsewhere):
    done = _run(installed, "wavenet-train", "--help", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "model: base, debug, small" in done.stdout
    assert "experiment: base, debug, demo" in done.stdout

    done = _run(installed, "wavenet-train", "--cfg", "all", "experiment=debug", "model=debug",
                "hydra/launcher=local", "data.root=/audio", "train.lr=0.003", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    for line in ("name: debug", "  residual_channels: 8", "  root: /audio", "  lr: 0.003",
                 "    timeout_min: 60", "      hydra/launcher: local"):
        assert line in done.stdout.splitlines(), line


def test_demo_data_from_the_wheel_is_a_one_line_error(installed, elsewhere):
    done = _run(installed, "wavenet-train", "data=demo_piano", "model=debug", cwd=elsewhere)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "source checkout" in line and "data.root=" in line
