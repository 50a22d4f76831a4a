# wsol-bench: every target sets up .venv on first use. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/paper.yaml
# Extra config overrides, e.g. ARGS="train.epochs=1 name=quick"; OVERWRITE=1 replaces an existing run folder;
# RESUME=1 continues an interrupted one; NPROC=2 runs 2 processes on this machine (torchrun, DDP).
ARGS   ?=
OVERWRITE ?=
RESUME ?=
NPROC  ?=
# EXECUTOR=ray runs a study's runs as parallel Ray tasks (checks the study, then installs the ray extra; docs/ray.md),
# on a Ray started here or on the cluster at RAY_ADDRESS (auto, host:6379); RUN_RESOURCES=cpu=2,gpu=1 per run
# (default: one CPU per torch thread of a run, as a sequential study runs it).
# With EXECUTOR=ray, NPROC is the processes per run (torchrun inside each task); without, of the one job.
EXECUTOR ?=
RAY_ADDRESS ?=
RUN_RESOURCES ?=
RAY    := $(filter ray,$(EXECUTOR))
RAY_STAMP := $(VENV)/.installed-ray
LAUNCH  = $(if $(and $(NPROC),$(if $(RAY),,1)),-m torch.distributed.run --standalone --nproc-per-node=$(NPROC))
EXECUTOR_ARGS = $(if $(EXECUTOR),--executor $(EXECUTOR)) $(if $(RAY),$(if $(RAY_ADDRESS),--ray-address $(RAY_ADDRESS)) \
	$(if $(RUN_RESOURCES),--run-resources $(RUN_RESOURCES)) $(if $(NPROC),--nproc $(NPROC)))
# QUICK=1 runs a study's quick variant (study.quick in the study file).
QUICK ?=
# Where datasets live (overrides the config's data_root), e.g. DATA_ROOT=/datasets
DATA_ROOT ?=
RUN_ARGS = $(if $(DATA_ROOT),data_root=$(DATA_ROOT)) $(ARGS)
# run's flags from the variables above; $(strip ...) in the recipe echoes one clean line (no continuation, no gaps).
RUN_FLAGS = $(if $(OVERWRITE),--overwrite) $(if $(RESUME),--resume) $(if $(QUICK),--quick) $(EXECUTOR_ARGS)

.DEFAULT_GOAL := help
.PHONY: help venv benchmark report data lint test test-fast perf docs-img clean-venv

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: CONFIG=$(CONFIG) ARGS=\"key=value ...\" OVERWRITE=1 RESUME=1 NPROC=2 QUICK=1 DATA_ROOT=/path/to/datasets"
	@echo "             EXECUTOR=ray RAY_ADDRESS=auto RUN_RESOURCES=cpu=2,gpu=1 (a study's runs in parallel, docs/ray.md)"

venv: $(STAMP) ## Create .venv and install the pinned dependencies (once)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[ray]'
	@touch $(RAY_STAMP)

BENCH_RUN = -m bench run $(CONFIG) $(RUN_ARGS) $(RUN_FLAGS)

# With EXECUTOR=ray the study is checked (--check: nothing written or started) before Ray is installed.
benchmark: $(STAMP) ## Run CONFIG (a run or a study; default the pooling study) into results/<name>/
	$(if $(RAY),$(strip $(PY) $(BENCH_RUN) --check))
	$(if $(RAY),@$(MAKE) --no-print-directory $(RAY_STAMP))
	$(strip $(PY) $(LAUNCH) $(BENCH_RUN))

report: $(STAMP) ## Re-render a study's tables, figures and web page (or a run's page) from finished runs (no training)
	$(strip $(PY) -m bench report $(CONFIG) $(RUN_ARGS) $(if $(QUICK),--quick))

data: $(STAMP) ## Generate (if needed) the dataset CONFIG uses
	$(strip $(PY) -m bench data $(CONFIG) $(RUN_ARGS))

lint: $(STAMP) ## Check the code with ruff (rules in pyproject.toml)
	$(VENV)/bin/ruff check bench tests

test: $(STAMP) $(if $(RAY),$(RAY_STAMP)) ## Run the whole test suite, slow tests included (EXECUTOR=ray: the Ray tests too; CI)
	$(PY) -m pytest -q

test-fast: $(STAMP) $(if $(RAY),$(RAY_STAMP)) ## Run the tests not marked slow (no subprocess, torchrun or study runs): for development
	$(PY) -m pytest -q -m "not slow"

perf: $(STAMP) ## Time the threshold sweep, the CAM overhead, training images/s, each map method's cost and the faithfulness metrics'
	$(PY) -m bench.commands.perf

docs-img: $(STAMP) ## Refresh the docs' figures in docs/img/ from results/{paper,paper_birds12,paper_full,lse_sweep,resolution}/ (run the studies first)
	@mkdir -p docs/img
	@if [ -f results/paper/by_epoch.csv ] && [ -f results/paper_birds12/by_epoch.csv ]; then \
	  $(PY) -m bench.study.epoch_trajectory results/paper=48-species results/paper_birds12=12-hue-classes \
	    --out docs/img/by_epoch.png --title "GAP - GMP at every epoch against that epoch's cls error (val, synthetic data)"; \
	else echo "skipped docs/img/by_epoch.png: run configs/paper.yaml and configs/paper_birds12.yaml first"; fi
	$(PY) -c "from PIL import Image; \
	cams = Image.open('results/paper/cams_gap_vs_gmp.png').convert('RGB'); \
	cams.resize((cams.width * 11 // 20, cams.height * 11 // 20), Image.LANCZOS).save('docs/img/cams_gap_vs_gmp.jpg', quality=85)"
	@for figure in paper/learning_curves:learning_curves paper_full/boxacc_vs_tau:paper_full_boxacc_vs_tau \
	    lse_sweep/lse_sweep:lse_sweep resolution/map_resolution:map_resolution; do \
	  png=results/$${figure%%:*}.png; study=$${figure%%/*}; \
	  if [ -f $$png ]; then $(PY) -c "from PIL import Image; Image.open('$$png').save('docs/img/$${figure##*:}.png', optimize=True)"; \
	  else echo "skipped docs/img/$${figure##*:}.png: no $$png (run make benchmark CONFIG=configs/$$study.yaml)"; fi; \
	done

clean-venv: ## Remove .venv (datasets in data/ and runs in results/ are kept)
	rm -rf $(VENV)
