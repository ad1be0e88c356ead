"""Held-out negative log-likelihood in bits per sample."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wavenet import checkpoint
from wavenet.audio import class_entropy_bits, mu_law_encode
from wavenet.config import EvaluateJob
from wavenet.data import AudioCache, open_cache, split_files
from wavenet.errors import UserError
from wavenet.model import WaveNet
from wavenet.runtime import resolve_device, set_threads

log = logging.getLogger(__name__)


@torch.no_grad()
def heldout_nll(model: WaveNet, cache: AudioCache, file_ids: list[int],
                max_samples: int | None = None, chunk: int = 16000) -> dict:
    """Score every sample (but each file's first) of the given files, in file order.

    Each chunk is run with one receptive field of preceding context, so the result equals a
    single pass over each whole file.

    Returns:
        bits_per_sample: mean NLL in bits; entropy_bits: entropy of the scored samples' mu-law
        histogram (a memoryless model's NLL); samples: how many were scored.
    """
    model.eval()
    device = next(model.parameters()).device
    q = model.cfg.quantization_channels
    rf = model.receptive_field
    total_nll, counted, classes_seen = 0.0, 0, []
    for i in file_ids:
        x = torch.from_numpy(mu_law_encode(cache.audio(i), q)).to(device)
        n = len(x)
        if max_samples is not None:
            n = min(n, max_samples - counted + 1)
        for start in range(1, n, chunk):
            end = min(n, start + chunk)
            first = max(0, start - rf)
            logits = model(x[None, first:end - 1])[:, :, start - 1 - first:]
            targets = x[None, start:end]
            total_nll += F.cross_entropy(logits.float(), targets, reduction="sum").item()
            counted += end - start
            classes_seen.append(targets.cpu().numpy().ravel())
        if max_samples is not None and counted >= max_samples:
            break
    if counted == 0:
        raise UserError("nothing to score: the held-out files are empty")
    scored = np.concatenate(classes_seen)
    return {
        "bits_per_sample": float(total_nll / counted / np.log(2.0)),
        "entropy_bits": class_entropy_bits(scored, q),
        "samples": counted,
    }


def evaluate(job: EvaluateJob, out_dir: Path) -> dict:
    """Score a checkpoint on held-out audio; print and write the result as JSON."""
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
    rf = model.receptive_field
    if job.split not in ("valid", "train", "all"):
        raise UserError(f"split={job.split!r}: use valid, train or all")
    if job.split == "valid" and valid_root is not None:
        cache = open_cache(valid_root, trained.audio, cache_dir, rf)
        ids = list(range(len(cache.files)))
    else:
        cache = open_cache(root, trained.audio, cache_dir, rf)
        if job.split == "all" or (job.split == "train" and valid_root is not None):
            ids = list(range(len(cache.files)))
        else:
            train_ids, valid_ids = split_files(cache, fraction)
            ids = valid_ids if job.split == "valid" else train_ids
    if not ids:
        raise UserError(f"split={job.split} of {root} holds no files; try split=all")
    max_samples = None if job.max_seconds is None else int(job.max_seconds * cache.sample_rate)
    result = heldout_nll(model, cache, ids, max_samples)
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
    out.write_text(json.dumps(result, indent=2))
    print(f"held-out NLL: {result['bits_per_sample']:.3f} bits/sample over "
          f"{result['seconds']:.1f} s in {len(ids)} files ({result['weights']} weights, "
          f"step {result['step']}); mu-law histogram entropy {result['entropy_bits']:.3f} bits "
          f"(gain {result['gain_bits']:.3f}); written to {out}")
    return result
