# make help — list the targets. Everything installs itself into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install demo demo-vocoder test test-all lint bench quality demo-data clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# PESQ compiles C at install: without a compiler, evaluate reports the log-mel distance only.
	$(BIN)/python -m pip install --quiet -e '.[speech]' || \
		echo "note: PESQ/STOI not installed (no C compiler?); vocoder evaluation skips them"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install wavenet with its dependencies

demo: $(STAMP) ## train the small model on the bundled piano (CPU, minutes), then sample and evaluate
	$(BIN)/wavenet-train experiment=demo train.resume=auto
	$(BIN)/wavenet-sample checkpoint=outputs/demo n_samples=2 seconds=3 temperature=1.0 seed=0 \
		out_dir=outputs/demo/samples
	$(BIN)/wavenet-evaluate checkpoint=outputs/demo out=outputs/demo/evaluation.json
	@echo "demo done: audio and spectrograms in outputs/demo/samples/, TensorBoard logs in outputs/demo/tensorboard/"

demo-vocoder: $(STAMP) ## train a mel-conditioned vocoder on the bundled speech, then copy-synthesize
	$(BIN)/wavenet-train experiment=demo_vocoder train.resume=auto
	$(BIN)/wavenet-sample checkpoint=outputs/demo-vocoder \
		mel_from=data/demo/speech/valid/slt/slt_s39.flac out_dir=outputs/demo-vocoder/samples
	$(BIN)/wavenet-evaluate checkpoint=outputs/demo-vocoder out=outputs/demo-vocoder/evaluation.json
	@echo "vocoder demo done: outputs/demo-vocoder/samples/sample_00.wav re-synthesizes data/demo/speech/valid/slt/slt_s39.flac"

test: $(STAMP) ## the default test suite (a few minutes on 2 cores)
	$(BIN)/python -m pytest -q

test-all: $(STAMP) ## every test, the slow ones too
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP) ## ruff
	$(BIN)/ruff check wavenet scripts tests data

bench: $(STAMP) ## generation and training speed of model=small and model=base (table + JSON)
	$(BIN)/wavenet-bench out=outputs/bench.json

quality: $(STAMP) ## recipes trained 3/6/12 min on the bundled piano and speech: held-out bits and sample quality (about 90 min)
	$(BIN)/wavenet-quality --out outputs/quality

demo-data: ## regenerate data/demo (needs Debian's fluidsynth, fluid-soundfont-gm, flite, festival)
	apt-get install -y fluidsynth fluid-soundfont-gm flite festival festvox-kdlpc16k
	$(BIN)/python -m pip install --quiet mido soxr
	$(BIN)/python data/make_demo_data.py

clean: ## remove the virtual environment and outputs
	rm -rf $(VENV) outputs multirun .pytest_cache
