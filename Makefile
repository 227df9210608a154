# zoo — run `make help` for the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ZOO    := $(BIN)/zoo
PROFILE ?= cpu

.PHONY: help setup lint test test-fast gpu-check squad squad-fulldev squad-matrix glue-matrix clue-matrix ner-matrix tables publish-local hub-serve reproduce bench-train bench-compression clean
FAMILY   ?= squad
ORG      ?= zoo-local
HUB_DIR  ?= hub
HUB_PORT ?= 8090

help:
	@echo "make setup          venv in $(VENV); CPU torch 2.13.0 only if no torch is importable"
	@echo "make lint           ruff over zoo/, tasks/, tests/"
	@echo "make test           the test suite (uses \$$ZOO_DATA_DIR when set)"
	@echo "make test-fast      the tests not marked slow (no training, export or subprocess)"
	@echo "make squad          dense MiniLM fine-tune + eval on SQuAD (PROFILE=cpu|full)"
	@echo "make squad-fulldev  re-score that checkpoint on all 10,570 dev questions"
	@echo "make squad-matrix   the SQuAD compression matrix (PROFILE=cpu|full), then the tables"
	@echo "make glue-matrix    the GLUE matrix (cpu: SST-2, MRPC, RTE, CoLA, STS-B), then the tables"
	@echo "make clue-matrix    the CLUE matrix (cpu: TNEWS on the minilm-zh transplant), then the tables"
	@echo "make ner-matrix     the NER matrix (cpu: CoNLL-2003; MSRA NER on minilm-zh), then the tables"
	@echo "make tables         results/FAMILY.{csv,md,png}, results/README.md + README table from the matrix cells (FAMILY=$(FAMILY))"
	@echo "make publish-local  publish FAMILY's matrix cells to the local hub folder $(HUB_DIR)/ as ORG=$(ORG); pins them in results/hub/"
	@echo "make hub-serve      serve $(HUB_DIR)/ over the Hub protocol (olah) on 127.0.0.1:$(HUB_PORT)"
	@echo "make reproduce      (with hub-serve running) check the served repos against results/hub/FAMILY-ORG.json, re-score them into a new runs/reproduced/ folder"
	@echo "make bench-train    training throughput vs pad-to-max baseline -> results/bench/"
	@echo "make bench-compression  pruning+KD step (cached/live teacher) vs plain step -> results/bench/"
	@echo "make gpu-check      first thing on a GPU machine: device test, full-profile shapes vs the plan -> results/bench/"

# --system-site-packages: a machine that already has torch (e.g. a CUDA build) keeps it.
setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

lint: setup
	$(BIN)/ruff check zoo tasks tests

# Two workers: a lone run keeps one of two cores idle (user+sys 10 of 12 min wall); the Ray tests share one worker (xdist_group).
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

test-fast: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow"

squad: setup
	$(ZOO) finetune squad --model minilm --profile $(PROFILE) --output runs/squad/dense-$(PROFILE)
	mkdir -p results/squad/dense-$(PROFILE)
	cp runs/squad/dense-$(PROFILE)/metrics.json runs/squad/dense-$(PROFILE)/predictions.json results/squad/dense-$(PROFILE)/

squad-fulldev: setup
	$(ZOO) evaluate squad --model runs/squad/dense-$(PROFILE) --profile $(PROFILE) --eval-examples all --output runs/squad/dense-$(PROFILE)-fulldev
	mkdir -p results/squad/dense-$(PROFILE)-fulldev
	cp runs/squad/dense-$(PROFILE)-fulldev/metrics.json runs/squad/dense-$(PROFILE)-fulldev/predictions.json results/squad/dense-$(PROFILE)-fulldev/

# The runner fine-tunes the dense teacher first when it is missing, skips finished cells
# and redoes interrupted ones.
squad-matrix glue-matrix clue-matrix ner-matrix: %-matrix: setup
	$(ZOO) matrix $* --profile $(PROFILE)
	$(MAKE) tables FAMILY=$*

tables: setup
	$(ZOO) tables $(FAMILY) --profile $(PROFILE)

# HF_ENDPOINT: the cards' links and snippets name the server `make hub-serve` starts.
publish-local: setup
	HF_ENDPOINT=http://127.0.0.1:$(HUB_PORT) $(ZOO) publish $(FAMILY) --org $(ORG) --to $(HUB_DIR) --profile $(PROFILE)

hub-serve: setup
	$(ZOO) hub-serve --dir $(HUB_DIR) --port $(HUB_PORT)

reproduce: setup
	HF_ENDPOINT=http://127.0.0.1:$(HUB_PORT) $(ZOO) reproduce --org $(ORG) --family $(FAMILY)

bench-train: setup
	$(ZOO) bench train --model minilm

bench-compression: setup
	$(ZOO) bench compression

# No setup step: run it with the python that has the machine's CUDA torch and zoo's dependencies
# (GPU_PY=python3 on a machine without the venv). The device test puts the full matrix's modifiers
# on the GPU; `bench scale` runs the full profile's cells at bert-base's shape (random weights, no
# download) for 200 steps on 4,000 questions and writes results/bench/scale-squad-full-cuda.{json,md}.
GPU_PY ?= $(BIN)/python
gpu-check:
	$(GPU_PY) -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
	$(GPU_PY) -m pytest -q -p no:cacheprovider tests/test_device.py
	$(GPU_PY) -m zoo.cli bench scale --max-steps 200 --train-examples 4000 --eval-examples 1000 --batch-size 32 \
		--cells '*-s0-l12' '*-s90-l12-kd' '*-s0-l6-kd' '*-s80-l3-kd'

clean:
	rm -rf runs
