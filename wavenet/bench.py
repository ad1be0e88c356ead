"""Speed measurements: fast vs naive generation and training throughput, per model config."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wavenet.config import BenchJob
from wavenet.generate import fast_step, naive_step, silence_context
from wavenet.model import WaveNet, WaveNetConfig


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@torch.no_grad()
def fast_rate(model: WaveNet, batch: int, seconds: float) -> float:
    """Samples/s (all streams together) of the incremental path in steady state: the best of
    three windows of seconds/3, as timeit does, since a shared 2-core VM is noisy."""
    step = fast_step(model, silence_context(model, batch)[:, -1:])
    g = torch.Generator().manual_seed(0)
    x = silence_context(model, batch)[:, -1]
    for _ in range(20):  # warm-up: first calls allocate and pick kernels
        x = model.dist.sample(step(x), 1.0, g)
    best = 0.0
    for _ in range(3):
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            for _ in range(50):
                x = model.dist.sample(step(x), 1.0, g)
            steps += 50
        best = max(best, steps * batch / (time.perf_counter() - start))
    return best


@torch.no_grad()
def naive_rate(model: WaveNet, batch: int, steps: int) -> float:
    """Samples/s of the reference path: a forward over one receptive field per sample."""
    g = torch.Generator().manual_seed(0)
    context = silence_context(model, batch)
    step = naive_step(model, context)
    x = model.dist.sample(step(context[:, -1]), 1.0, g)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        x = model.dist.sample(step(x), 1.0, g)
    return steps * batch / (time.perf_counter() - start)


@torch.no_grad()
def floor_rate(n_params: int, seconds: float = 1.5) -> float:
    """Samples/s if one sample cost exactly one matrix-vector product over all weights (one
    thread): the arithmetic floor of batch-1 generation. Best of three windows."""
    cols = 512
    w, v = torch.randn(max(1, n_params // cols), cols), torch.randn(cols)
    for _ in range(20):
        torch.mv(w, v)
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            for _ in range(20):
                torch.mv(w, v)
            count += 20
        best = max(best, count / (time.perf_counter() - start))
    return best


class StraightforwardWaveNet(nn.Module):
    """The same network written plainly, as the baseline of the training comparison: separate
    filter, gate, residual and skip Conv1d per layer, separate tanh and sigmoid."""

    def __init__(self, cfg: WaveNetConfig):
        super().__init__()
        r, g, s, k = cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, cfg.kernel_size
        self.embed = nn.Embedding(cfg.quantization_channels, r)
        self.layers = nn.ModuleList(nn.ModuleDict({
            "filter": nn.Conv1d(r, g, k, dilation=d), "gate": nn.Conv1d(r, g, k, dilation=d),
            "res": nn.Conv1d(g, r, 1), "skip": nn.Conv1d(g, s, 1)}) for d in cfg.dilations)
        self.pads = [(k - 1) * d for d in cfg.dilations]
        self.head1 = nn.Conv1d(s, s, 1)
        self.head2 = nn.Conv1d(s, cfg.quantization_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, skip = self.embed(x).transpose(1, 2), 0
        for layer, pad in zip(self.layers, self.pads, strict=True):
            padded = F.pad(h, (pad, 0))
            z = torch.tanh(layer["filter"](padded)) * torch.sigmoid(layer["gate"](padded))
            skip = skip + layer["skip"](z)
            h = (h + layer["res"](z)) * math.sqrt(0.5)
        return self.head2(F.relu(self.head1(F.relu(skip * math.sqrt(1 / len(self.layers))))))


def train_rate(model: nn.Module, cfg: WaveNetConfig, batch: int, crop: int, steps: int) -> float:
    """Predicted samples/s of full training steps (forward, backward, Adam) on random crops."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    rf = cfg.receptive_field
    dist = cfg.distribution()
    x = dist.encode(torch.rand(batch, rf + crop, generator=torch.Generator().manual_seed(0)) * 2
                    - 1)

    def step():
        loss = dist.nll(model(x[:, :-1])[:, :, rf - 1:], x[:, rf:])
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch * crop / (time.perf_counter() - start)


def bench(job: BenchJob, models: dict[str, WaveNetConfig], out_dir: Path) -> dict:
    """Measure every model; print a Markdown table and write JSON."""
    threads_default = torch.get_num_threads()
    results = []
    for name, cfg in models.items():
        torch.manual_seed(0)
        model = WaveNet(cfg).eval()
        row = {"model": name, "parameters": model.num_parameters(),
               "receptive_field": model.receptive_field, "generation": []}
        torch.set_num_threads(1)
        row["floor_samples_per_s"] = floor_rate(row["parameters"])
        for batch in job.batch_sizes:
            threads = 1 if batch == 1 else threads_default
            torch.set_num_threads(threads)
            fast = fast_rate(model, batch, job.fast_seconds)
            naive = naive_rate(model, batch, job.naive_steps)
            row["generation"].append({"batch": batch, "threads": threads, "fast": fast,
                                      "naive": naive, "speedup": fast / naive,
                                      "fraction_of_floor": (fast / row["floor_samples_per_s"]
                                                            if batch == 1 else None)})
            print(f"{name} batch {batch} ({threads} thread(s)): fast {fast:,.0f} samples/s, "
                  f"naive {naive:,.1f} samples/s ({fast / naive:,.0f}x)", flush=True)
        torch.set_num_threads(threads_default)
        torch.manual_seed(0)
        row["train_samples_per_s"] = train_rate(WaveNet(cfg), cfg, job.train_batch_size,
                                                job.train_crop, job.train_steps)
        torch.manual_seed(0)
        row["train_straightforward_samples_per_s"] = train_rate(
            StraightforwardWaveNet(cfg), cfg, job.train_batch_size, job.train_crop,
            job.train_steps)
        row["train_threads"] = threads_default
        print(f"{name} training: {row['train_samples_per_s']:,.0f} samples/s (straightforward "
              f"implementation {row['train_straightforward_samples_per_s']:,.0f})", flush=True)
        results.append(row)
    report = {"machine": machine_info(), "job": asdict(job), "results": results}
    print()
    print(format_table(report))
    out = Path(job.out) if job.out else out_dir / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {out}")
    return report


def format_table(report: dict) -> str:
    """The results as a Markdown table, plus the machine line."""
    lines = ["| model | params | receptive field | batch | threads | fast samples/s "
             "| naive samples/s | fast / naive | fraction of floor |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["results"]:
        for g in row["generation"]:
            fraction = g.get("fraction_of_floor")
            lines.append(
                f"| {row['model']} | {row['parameters']:,} | {row['receptive_field']} "
                f"| {g['batch']} | {g['threads']} | {g['fast']:,.0f} | {g['naive']:,.1f} "
                f"| {g['speedup']:,.0f}x | {'' if fraction is None else f'{fraction:.1%}'} |")
    lines += ["", "| model | floor: one matvec over all weights, samples/s | train samples/s "
              "| straightforward implementation | ratio |", "|---|---:|---:|---:|---:|"]
    for row in report["results"]:
        ours, plain = row["train_samples_per_s"], row["train_straightforward_samples_per_s"]
        lines.append(f"| {row['model']} | {row['floor_samples_per_s']:,.0f} | {ours:,.0f} "
                     f"| {plain:,.0f} | {ours / plain:.2f}x |")
    m = report["machine"]
    lines.append(f"\nMachine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu']}; "
                 f"torch {m['torch']}, Python {m['python']}.")
    return "\n".join(lines)
