# cream-pl — `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/cream-pl
RUN := $(PY) -m cream_pl.pipelines.runner
STAMP := $(VENV)/.installed
CUB_ROOT ?= data/CUB_200_2011
CUB_DATA ?= data/cub

.DEFAULT_GOAL := help
# DATA, OUT and WORK pick make demo's dataset and folders, from the command line only (an HPC site's $WORK in the
# environment is not make demo's work folder); any other target would ignore them, so it refuses them, and says how
# to run it on another folder
$(foreach v,DATA OUT WORK,$(if $(filter environment,$(origin $(v))),$(eval $(v) :=)))
variant_runner = $(RUN) experiments/demos/<its declaration>.yaml --data/--out/--work
variant_probe-head-lr = $(PY) -m cream_pl.pipelines.probe_head_lr --data/--out
variant_calibrate-cub-sweep = $(PY) -m cream_pl.pipelines.calibrate_preset --out/--work
variant_bench = $(PY) -m cream_pl.pipelines.bench --out
variant_bench-gpu = $(PY) -m cream_pl.pipelines.bench_gpu --out/--work
variant_data-synth = $(CLI) data synth --out
variant_readme-results = $(PY) -m cream_pl.reporting.demo_report --readme README.md --results
variant_train-cub = make train-cub CUB_ROOT=<CUB_200_2011 folder> CUB_DATA=<converted dataset>
variant_pseudo-boxes = make pseudo-boxes CUB_DATA=<converted dataset>
variant_train-regressor = make train-regressor CUB_DATA=<converted dataset>
demo_only = $(foreach v,DATA OUT WORK,$(if $(filter command line,$(origin $(v))),$(error $(v)=$($(v)): only make demo takes DATA, OUT and WORK; make $(1) would ignore it (for a variant: $(or $(variant_$(1)),$(variant_runner))))))
# checked when make reads this file, before any prerequisite (install) runs
$(if $(and $(filter bench,$(MAKECMDGOALS)),$(filter command line,$(origin DRY))),$(error DRY=$(DRY): make bench-gpu takes DRY; make bench would run in full (its smoke run: $(PY) -m cream_pl.pipelines.bench --quick --out <folder>)))
$(foreach g,$(filter data-synth readme-results demo-seeds demo-threads demo-kernels demo-kd demo-methods probe-head-lr train-cub pseudo-boxes train-regressor calibrate-cub calibrate-cub-sweep bench bench-gpu,$(MAKECMDGOALS)),$(call demo_only,$(g)))
# a path make would cut at its spaces (DATA="my data" gives --data my data) is refused before anything runs
$(foreach v,DATA OUT WORK CUB_ROOT CUB_DATA,$(if $(word 2,$($(v))),$(error $(v)="$($(v))": make splits paths at spaces; give one without (a symlink: ln -s "$($(v))" <path without spaces>))))
.PHONY: help install test test-fast test-full lint demo demo-seeds demo-threads demo-kernels readme-results demo-kd demo-methods probe-head-lr calibrate-cub calibrate-cub-sweep train-cub pseudo-boxes train-regressor bench bench-gpu data-synth clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install cream-pl with the pinned, tested versions
	@echo "cream-pl installed in $(VENV)"

test: install ## Every test: unit, multi-process DDP (torchrun, gloo), end-to-end (CPU, 10 to 12 min on 2 cores)
	$(PY) -m pytest -q --doctest-modules cream_pl tests

test-fast: install ## The fast tests only (no multi-process DDP or end-to-end runs; ~3 min)
	$(PY) -m pytest -m "not slow" -q --doctest-modules cream_pl tests

test-full: test ## Same as `make test` (kept for old scripts)

lint: install ## ruff
	$(VENV)/bin/ruff check cream_pl tests

data-synth: install ## Write the embedded synthetic WSOL benchmark (CUB-like preset) to data/synth
	$(CLI) data synth --out data/synth --seed 0 --preset cub

demo: install ## Whole pipeline on the embedded benchmark -> results/embedded/ (DATA=<root> OUT=<dir> WORK=<dir>: any benchmark-format dataset)
	$(RUN) experiments/demos/demo.yaml $(if $(DATA),--data $(DATA) --work $(or $(WORK),outputs/demo_$(notdir $(abspath $(DATA)))) --out $(or $(OUT),results/$(notdir $(abspath $(DATA)))),$(if $(WORK),--work $(WORK) )--out $(or $(OUT),results/embedded))

readme-results: install ## Regenerate the README's results block from results/embedded/metrics.{md,json}
	$(PY) -m cream_pl.reporting.demo_report --readme README.md --results results/embedded

demo-seeds: install ## make demo over SEEDS training seeds (default 3; seed 0 reuses make demo's run) -> results/embedded_seeds/ (other SEEDS: results/embedded_seeds_<SEEDS>seeds/)
	$(RUN) experiments/demos/demo_seeds.yaml $(if $(SEEDS),--seeds $(SEEDS))

