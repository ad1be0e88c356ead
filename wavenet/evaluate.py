"""Held-out negative log-likelihood in bits per sample, and, for vocoders, copy synthesis
scored beside Griffin-Lim from the same mel."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from wavenet import checkpoint, checks
from wavenet.config import EvaluateJob
from wavenet.data import (
    AudioCache,
    Conditioning,
    file_frames,
    file_item,
    open_cache,
    speaker_labels,
    split_files,
)
from wavenet.errors import UserError
from wavenet.files import write_atomic
from wavenet.generate import generate, resolve_precision, teacher_forced
from wavenet.model import WaveNet
from wavenet.quality import (
    griffin_lim,
    sample_quality,
    score_resyntheses,
    speech_metrics_available,
)
from wavenet.quantize import DEFAULT_PRECISION, at_precision
from wavenet.runtime import resolve_device, set_threads

log = logging.getLogger(__name__)


@torch.no_grad()
def heldout_nll(model: WaveNet, cache: AudioCache, file_ids: list[int],
                max_samples: int | None = None, cond: Conditioning | None = None,
                chunk: int = 16000) -> dict:
    """Score every sample (but each file's first) of the given files, in file order.

    Each chunk is run with one receptive field of preceding context, so the result equals a
    single pass over each whole file.

    Returns:
        bits_per_sample: mean NLL in bits; entropy_bits: entropy of the scored samples'
        histogram at the model's resolution (a memoryless model's NLL); samples: how many.
        A mu-law model that whitens its audio (pre-emphasis, linear prediction) scores its
        excitation's classes; it also gets waveform_bits_per_sample: the NLL of the audio's
        own mu-law classes, comparable with a model of the waveform (see `waveform_bins`).
    """
    model.eval()
    cond = cond or Conditioning()
    device = next(model.parameters()).device
    dist = model.dist
    rf = model.receptive_field
    waveform = bool(model.cfg.whitening_order) and model.cfg.output == "mulaw"
    total_nll, wave_nll, counted, targets_seen = 0.0, 0.0, 0, []
    for i in file_ids:
        item = file_item(cache, i, cond)
        speaker = item["speaker"][None].to(device) if "speaker" in item else None
        mel = item["mel"][None].to(device) if "mel" in item else None
        audio = item["audio"][None].to(device)
        at = int(item["mel_offset"]) if mel is not None else 0
        x = model.encode_audio(audio, mel, at)[0]
        if waveform:
            lo, hi = waveform_bins(model, audio, mel, at)
        n = len(x)
        if max_samples is not None:
            n = min(n, max_samples - counted + 1)
        for start in range(1, n, chunk):
            end = min(n, start + chunk)
            first = max(0, start - rf)
            offset = int(item["mel_offset"]) + first if mel is not None else 0
            params = model(x[None, first:end - 1], speaker, mel,
                           mel_offset=offset)[:, :, start - 1 - first:]
            targets = x[None, start:end]
            total_nll += dist.nll(params, targets, reduction="sum").item()
            if waveform:
                wave_nll -= dist.interval_log_prob(params, lo[:, start:end],
                                                   hi[:, start:end]).sum().item()
            counted += end - start
            targets_seen.append(targets.flatten().cpu())
        if max_samples is not None and counted >= max_samples:
            break
    if counted == 0:
        raise UserError("nothing to score: the held-out files are empty")
    result = {
        "bits_per_sample": float(total_nll / counted / np.log(2.0)),
        "entropy_bits": dist.histogram_entropy_bits(torch.cat(targets_seen)),
        "samples": counted,
    }
    if waveform:
        result["waveform_bits_per_sample"] = float(wave_nll / counted / np.log(2.0))
    return result


def waveform_bins(model: WaveNet, audio: torch.Tensor, mel: torch.Tensor | None,
                  mel_offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's own mu-law class, as the interval of excitation values that puts the
    sample in it given the true audio before it: the excitation is e = (s + Σ_k w_k·s₋ₖ) / g,
    so s lies in [lo, hi) exactly when e lies in [(lo − c) / g, (hi − c) / g) with
    c = s − g·e. With the excitation's classes read as uniform over their amplitudes
    (`MuLawCategorical.interval_log_prob`), a whitening model gives every class of the
    waveform a probability; for a model without whitening it is the class's own.

    audio: (B, T) float; mel, mel_offset: as `WaveNet.encode_audio`. Returns (B, T) float64
    each, the lower and upper ends.
    """
    e, gain = model.excitation(audio, mel, mel_offset)
    e, gain = e.double(), gain.double()
    shift = audio.double() - gain * e
    lo, hi = model.dist.bins(audio)
    return (lo - shift) / gain, (hi - shift) / gain


