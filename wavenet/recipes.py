"""The quality benchmark (`make quality`): recipes trained for fixed wall-clock budgets on each
corpus, then scored on held-out audio: bits per sample and the sample-quality score.

A recipe is a list of train-config overrides; the CLI layer composes them into `TrainJob`s
(`wavenet.cli.quality_main`), and this module runs and scores them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from wavenet.config import EvaluateJob, TrainJob
from wavenet.files import write_atomic

# What a user gets from the defaults, and the recipe most open-source WaveNets ship: 24 layers
# (3 cycles of dilations 1 … 128), 64 residual / 128 gate / 256 skip channels, one-hot input,
# no pre-emphasis or linear prediction, Adam at a constant 1e-3, batch 4, crops of 4,000
# samples, no EMA, no clipping, no weight decay, no augmentation.
RECIPES: dict[str, list[str]] = {
    "default": [],
    "straightforward": [
        "model.layers_per_cycle=8", "model.cycles=3", "model.kernel_size=2",
        "model.residual_channels=64", "model.gate_channels=128", "model.skip_channels=256",
        "model.input=onehot", "model.pre_emphasis=0", "model.adaptive_lpc_order=0",
        "train.batch_size=4",
        "data.crop_samples=4000", "train.lr=0.001",
        "train.final_lr=null", "train.warmup_steps=0", "train.ema_decay=null",
        "train.grad_clip=null", "train.precision=fp32", "train.weight_decay=0",
        "data.flip_polarity=false"],
}
CORPORA = {"piano": "data=demo_piano", "speech": "data=demo_speech"}


@dataclass
class Run:
    """One cell of the benchmark: a recipe trained on a corpus for a budget."""

    corpus: str
    recipe: str
    minutes: float
    job: TrainJob


def budget_overrides(minutes: float, threads: int | None) -> list[str]:
    """Train for `minutes` of wall clock, spending none of it on snippets or mid-run scoring."""
    return [f"train.max_time={minutes * 60:g}", "train.max_steps=null",
            "train.eval_every=1000000000", "train.sample_every=null",
            "train.checkpoint_every=1000000000", "train.eval_max_seconds=1", "train.progress=false",
            "train.resume=auto",
            *([f"train.threads={threads}"] if threads else [])]


def run_all(runs: list[Run], out_dir: Path, streams: int = 4, seconds: float = 4.0) -> dict:
    """Train each run into out_dir/<corpus>/<recipe>/<minutes>m (a finished run is reused:
    its budget is spent), score it, and write out_dir/quality.json after each.

    Returns:
        {"runs": [{corpus, recipe, minutes, steps, bits_per_sample, sample_quality…}]}.
    """
    from wavenet.evaluate import evaluate
    from wavenet.train import train

    report: dict = {"runs": []}
    out_dir.mkdir(parents=True, exist_ok=True)
    for run in runs:
        folder = out_dir / run.corpus / run.recipe / f"{run.minutes:g}m"
        started = time.time()
        checkpoint = train(run.job, folder)
        scored = evaluate(EvaluateJob(checkpoint=str(checkpoint), sample_streams=streams,
                                      sample_seconds=seconds, out=str(folder / "evaluation.json"),
                                      threads=run.job.train.threads), folder)
        report["runs"].append({
            "corpus": run.corpus, "recipe": run.recipe, "minutes": run.minutes,
            "steps": scored["step"],
            # a whitening recipe's own bits are its excitation's: compare the waveform's
            "bits_per_sample": scored.get("waveform_bits_per_sample",
                                          scored["bits_per_sample"]),
            "sample_quality": scored.get("sample_quality"),
            "wall_seconds": time.time() - started})
        write_atomic(out_dir / "quality.json", json.dumps(report, indent=2))
    return report


def format_table(report: dict) -> str:
    """Held-out bits/sample and the sample-quality score per corpus and budget, recipes side by
    side (Markdown)."""
    recipes = list(dict.fromkeys(r["recipe"] for r in report["runs"]))
    cells = {(r["corpus"], r["minutes"], r["recipe"]): r for r in report["runs"]}
    lines = ["| corpus | budget | " + " | ".join(
                 f"{name}: bits/sample | {name}: sample quality (× floor)" for name in recipes)
             + " |",
             "|---|---:|" + "---:|---:|" * len(recipes)]
    for corpus, minutes in dict.fromkeys((r["corpus"], r["minutes"]) for r in report["runs"]):
        row = [corpus, f"{minutes:g} min"]
        for name in recipes:
            run = cells.get((corpus, minutes, name))
            if run is None:
                row += ["", ""]
                continue
            quality = run["sample_quality"]
            row += [f"{run['bits_per_sample']:.3f} ({run['steps']} steps)",
                    "n/a" if not quality else f"{quality['ratio']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)