demo-threads: install ## make demo's classifier (no CREAM_reg) at two torch threads and at one on this machine, same data, recipe and seed, the second compared number by number with the first: how far the thread count moves results -> results/embedded_threads/ (12 min of stages on 2 cores: timing.total_s of the two metrics.json, 4.9 + 6.9)
	rm -f results/embedded_threads/two_threads/comparison.md results/embedded_threads/one_thread/comparison.md
	$(RUN) experiments/demos/demo.yaml --skip regressor --threads 2 --out results/embedded_threads/two_threads --work outputs/demo_threads/two_threads
	$(RUN) experiments/demos/demo.yaml --skip regressor --threads 1 --out results/embedded_threads/one_thread --work outputs/demo_threads/one_thread --compare results/embedded_threads/two_threads/metrics.json || test -f results/embedded_threads/one_thread/comparison.md

demo-kernels: install ## make demo's classifier (no CREAM_reg) with this machine's CPU kernels and with an AVX2 machine's (--kernels avx2), same data, recipe, seed and threads, the second compared number by number with the first: how far other kernels move results -> results/embedded_kernels/ (9 min of stages on 2 cores: timing.total_s of the two metrics.json, 4.4 + 4.2)
	rm -f results/embedded_kernels/own_kernels/comparison.md results/embedded_kernels/avx2_kernels/comparison.md
	$(RUN) experiments/demos/demo.yaml --skip regressor --out results/embedded_kernels/own_kernels --work outputs/demo_kernels/own_kernels
	$(RUN) experiments/demos/demo.yaml --skip regressor --kernels avx2 --out results/embedded_kernels/avx2_kernels --work outputs/demo_kernels/avx2_kernels --compare results/embedded_kernels/own_kernels/metrics.json || test -f results/embedded_kernels/avx2_kernels/comparison.md

demo-kd: install ## KD-CI-CAM's two claims on the confounded CUB-like preset: val Top-1 Cls / GT-known every epoch (the dilemma), teachers = best val checkpoints over (run, epoch), paired intervals on all / unusual / usual backgrounds -> results/embedded_confounded/ (~18 min)
	$(RUN) experiments/demos/demo_kd.yaml

demo-methods: install ## CAM, HaS, CutMix, ADL, ACoL, SPG, each with and without CREAM (val-selected), paired intervals (ACoL and SPG: head lr chosen on val) -> results/embedded_methods/ (~30 min, then probe-head-lr ~12 min)
	$(RUN) experiments/demos/demo_methods.yaml --readme
	$(MAKE) --no-print-directory probe-head-lr

probe-head-lr: install ## Training loss of every step of each demo-methods run that chooses its head lr on val (ACoL, SPG at 1x/3x/10x, from its declaration) -> results/embedded_methods/probe_head_lr.{json,md}, then its README (11.5 min of training on 2 cores: probe_head_lr.md; after make demo-methods or make data-synth)
	$(PY) -m cream_pl.pipelines.probe_head_lr --out results/embedded_methods/probe_head_lr.json --readme results/embedded_methods

train-cub: install ## CUB VGG16 CREAM recipe (needs CUB on disk; says how to get it otherwise); RECIPE_ARGS="--key=value ...": recipe overrides, e.g. --model.init_args.pretrained=<vgg16 .pth> offline
	$(PY) -m cream_pl.pipelines.recipes train-cub --cub-root $(CUB_ROOT) --data $(CUB_DATA) $(RECIPE_ARGS)

pseudo-boxes: install ## CREAM pseudo boxes over the CUB train split (after train-cub)
	$(PY) -m cream_pl.pipelines.recipes pseudo-boxes --data $(CUB_DATA)

train-regressor: install ## CREAM_reg on the CUB pseudo boxes (after pseudo-boxes): one design chosen on val among PSOL's row (always reported), frozen-feature heads and a fine-tuned objectness head (DESIGN=psol|frozen|both, HEADS=objectness,spatial_mlp,psol)
	$(PY) -m cream_pl.pipelines.recipes train-regressor --data $(CUB_DATA) $(if $(DESIGN),--design $(DESIGN)) $(if $(HEADS),--heads $(HEADS))

calibrate-cub: install ## Where CAM and the center baseline land on the CUB-like synth preset -> results/calibration_cub/
	$(RUN) experiments/demos/calibrate_cub.yaml

calibrate-cub-sweep: install ## How the cub preset's one calibrated knob (body_head_tint) was chosen, CAM + center only -> results/calibration_cub/sweep.md
	$(PY) -m cream_pl.pipelines.calibrate_preset --sweep body_head_tint=0.1,0.2,0.25

bench: install ## Speed figures -> results/bench.{json,md}; WSOLEVAL_REF=<clone of clovaai/wsolevaluation> adds the reference comparison
	$(PY) -m cream_pl.pipelines.bench --out results

bench-gpu: install ## GPU profile of the CUB recipes (fp32 vs bf16 + channels_last, loader vs step, val with / without cream_search, evaluate) -> results/bench_gpu.{json,md}, under 8 min on one GPU; DRY=1: CPU dry run at toy sizes into a temp folder
	$(PY) -m cream_pl.pipelines.bench_gpu $(if $(filter-out 0 no false No False NO FALSE,$(DRY)),--dry-run,--out results)

clean: ## Remove caches and run outputs (keeps .venv and results/)
	rm -rf .pytest_cache .ruff_cache outputs lightning_logs wandb
