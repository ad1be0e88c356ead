"""Does the fused stack's hand-written backward earn its keep? Full training steps of four paths.

    python scripts/compare_training_paths.py --models small base --steps 5 --repeats 2 \
        --out outputs/training_paths.json

(a) fused: today's training path (`residual_stack`, hand-written backward), eager;
(b) loop: plain autograd over the model's own ResidualBlocks, each layer computing only the time
    steps that the scored outputs need (`residual_loop`), eager;
(c) loop, compiled: `torch.compile` of the whole forward of (b) (embedding, loop, head);
(d) fused, compiled: `torch.compile` of the model (the stack stays eager inside it).

A step is what training does: the forward from first_output = RF - 1, the mu-law NLL on the
scored columns, the backward and an Adam step, on the benchmark's batch (4 noisy-tone crops of
2,000 predicted samples plus the receptive field; `wavenet.bench.tone_crops`). The variants are
interleaved (a b c d, a b c d, …) so that load from other jobs hits them alike; every variant
trains its own copy of the same initial weights on the same batches, so their losses must agree.
The first `--warmup` steps are the start-up (compilation for c and d); their excess over the
steady median step is the warm-up cost. Each repeat starts from fresh models and
`torch._dynamo.reset()`; repeat 1 compiles with an empty Inductor cache (a fresh
TORCHINDUCTOR_CACHE_DIR unless one is set), later ones may hit the cache that repeat 1 filled.
"""

from __future__ import annotations

import os
import tempfile

if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # before torch is imported: a cold first compile
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from wavenet.bench import machine_info, tone_crops  # noqa: E402
from wavenet.cli import model_config  # noqa: E402
from wavenet.layers import residual_loop  # noqa: E402
from wavenet.model import WaveNet  # noqa: E402

VARIANTS = {"a": "fused + hand-written backward", "b": "plain autograd loop",
            "c": "loop, torch.compile", "d": "fused, torch.compile"}
TYPICAL_STEPS = {"small": 400, "base": 2000}  # the demo's run; a short model=base run


class LoopWaveNet(nn.Module):
    """`WaveNet.forward` with the stack run by `residual_loop`: the same parameters, the same
    function, all of it traceable by torch.compile."""

    def __init__(self, model: WaveNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, first_output: int = 0) -> torch.Tensor:
        """x: (B, T) classes -> (B, P, T - first_output)."""
        m = self.model
        extra = m.conditioning(length=x.shape[1])
        return m.head(residual_loop(m.layers, m.embed_input(x), extra, first_output))


def make_variants(cfg) -> tuple[dict, WaveNet]:
    """name -> (forward, model, optimizer), every model a copy of one initialization; and it."""
    torch.manual_seed(0)
    init = WaveNet(cfg)
    variants = {}
    for name in VARIANTS:
        model = copy.deepcopy(init).train()
        forward = {"a": model, "b": LoopWaveNet(model), "c": torch.compile(LoopWaveNet(model)),
                   "d": torch.compile(model)}[name]
        variants[name] = (forward, model, torch.optim.Adam(model.parameters(), lr=1e-3))
    return variants, init


def train_step(forward, model: WaveNet, opt, x: torch.Tensor) -> tuple[float, float]:
    """One training step on classes x (B, RF + N); returns (seconds, loss)."""
    rf = model.receptive_field
    start = time.perf_counter()
    loss = model.dist.nll(forward(x[:, :-1], first_output=rf - 1), x[:, rf:])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start, loss.item()


def measure(name: str, steps: int, warmup: int, batch: int, crop: int) -> dict:
    """One repeat for one model: every variant's step times and losses, interleaved."""
    cfg = model_config(name)
    torch._dynamo.reset()
    variants, init = make_variants(cfg)
    dist, rf = cfg.distribution(), cfg.receptive_field
    times = {v: [] for v in variants}
    losses = {v: [] for v in variants}
    for i in range(warmup + steps):
        x = tone_crops(dist, batch, rf + crop, seed=i)
        for v, (forward, model, opt) in variants.items():
            seconds, loss = train_step(forward, model, opt, x)
            times[v].append(seconds)
            losses[v].append(loss)
            if i < warmup:
                print(f"  {name} {v} warm-up step {i}: {seconds:.2f} s", flush=True)
        print(f"  {name} step {i}: " + ", ".join(f"{v} {times[v][-1]:.3f} s" for v in times),
              flush=True)
    held_out = tone_crops(dist, batch, rf + crop, seed=10**6)
    bits = {}
    with torch.no_grad():  # each variant's weights, scored by the one eager forward
        for v, (_, model, _) in variants.items():
            model.eval()
            bits[v] = dist.nll(model(held_out[:, :-1], first_output=rf - 1),
                               held_out[:, rf:]).item() / math.log(2)
    # The weights after training: how far each variant's are from (a)'s, against how far
    # training moved (a)'s.
    weights = {v: torch.cat([p.detach().flatten() for p in model.parameters()])
               for v, (_, model, _) in variants.items()}
    start = torch.cat([p.detach().flatten() for p in init.parameters()])
    return {"times": times, "losses": losses, "held_out_bits": bits,
            "weight_change": (weights["a"] - start).abs().max().item(),
            "weight_difference": {v: (w - weights["a"]).abs().max().item()
                                  for v, w in weights.items()}}


