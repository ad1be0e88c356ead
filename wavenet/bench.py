"""Speed measurements: fast vs naive generation and training throughput, per model config."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wavenet import checks
from wavenet.config import BenchJob
from wavenet.files import write_atomic
from wavenet.generate import (
    NOISE_BLOCK,
    generate,
    make_loop,
    resolve_method,
    resolve_precision,
    silence_context,
)
from wavenet.model import WaveNet, WaveNetConfig
from wavenet.native import FORMATS, PANEL, formats, library, pack_weights, unavailable_reason
from wavenet.runtime import precision, resolve_device


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
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "native_step": ("built" if library() is not None
                        else f"unavailable ({unavailable_reason()})"),
    }


@torch.no_grad()
def generation_rate(model: WaveNet, batch: int, method: str, threads: int,
                    seconds: float = 3.0, steps: int | None = None,
                    precision: str = "fp32") -> float:
    """Samples/s (all streams together) of one generation method in steady state, sampling
    included, priming excluded, on the model's device. With `steps`, those steps timed once
    (for the slow naive path); otherwise the best of three windows (`best_rate`)."""
    device = next(model.parameters()).device
    context = silence_context(model, batch)
    loop = make_loop(model, context, method=method, threads=threads, precision=precision)
    x = context[:, -1]
    noise = torch.rand(batch, NOISE_BLOCK, model.dist.noise_per_sample,
                       generator=torch.Generator().manual_seed(0)).to(device)
    out = torch.empty(batch, NOISE_BLOCK, dtype=x.dtype, device=device)

    def run(n: int) -> float:
        nonlocal x
        done, start = 0, time.perf_counter()
        while done < n:
            m = min(n - done, NOISE_BLOCK)
            x = loop.advance(x, noise[:, :m], out[:, :m], None, 1.0)
            done += m
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    if steps is not None:
        run(1)  # warm-up
        return steps * batch / run(steps)
    n = 8
    while run(n) < 0.05:  # warm-up and a window of about 50 ms
        n *= 2

    def window() -> int:
        run(n)
        return n * batch

    return best_rate(window, seconds)


def decode_rate(model: WaveNet, batch: int, seconds: float) -> float:
    """Samples/s (all streams together) of turning generated values into audio, on one
    thread, in stretches of 4,000: a whitening model's synthesis filter, with a backward-
    adaptive predictor's refits (a model of the waveform itself only looks its values up)."""
    values = torch.randint(0, model.cfg.quantization_channels, (batch, 16000),
                           generator=torch.Generator().manual_seed(0))
    decode = model.audio_decoder(batch=batch)

    def second() -> int:
        for i in range(0, values.shape[1], 4000):
            decode(values[:, i:i + 4000])
        return values.numel()

    return best_rate(second, seconds)


