"""The quality benchmark: its recipes compose as stated, and a budgeted run trains, is scored,
is reported, and is reused when run again."""

import json

from tests.conftest import compose_job, tiny_train_overrides
from wavenet.recipes import CORPORA, RECIPES, Run, budget_overrides, format_table, run_all


def test_the_recipes_compose_for_every_corpus_with_a_wall_clock_budget():
    for corpus in CORPORA.values():
        for overrides in RECIPES.values():
            job = compose_job("train", [corpus, *overrides, *budget_overrides(3, 2)])
            assert job.train.max_time == "180" and job.train.max_steps is None
            assert job.train.threads == 2 and job.train.sample_every is None
    plain = compose_job("train", [CORPORA["piano"], *RECIPES["straightforward"]])
    m, t = plain.model, plain.train
    assert m.layers_per_cycle * m.cycles == 24
    assert (m.residual_channels, m.gate_channels, m.skip_channels) == (64, 128, 256)
    assert (t.batch_size, plain.data.crop_samples, t.lr) == (4, 4000, 1e-3)
    assert t.final_lr is None and t.warmup_steps == 0 and t.ema_decay is None
    assert t.weight_decay == 0 and not plain.data.flip_polarity and m.input == "onehot"
    assert m.pre_emphasis == 0 and m.adaptive_lpc_order == 0
    default = compose_job("train", [CORPORA["piano"]])
    assert (default.model.input, default.train.weight_decay) == ("both", 0.05)
    assert default.model.pre_emphasis == 0.85 and default.model.adaptive_lpc_order == 32
    for preset in ("demo", "vocoder", "demo_vocoder", "base"):  # they keep what they measured
        job = compose_job("train", [f"experiment={preset}", "data.root=/x"])
        assert job.model.input == "onehot" and job.train.weight_decay == 0, preset
        assert job.model.pre_emphasis == (0.85 if "vocoder" in preset else 0), preset
        assert job.model.adaptive_lpc_order == 0, preset


def test_a_budgeted_run_is_trained_scored_reported_and_reused(tone_folder, tmp_path):
    base = [o for o in tiny_train_overrides(tone_folder, tmp_path)
            if not o.startswith(("train.max_steps", "train.eval_every", "train.checkpoint_every",
                                 "train.sample_every", "train.eval_max_seconds"))]
    runs = [Run("tones", recipe, 0.02, compose_job("train", base + extra
                                                       + budget_overrides(0.02, 1)))
            for recipe, extra in (("a", []), ("b", ["train.lr=0.01"]))]
    report = run_all(runs, tmp_path / "q", streams=1, seconds=0.1)
    written = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert written == report and [r["recipe"] for r in report["runs"]] == ["a", "b"]
    for row in report["runs"]:
        assert row["steps"] >= 1 and 0 < row["bits_per_sample"] < 10
        quality = row["sample_quality"]
        assert quality["streams"] == 1 and quality["floor"] > 0
        assert (tmp_path / "q" / "tones" / row["recipe"] / "0.02m" / "evaluation.json").is_file()
    table = format_table(report)
    assert table.splitlines()[2].startswith("| tones | 0.02 min | ")
    assert "a: bits/sample" in table and "b: sample quality" in table
    again = run_all(runs[:1], tmp_path / "q", streams=1, seconds=0.1)  # budget already spent
    assert again["runs"][0]["steps"] == report["runs"][0]["steps"]