def summarize(name: str, repeats: list[dict], warmup: int, batch: int, crop: int) -> dict:
    """Steady rates (best and median step), warm-up costs, ratios to (a), break-even steps."""
    samples = batch * crop
    out = {"model": name, "variants": {}}
    for v in VARIANTS:
        steady = [t for r in repeats for t in r["times"][v][warmup:]]
        best, median = min(steady), statistics.median(steady)
        # Warm-up cost of each repeat: the start-up steps' time beyond steady steps' time.
        costs = [sum(r["times"][v][:warmup]) - warmup * statistics.median(r["times"][v][warmup:])
                 for r in repeats]
        out["variants"][v] = {
            "label": VARIANTS[v], "best_step_s": best, "median_step_s": median,
            "best_samples_per_s": samples / best, "median_samples_per_s": samples / median,
            "warmup_cost_s": costs, "first_step_s": [r["times"][v][0] for r in repeats],
            "held_out_bits": [r["held_out_bits"][v] for r in repeats]}
    a = out["variants"]["a"]
    typical = TYPICAL_STEPS.get(name)
    for row in out["variants"].values():
        row["a_over_this_best"] = row["best_step_s"] / a["best_step_s"]
        row["a_over_this_median"] = row["median_step_s"] / a["median_step_s"]
        # Steps n after which this variant's total time n·t + cost drops below (a)'s.
        cost, cost_a = row["warmup_cost_s"][0], a["warmup_cost_s"][0]  # cold: repeat 1
        gain = a["median_step_s"] - row["median_step_s"]
        row["break_even_steps"] = (max(0.0, (cost - cost_a) / gain) if gain > 0 else None)
        if typical:
            row["typical_steps"] = typical
            row["a_over_this_typical"] = [
                (typical * row["median_step_s"] + c) / (typical * a["median_step_s"] + c_a)
                for c, c_a in zip(row["warmup_cost_s"], a["warmup_cost_s"], strict=True)]
    losses = [r["losses"][v] for r in repeats for v in VARIANTS]
    out["max_loss_difference"] = max(
        abs(x - y) for r in repeats for v in VARIANTS
        for x, y in zip(r["losses"][v], r["losses"]["a"], strict=True))
    out["loss_range"] = [min(map(min, losses)), max(map(max, losses))]
    out["max_weight_difference"] = max(d for r in repeats for d in r["weight_difference"].values())
    out["min_weight_change"] = min(r["weight_change"] for r in repeats)
    return out


def format_table(report: dict) -> str:
    """The summaries as one Markdown table, plus the loss agreement and the machine."""
    lines = ["| model | variant | best samples/s | median samples/s | a / this (best) "
             "| a / this (median) | warm-up s (cold; cached) | break-even steps vs a "
             "| a / this over a typical run | held-out bits |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in report["summaries"]:
        for v, row in s["variants"].items():
            costs = "; ".join(f"{c:.1f}" for c in row["warmup_cost_s"])
            even = row["break_even_steps"]
            even = "never" if even is None else f"{even:,.0f}"
            typical = ("" if "typical_steps" not in row else
                       f"{row['a_over_this_typical'][0]:.2f}x ({row['typical_steps']:,} steps"
                       + (f"; cached {row['a_over_this_typical'][-1]:.2f}x"
                          if len(row["a_over_this_typical"]) > 1 else "") + ")")
            bits = " / ".join(f"{b:.4f}" for b in row["held_out_bits"])
            lines.append(
                f"| {s['model']} | ({v}) {row['label']} | {row['best_samples_per_s']:,.0f} "
                f"| {row['median_samples_per_s']:,.0f} | {row['a_over_this_best']:.2f}x "
                f"| {row['a_over_this_median']:.2f}x | {costs} | {even} | {typical} | {bits} |")
    lines.append("")
    for s in report["summaries"]:
        lines.append(f"{s['model']}: training losses of all variants within "
                     f"{s['max_loss_difference']:.2e} nats of (a)'s, step by step (losses "
                     f"{s['loss_range'][0]:.4f}–{s['loss_range'][1]:.4f}); weights after "
                     f"training within {s['max_weight_difference']:.1e} of (a)'s, which moved "
                     f"up to {s['min_weight_change']:.1e}.")
    job, m = report["job"], report["machine"]
    lines.append(f"\nBatch {job['batch']} × {job['crop']:,} predicted samples; "
                 f"{job['warmup']} warm-up + {job['steps']} timed steps per variant per repeat, "
                 f"{job['repeats']} repeats, interleaved; {job['threads']} threads. "
                 f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["small", "base"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant, repeat")
    parser.add_argument("--warmup", type=int, default=2, help="start-up steps, not timed")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("outputs/training_paths.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {"machine": machine_info(), "job": {k: v for k, v in vars(args).items()
                                                 if k != "out"},
              "inductor_cache": os.environ["TORCHINDUCTOR_CACHE_DIR"],
              "repeats": {}, "summaries": []}
    for name in args.models:
        report["repeats"][name] = []
        for r in range(args.repeats):
            print(f"{name}, repeat {r + 1}/{args.repeats}", flush=True)
            report["repeats"][name].append(
                measure(name, args.steps, args.warmup, args.batch, args.crop))
        report["summaries"].append(
            summarize(name, report["repeats"][name], args.warmup, args.batch, args.crop))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))  # what is done so far
    print()
    print(format_table(report))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