def vocoder_rate(cfg: WaveNetConfig, seconds: float, sample_rate: int = 16000) -> dict:
    """Copy synthesis at batch 1 on one thread, by the fast path: samples/s and how many times
    real time that is at `sample_rate`. Whole utterances of one second are timed, from their
    frames to audio (the whitening filter's inverse included)."""
    torch.manual_seed(0)
    cfg = replace(cfg, mel=replace(cfg.mel, sample_rate=cfg.mel.sample_rate or sample_rate))
    model = WaveNet(cfg).eval()
    torch.set_num_threads(1)
    # speech-like levels of natural-log mels
    mel = torch.randn(1, cfg.mel.n_mels, sample_rate // cfg.mel.hop_length) - 4.0

    def utterance() -> int:
        values = generate(model, mel=mel, method="fast", threads=1)
        model.audio_decoder(mel)(values)
        return values.shape[1]

    rate = best_rate(utterance, seconds)
    result = {"parameters": model.num_parameters(), "n_mels": cfg.mel.n_mels,
              "hop_length": cfg.mel.hop_length, "samples_per_s": rate,
              "times_real_time": rate / sample_rate, "sample_rate": sample_rate,
              "method": resolve_method(model, "fast")}
    print(f"vocoder copy synthesis, batch 1, 1 thread: {rate:,.0f} samples/s, "
          f"{rate / sample_rate:.1f}x real time at {sample_rate} Hz", flush=True)
    return result


def best_rate(work: Callable[[], int], seconds: float) -> float:
    """The best of three windows of seconds/3, in units of what `work()` returns per call (as
    timeit does: a shared 2-core VM is noisy)."""
    best = 0.0
    for _ in range(3):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            done += work()
        best = max(best, done / (time.perf_counter() - start))
    return best


@torch.no_grad()
def floor_rate(n_params: int, seconds: float = 1.5, precision: str = "fp32") -> float | None:
    """Samples/s if one sample cost exactly one matrix-vector product over all weights stored
    in `precision` (one thread): the floor of batch-1 generation. The faster of torch.mv (fp32
    only) and the compiled step's own kernel, best of three windows each; None where neither
    runs that precision."""
    cols = 256
    rows = max(1, n_params // cols)
    w, v = torch.randn(rows, cols), torch.randn(cols)
    candidates = {"torch.mv": lambda: torch.mv(w, v)} if precision == "fp32" else {}
    lib = library()
    if lib is not None and precision in formats():
        packed, scale = pack_weights(w.t().contiguous(), precision)
        y = torch.zeros(rows + PANEL)

        def native_mv():
            lib.wavenet_gemm(FORMATS[precision], v.data_ptr(), cols, 1, cols, packed.data_ptr(),
                             None if scale is None else scale.data_ptr(), rows, y.data_ptr(),
                             rows + PANEL)

        candidates["native"] = native_mv

    def twenty(fn) -> int:
        for _ in range(20):
            fn()
        return 20

    best = None
    for fn in candidates.values():
        twenty(fn)  # warm-up
        rate = best_rate(lambda fn=fn: twenty(fn), seconds / 2)
        best = rate if best is None else max(best, rate)
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

    @classmethod
    @torch.no_grad()
    def same_weights_as(cls, model: WaveNet) -> StraightforwardWaveNet:
        """The straightforward network computing exactly `model`'s function."""
        plain = cls(model.cfg)
        plain.embed.weight.copy_(model.input_table())
        g, r = model.cfg.gate_channels, model.cfg.residual_channels
        for ours, layer in zip(model.layers, plain.layers, strict=True):
            for part, rows in (("filter", slice(0, g)), ("gate", slice(g, 2 * g))):
                layer[part].weight.copy_(ours.dilated.weight[rows])
                layer[part].bias.copy_(ours.dilated.bias[rows])
            for part, rows in (("res", slice(0, r)), ("skip", slice(r, None))):
                layer[part].weight.copy_(ours.out.weight[rows])
                layer[part].bias.copy_(ours.out.bias[rows])
        plain.head1.load_state_dict(model.head1.state_dict())
        plain.head2.load_state_dict(model.head2.state_dict())
        return plain

    def forward(self, x: torch.Tensor, first_output: int = 0) -> torch.Tensor:
        """x (B, T) classes -> (B, Q, T - first_output) logits (the plain way: all of it is
        computed, then sliced)."""
        h, skip = self.embed(x).transpose(1, 2), 0
        for layer, pad in zip(self.layers, self.pads, strict=True):
            padded = F.pad(h, (pad, 0))
            z = torch.tanh(layer["filter"](padded)) * torch.sigmoid(layer["gate"](padded))
            skip = skip + layer["skip"](z)
            h = (h + layer["res"](z)) * math.sqrt(0.5)
        out = self.head2(F.relu(self.head1(F.relu(skip * math.sqrt(1 / len(self.layers))))))
        return out[:, :, first_output:]


def tone_crops(dist, batch: int, length: int, seed: int) -> torch.Tensor:
    """Model values (B, length) of noisy tones at random pitches: something to learn."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 16000
    f0 = 100 + 400 * torch.rand(batch, 1, generator=g)
    audio = 0.5 * torch.sin(2 * math.pi * f0 * t) + 0.05 * torch.randn(batch, length, generator=g)
    return dist.encode(audio)


def train_rate(model: nn.Module, cfg: WaveNetConfig, batch: int, crop: int, steps: int,
               device: torch.device | None = None, arithmetic: str = "fp32",
               compiled: bool = False) -> tuple[float, float]:
    """Predicted samples/s of a full training step (forward under `runtime.precision`,
    backward, Adam) on noisy-tone crops (the best of `steps` steps), and the NLL (bits/sample)
    of held-out crops after them, scored in fp32."""
    device = device or torch.device("cpu")
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compiled else model
    rf = cfg.receptive_field
    dist = cfg.distribution()
    batches = [tone_crops(dist, batch, rf + crop, seed).to(device) for seed in range(steps + 1)]

    def loss_of(x: torch.Tensor, net: nn.Module) -> torch.Tensor:
        return dist.nll(net(x[:, :-1], first_output=rf - 1).float(), x[:, rf:])

    def step(x: torch.Tensor) -> None:
        with precision(device, arithmetic):
            loss = loss_of(x, forward)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step(batches[0])  # warm-up (and compilation)
    times = []
    for x in batches[1:]:
        start = time.perf_counter()
        step(x)
        times.append(time.perf_counter() - start)
    rate = batch * crop / min(times)  # the fastest step, as timeit does: a shared VM is noisy
    with torch.no_grad(), precision(device, "fp32"):
        held_out = tone_crops(dist, batch, rf + crop, seed=10**6).to(device)
        bits = loss_of(held_out, model).item() / math.log(2)
    return rate, bits


IMPLEMENTATIONS = {
    "ours": lambda model: model,  # merged filter/gate and residual/skip convs, layer loop
    "straightforward": lambda model: StraightforwardWaveNet.same_weights_as(model),
}


def training_matrix(cfg: WaveNetConfig, job: BenchJob) -> list[dict]:
    """Every implementation × arithmetic × (compiled or not) of one training step, each from
    the same initial weights: samples/s and the held-out NLL after the timed steps (equal
    weights and data, so the NLLs must agree up to the arithmetic's rounding)."""
    device = resolve_device(job.train_device)
    compile_too = job.train_compile if job.train_compile is not None else device.type == "cuda"
    rows = []
    for name, build in IMPLEMENTATIONS.items():
        for arithmetic in job.train_precisions:
            if arithmetic == "tf32" and device.type != "cuda":
                continue  # the same arithmetic as fp32 there
            for compiled in (False, True) if compile_too else (False,):
                torch.manual_seed(0)
                model = build(WaveNet(cfg))
                rate, bits = train_rate(model, cfg, job.train_batch_size, job.train_crop,
                                        job.train_steps, device, arithmetic, compiled)
                rows.append({"implementation": name, "precision": arithmetic,
                             "compiled": compiled, "device": str(device),
                             "samples_per_s": rate, "bits": bits})
                print(f"training {name}, {arithmetic}{', compiled' if compiled else ''} on "
                      f"{device}: {rate:,.0f} samples/s, held-out NLL {bits:.4f} bits after "
                      f"{job.train_steps + 1} steps", flush=True)
    return rows


def bench(job: BenchJob, models: dict[str, WaveNetConfig], out_dir: Path,
          vocoder: WaveNetConfig | None = None) -> dict:
    """Measure every model, and copy synthesis with `vocoder` (the vocoder preset's model) if
    given; print Markdown tables and write JSON."""
    checks.validate(job)
    checks.writable_file("out", job.out)
    threads_default = torch.get_num_threads()
    results = []
    for name, cfg in models.items():
        torch.manual_seed(0)
        model = WaveNet(cfg).eval()
        row = {"model": name, "parameters": model.num_parameters(),
               "receptive_field": model.receptive_field, "generation": []}
        torch.set_num_threads(1)
        row["floors"] = {p: floor_rate(row["parameters"], precision=p) for p in job.precisions}
        row["floor_samples_per_s"] = row["floors"].get("fp32") or floor_rate(row["parameters"])
        for batch in job.batch_sizes:
            threads = 1 if batch == 1 else threads_default
            torch.set_num_threads(threads)
            # the PyTorch paths in fp32: the reference the compiled step is compared with
            rates = {method: generation_rate(model, batch, method, threads, job.fast_seconds,
                                             precision="fp32")
                     for method in ("fast", "incremental")}
            rates["naive"] = generation_rate(model, batch, "naive", threads,
                                             steps=job.naive_steps, precision="fp32")
            floor = row["floor_samples_per_s"]
            by_precision = {p: rates["fast"] if p == "fp32" else generation_rate(
                model, batch, "fast", threads, job.fast_seconds, precision=p)
                for p in job.precisions}
            row["generation"].append({
                "batch": batch, "threads": threads, **rates,
                "fast_method": resolve_method(model, "fast"),
                "fast_over_naive": rates["fast"] / rates["naive"],
                "fast_over_incremental": rates["fast"] / rates["incremental"],
                "fraction_of_floor": rates["fast"] / floor if batch == 1 else None,
                "precisions": [{"precision": p, "runs_as": resolve_precision(model, "fast", p),
                                "samples_per_s": rate, "over_fp32": rate / rates["fast"],
                                "fraction_of_floor": (
                                    rate / row["floors"][p] if batch == 1 and row["floors"][p]
                                    else None)}
                               for p, rate in by_precision.items()]})
            print(f"{name} batch {batch} ({threads} thread(s)): fast {rates['fast']:,.0f}, "
                  f"incremental {rates['incremental']:,.0f}, naive {rates['naive']:,.1f} "
                  "samples/s; fast by precision: " + ", ".join(
                      f"{p} {r:,.0f}" for p, r in by_precision.items()), flush=True)
        torch.set_num_threads(1)
        if model.cfg.whitening_order and model.cfg.mel is None:  # vocoders: vocoder_rate
            row["decode_samples_per_s"] = {b: decode_rate(model, b, job.fast_seconds)
                                           for b in job.batch_sizes}
            print(f"{name}: values to audio (the synthesis filter), 1 thread: " + ", ".join(
                f"batch {b} {r:,.0f} samples/s" for b, r in row["decode_samples_per_s"].items()),
                flush=True)
        torch.set_num_threads(threads_default)
        if torch.cuda.is_available():  # the same steps on the GPU (the incremental path)
            on_gpu = WaveNet(cfg).eval().cuda()
            row["cuda_generation"] = [
                {"batch": batch, "incremental": generation_rate(
                    on_gpu, batch, "incremental", 1, job.fast_seconds)}
                for batch in sorted({*job.batch_sizes, 256})]
            print(f"{name} CUDA generation: " + ", ".join(
                f"batch {g['batch']} {g['incremental']:,.0f}" for g in row["cuda_generation"])
                + " samples/s", flush=True)
        row["training"] = training_matrix(cfg, job)
        row["train_threads"] = threads_default
        first = row["training"][0]["precision"]  # the first arithmetic measured, eager
        reference = {r["implementation"]: r for r in row["training"]
                     if r["precision"] == first and not r["compiled"]}
        row["train_samples_per_s"] = reference["ours"]["samples_per_s"]
        row["train_bits"] = reference["ours"]["bits"]
        row["train_straightforward_samples_per_s"] = \
            reference["straightforward"]["samples_per_s"]
        row["train_straightforward_bits"] = reference["straightforward"]["bits"]
        results.append(row)
    report = {"machine": machine_info(), "job": asdict(job), "results": results}
    if vocoder is not None:
        report["vocoder"] = vocoder_rate(vocoder, job.fast_seconds)
        torch.set_num_threads(threads_default)
    print()
    print(format_table(report))
    out = Path(job.out) if job.out else out_dir / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(report, indent=2))
    print(f"\nwritten to {out}")
    return report


def format_table(report: dict) -> str:
    """The results as Markdown tables, plus the machine line."""
    lines = ["| model | params | receptive field | batch | threads | naive | incremental "
             "| fast | fast / naive | fast / incremental | fraction of floor |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["results"]:
        for g in row["generation"]:
            fraction = g.get("fraction_of_floor")
            lines.append(
                f"| {row['model']} | {row['parameters']:,} | {row['receptive_field']} "
                f"| {g['batch']} | {g['threads']} | {g['naive']:,.1f} | {g['incremental']:,.0f} "
                f"| {g['fast']:,.0f} | {g['fast_over_naive']:,.0f}x "
                f"| {g['fast_over_incremental']:.1f}x "
                f"| {'' if fraction is None else f'{fraction:.0%}'} |")
    lines += ["", "Generation in samples/s, all streams together, fp32 weights. fast ran as: "
              + ", ".join(sorted({g["fast_method"] for row in report["results"]
                                  for g in row["generation"]})) + ".", "",
              "The fast path by weight precision (`precision=`; floor: one pass over the "
              "weights packed in that precision, one thread):", "",
              "| model | batch | threads | precision | runs as | samples/s | vs fp32 | floor "
              "| fraction of floor |", "|---|---:|---:|---|---|---:|---:|---:|---:|"]
    for row in report["results"]:
        for g in row["generation"]:
            for p in g.get("precisions", []):
                floor = row.get("floors", {}).get(p["precision"])
                fraction = p.get("fraction_of_floor")
                lines.append(
                    f"| {row['model']} | {g['batch']} | {g['threads']} | {p['precision']} "
                    f"| {p['runs_as']} | {p['samples_per_s']:,.0f} | {p['over_fp32']:.2f}x "
                    f"| {'' if floor is None or g['batch'] != 1 else f'{floor:,.0f}'} "
                    f"| {'' if fraction is None else f'{fraction:.0%}'} |")
    lines += [
              "", "| model | floor: one matvec over all weights, samples/s | train samples/s "
              "| straightforward implementation | ratio | held-out NLL after the timed steps, "
              "ours / straightforward (bits) |", "|---|---:|---:|---:|---:|---:|"]
    for row in report["results"]:
        ours, plain = row["train_samples_per_s"], row["train_straightforward_samples_per_s"]
        lines.append(f"| {row['model']} | {row['floor_samples_per_s']:,.0f} | {ours:,.0f} "
                     f"| {plain:,.0f} | {ours / plain:.2f}x | {row['train_bits']:.4f} / "
                     f"{row['train_straightforward_bits']:.4f} |")
    for row in report["results"]:
        if row.get("cuda_generation"):
            lines.append(f"\n{row['model']} on CUDA, incremental path: " + ", ".join(
                f"batch {g['batch']} {g['incremental']:,.0f}" for g in row["cuda_generation"])
                + " samples/s.")
    lines += ["", "Training, every implementation and arithmetic (samples/s; held-out NLL after "
              "the timed steps from the same weights, bits):", "",
              "| model | implementation | precision | compiled | device | samples/s "
              "| vs ours, same precision eager | held-out NLL |",
              "|---|---|---|---|---|---:|---:|---:|"]
    for row in report["results"]:
        eager = {r["precision"]: r["samples_per_s"] for r in row.get("training", [])
                 if r["implementation"] == "ours" and not r["compiled"]}
        for r in row.get("training", []):
            lines.append(f"| {row['model']} | {r['implementation']} | {r['precision']} "
                         f"| {'yes' if r['compiled'] else 'no'} | {r['device']} "
                         f"| {r['samples_per_s']:,.0f} "
                         f"| {r['samples_per_s'] / eager[r['precision']]:.2f}x "
                         f"| {r['bits']:.4f} |")
    if "vocoder" in report:
        v = report["vocoder"]
        lines.append(f"\nVocoder copy synthesis (the vocoder preset: {v['parameters']:,} "
                     f"parameters, {v['n_mels']} mel bands, hop {v['hop_length']}), batch 1, one "
                     f"thread, {v['method']} path: {v['samples_per_s']:,.0f} samples/s, "
                     f"{v['times_real_time']:.1f}x real time at {v['sample_rate']} Hz.")
    m = report["machine"]
    cuda = f" (CUDA {m['cuda']}, cuDNN {m['cudnn']})" if m.get("cuda") else ""
    lines.append(f"\nMachine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu']}{cuda}; "
                 f"torch {m['torch']}, Python {m['python']}; compiled step: "
                 f"{m['native_step']}.")
    return "\n".join(lines)