def evaluate(job: EvaluateJob, out_dir: Path) -> dict:
    """Score a checkpoint on held-out audio; print and write the result as JSON."""
    checks.validate(job)
    checks.writable_file("out", job.out)
    set_threads(job.threads)
    device = resolve_device(job.device)
    model, ckpt = checkpoint.load_model(job.checkpoint, job.use_ema, device)
    trained = checkpoint.job_from_dict(ckpt["config"]).data
    over = job.data
    root = over.root or trained.root
    # A different folder than the training one brings no held-out folder of its own.
    same_root = over.root is None or Path(over.root).resolve() == Path(trained.root).resolve()
    valid_root = over.valid_root or (trained.valid_root if same_root else None)
    fraction = over.valid_fraction if over.valid_fraction is not None else trained.valid_fraction
    cache_dir = over.cache_dir or trained.cache_dir
    mel = model.cfg.mel
    if job.split == "valid" and valid_root is not None:
        cache = open_cache(valid_root, trained.audio, cache_dir, mel)
        ids = list(range(len(cache.files)))
    else:
        cache = open_cache(root, trained.audio, cache_dir, mel)
        if job.split == "all" or (job.split == "train" and valid_root is not None):
            ids = list(range(len(cache.files)))
        else:
            train_ids, valid_ids = split_files(cache, fraction)
            ids = valid_ids if job.split == "valid" else train_ids
    cond = Conditioning.for_model(model.cfg)
    if model.cfg.n_speakers:
        index = {name: n for n, name in enumerate(ckpt["speakers"])}
        cond.speakers = [index.get(s) for s in speaker_labels(cache, trained.speakers)]
        ids = [i for i in ids if cond.speakers[i] is not None]
    if not ids:
        raise UserError(f"split={job.split} of {root} holds no usable files; try split=all")
    max_samples = None if job.max_seconds is None else int(job.max_seconds * cache.sample_rate)
    if max_samples == 0:
        raise UserError(f"max_seconds={job.max_seconds:g} is less than one sample at "
                        f"{cache.sample_rate} Hz")
    result = heldout_nll(model, cache, ids, max_samples, cond)
    if mel is not None and job.resynth_files:
        result["copy_synthesis"] = copy_synthesis(model, cache, ids[:job.resynth_files], cond,
                                                  job.resynth_seconds, job.seed,
                                                  job.temperature, job.precision)
        result["mel_distance_db"] = result["copy_synthesis"]["wavenet"]["mel_distance_db"]
    if mel is None and job.sample_streams:
        result["sample_quality"] = free_running_quality(
            model, cache, ids, cond, job.sample_streams, job.sample_seconds, job.seed,
            job.temperature, max_samples, job.precision)
    if job.precisions:
        scored = ({job.precision: result["sample_quality"]["ratio"]}
                  if "sample_quality" in result else {})
        result["precisions"] = compare_precisions(
            model, cache, ids, cond, job.precisions, max_samples, job.precision_seconds,
            result["bits_per_sample"], job.sample_streams if mel is None else 0,
            job.sample_seconds, job.seed, job.temperature, scored)
    result.update(
        checkpoint=str(checkpoint.resolve(job.checkpoint)),
        step=ckpt["step"],
        weights="ema" if job.use_ema and ckpt.get("ema") is not None else "raw",
        split=job.split,
        folder=str(cache.root),
        files=len(ids),
        seconds=result["samples"] / cache.sample_rate,
        gain_bits=result["entropy_bits"] - result["bits_per_sample"],
        job=asdict(job),
    )
    out = Path(job.out) if job.out else out_dir / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(result, indent=2))
    print(f"{'held-out ' if job.split == 'valid' else ''}NLL ({job.split} split): "
          f"{result['bits_per_sample']:.3f} bits/sample over "
          f"{result['seconds']:.1f} s in {len(ids)} files ({result['weights']} weights, "
          f"step {result['step']}); histogram entropy {result['entropy_bits']:.3f} bits "
          f"(gain {result['gain_bits']:.3f}); written to {out}")
    if "waveform_bits_per_sample" in result:
        print(f"the excitation's classes above; the audio's own mu-law classes: "
              f"{result['waveform_bits_per_sample']:.3f} bits/sample (comparable with a model "
              "of the waveform)")
    if "copy_synthesis" in result:
        print(copy_synthesis_table(result["copy_synthesis"]))
    if "sample_quality" in result:
        q = result["sample_quality"]
        print(f"sample quality of {q['streams']} × {q['seconds']:g} s generated at temperature "
              f"{q['temperature']:g}: {q['ratio']:.1f}× the real-data floor (log-mel "
              f"{q['ratio_mel']:.1f}×, band flatness {q['ratio_flatness']:.1f}×, pitch "
              f"{q['ratio_periodicity']:.1f}×; white noise {q['ceiling_ratio']:.1f}×; the data "
              "itself about 1×, a good model at most 3×)")
    if "precisions" in result:
        print(precision_table(result["precisions"]))
    return result


