"""The demo's promise, on the bundled data: held-out NLL at least 1.5 bits below the entropy of
the held-out mu-law histogram after the demo's training. Several minutes: `make test-all`."""

import pytest

from tests.conftest import compose_job
from wavenet.config import EvaluateJob
from wavenet.evaluate import evaluate
from wavenet.train import train


@pytest.mark.slow
def test_demo_beats_the_histogram_entropy_by_1_5_bits(tmp_path):
    job = compose_job("train", ["experiment=demo", f"data.cache_dir={tmp_path / 'cache'}",
                                "train.progress=false", "train.sample_every=null"])
    path = train(job, tmp_path / "demo")
    result = evaluate(EvaluateJob(checkpoint=str(path), out=str(tmp_path / "eval.json")),
                      tmp_path)
    assert result["files"] == 2
    assert result["entropy_bits"] - result["bits_per_sample"] >= 1.5, result