@torch.no_grad()
def compare_precisions(model: WaveNet, cache: AudioCache, file_ids: list[int],
                       cond: Conditioning, precisions: list[str], max_samples: int | None,
                       seconds: float, fp32_bits: float, streams: int = 0,
                       sample_seconds: float = 4.0, seed: int = 0, temperature: float = 1.0,
                       scored: dict[str, float] | None = None) -> dict:
    """What each generation precision costs (`wavenet.quantize`): the held-out NLL with its
    rounded weights (the files and samples `heldout_nll` scores; fp32's is `fp32_bits`), its
    per-step outputs against fp32's for the same inputs (the first file's first `seconds`,
    teacher-forced through the fast path), and with `streams`, the sample quality of streams
    drawn with it (`scored`: the ratios already known, by precision, drawn alike).

    Returns:
        {"fp32_bits_per_sample", "seconds", "rows": [{precision, runs_as, bits_per_sample,
        bits_over_fp32, max_abs_diff, mean_abs_diff, sample_quality?}]}.
    """
    device = next(model.parameters()).device
    item = file_item(cache, file_ids[0], cond, 0, min(cache.files[file_ids[0]].length,
                                                      max(1, int(seconds * cache.sample_rate))))
    speaker = item["speaker"][None].to(device) if "speaker" in item else None
    mel = item["mel"][None].to(device) if "mel" in item else None
    offset = int(item["mel_offset"]) if mel is not None else 0
    values = model.encode_audio(item["audio"][None].to(device), mel, offset)
    if mel is not None:  # from the frame of the excerpt's sample 0 (offset: whole frames)
        mel = mel[:, :, offset // model.cfg.mel.hop_length:]
    reference = teacher_forced(model, values, speaker, mel, precision="fp32")
    scored = dict(scored or {})
    rows = []
    for precision in precisions:
        runs_as = resolve_precision(model, "fast", precision)
        params = (reference if precision == "fp32"
                  else teacher_forced(model, values, speaker, mel, precision=precision))
        bits = (fp32_bits if precision == "fp32" else heldout_nll(
            at_precision(model, precision), cache, file_ids, max_samples, cond)
            ["bits_per_sample"])
        diff = (params - reference).abs()
        row = {"precision": precision, "runs_as": runs_as, "bits_per_sample": bits,
               "bits_over_fp32": bits - fp32_bits, "max_abs_diff": diff.max().item(),
               "mean_abs_diff": diff.mean().item()}
        if streams:
            if precision not in scored:
                scored[precision] = free_running_quality(
                    model, cache, file_ids, cond, streams, sample_seconds, seed, temperature,
                    max_samples, precision)["ratio"]
            row["sample_quality"] = scored[precision]
        rows.append(row)
    return {"fp32_bits_per_sample": fp32_bits, "seconds": values.shape[1] / cache.sample_rate,
            "rows": rows}


def precision_table(report: dict) -> str:
    """`compare_precisions` as a Markdown table."""
    quality = any("sample_quality" in r for r in report["rows"])
    lines = [f"generation precisions (per-step outputs against fp32 over {report['seconds']:.2f}"
             " s teacher-forced through the fast path; held-out NLL with each one's weights):",
             "| precision | runs as | held-out NLL (bits) | vs fp32 (bits) | max abs diff "
             "| mean abs diff |" + (" sample quality |" if quality else ""),
             "|---|---|---:|---:|---:|---:|" + ("---:|" if quality else "")]
    for r in report["rows"]:
        lines.append(f"| {r['precision']} | {r['runs_as']} | {r['bits_per_sample']:.4f} "
                     f"| {r['bits_over_fp32']:+.4f} | {r['max_abs_diff']:.2e} "
                     f"| {r['mean_abs_diff']:.2e} |"
                     + (f" {r['sample_quality']:.2f}× |" if "sample_quality" in r else ""))
    return "\n".join(lines)


def copy_synthesis_table(copy: dict) -> str:
    """The WaveNet and Griffin-Lim scores side by side, as a Markdown table."""
    def cell(scores: dict, key: str, fmt: str) -> str:
        value = scores.get(key)
        return "n/a" if value is None else format(value, fmt)

    lines = [f"copy synthesis of {copy['files']} held-out files ({copy['seconds']:.1f} s in "
             f"all) from their log-mel frames, WaveNet at temperature {copy['temperature']:g}:",
             "| | log-mel distance (dB, lower is better) | PESQ-WB (1-4.64) | STOI (0-1) |",
             "|---|---:|---:|---:|"]
    for name, key in (("WaveNet", "wavenet"), ("Griffin-Lim (32 iterations)", "griffin_lim")):
        s = copy[key]
        lines.append(f"| {name} | {cell(s, 'mel_distance_db', '.2f')} | "
                     f"{cell(s, 'pesq_wb', '.2f')} | {cell(s, 'stoi', '.3f')} |")
    if "pesq_wb" not in copy["wavenet"]:
        lines.append(f"(PESQ and STOI: {speech_metrics_available()})")
    return "\n".join(lines)


@torch.no_grad()
def copy_synthesis(model: WaveNet, cache: AudioCache, file_ids: list[int], cond: Conditioning,
                   seconds: float | None = None, seed: int = 0, temperature: float = 1.0,
                   precision: str = DEFAULT_PRECISION) -> dict:
    """Re-synthesize each file (or its first `seconds`) from its own log-mel features, all in
    one batch, and the same frames with Griffin-Lim, and score both against the originals.

    Each file is cut to whole frames (hop samples each). Files shorter than the longest are
    generated on in the batch from silent frames, and those samples are dropped.

    Returns:
        {"wavenet": scores, "griffin_lim": scores, "files": n, "seconds": total}, the scores
        being means over files of the log-mel distance (dB) and, where `pesq` and `pystoi` are
        installed, PESQ-WB and STOI (see `wavenet.quality`).
    """
    hop, rate = model.cfg.mel.hop_length, cache.sample_rate
    limit = None if seconds is None else int(seconds * rate)
    frames = [min(cache.files[i].length, limit or cache.files[i].length) // hop
              for i in file_ids]
    if min(frames) < 1:
        raise UserError(f"resynth_seconds={seconds} (or a held-out file) is shorter than one "
                        f"mel frame ({hop} samples)")
    own_frames = replace(cond, context=0)  # the stretch's own frames (for Griffin-Lim)
    items = [file_item(cache, i, own_frames, 0, n * hop) for i, n in zip(file_ids, frames,
                                                                         strict=True)]
    device = next(model.parameters()).device
    # The frames after each stretch condition its last samples, as in the whole file.
    context = model.cfg.mel_context_frames
    mel = torch.stack([file_frames(cache, i, 0, max(frames) + context) for i in file_ids])
    speaker = (torch.stack([it["speaker"] for it in items]).to(device)
               if "speaker" in items[0] else None)
    generator = torch.Generator(device=device).manual_seed(seed)
    values = generate(model, max(frames) * hop, generator=generator, speaker=speaker,
                      mel=mel.to(device), temperature=temperature, precision=precision)
    audio = model.audio_decoder(mel.to(device), len(file_ids))(values)
    ours = [x[:n * hop] for x, n in zip(audio, frames, strict=True)]
    references = [it["audio"].numpy() for it in items]
    baseline = [griffin_lim(it["mel"].numpy(), rate, model.cfg.mel, n * hop)
                for it, n in zip(items, frames, strict=True)]
    return {"wavenet": score_resyntheses(references, ours, rate, model.cfg.mel),
            "griffin_lim": score_resyntheses(references, baseline, rate, model.cfg.mel),
            "files": len(items), "seconds": sum(frames) * hop / rate,
            "temperature": temperature}


@torch.no_grad()
def free_running_quality(model: WaveNet, cache: AudioCache, file_ids: list[int],
                         cond: Conditioning, streams: int, seconds: float, seed: int = 0,
                         temperature: float = 1.0, max_samples: int | None = None,
                         precision: str = DEFAULT_PRECISION) -> dict:
    """Generate `streams` × `seconds` from silence and score their frames against those of the
    scored files (`quality.sample_quality`): do the samples sound like the data? The real side
    is the scored audio (`max_samples`), but never less than 4 times the generated audio."""
    rate = cache.sample_rate
    speaker = None
    if cond.speakers is not None:
        voices = [cond.speakers[i] for i in file_ids]
        speaker = torch.tensor([voices[k % len(voices)] for k in range(streams)])
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    length = max(1, int(seconds * rate))
    values = generate(model, length, batch_size=streams, temperature=temperature,
                      generator=generator, speaker=None if speaker is None
                      else speaker.to(device), precision=precision)
    ours = list(model.audio_decoder(None, streams)(values))
    # The floor compares disjoint parts of the real audio as long as the samples: with less
    # than a few times their length (a small max_seconds) it would compare a stretch with
    # itself, and every score would look hundreds of times worse than it is.
    real, left = [], sum(cache.files[i].length for i in file_ids)
    if max_samples is not None:
        left = min(left, max(max_samples, 4 * streams * length))
    for i in file_ids:
        if left <= 0:
            break
        real.append(cache.audio(i, 0, min(left, cache.files[i].length)))
        left -= len(real[-1])
    scores = sample_quality(ours, real, rate)
    return {**scores, "streams": streams, "seconds": length / rate, "temperature": temperature}
