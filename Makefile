# foldwise — the two commands: `make repro` (whole pipeline) and `make test`.
# Both create .venv and install the pinned environment on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Elsewhere than this project's machines, PyPI's torch is a multi-GB CUDA build; for a
# CPU-only wheel: make repro TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
PIP    := $(BIN)/python -m pip --disable-pip-version-check
RUN    := PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1

.PHONY: install repro report exp test test-fast lint docs ui mlflow-server params options bench bench-parts bench-own-model bench-images bench-schemes bench-estimate bench-ensembles bench-coverage clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: anything unpinned that pulls torch would fetch a CUDA build.
	$(PIP) install -q torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PIP) install -q -c requirements/constraints.txt -e '.[dev,server]'
	touch $@

install: $(STAMP)

repro: install  ## run the whole pipeline (DVC skips stages whose inputs did not change)
	$(RUN) dvc repro

report: install  ## write results/report.html from what has run so far, without DVC (preview before the lockbox opens)
	$(RUN) $(BIN)/python pipelines/report.py

# Test processes at once (pytest-xdist). Most of an end-to-end test is single-threaded
# (process start-ups, DVC, MLflow); training processes share the cores (foldwise.threads).
TEST_WORKERS ?= 2

# `dvc exp show` within 120 columns: the headline metrics (cv.*, the selection's swept
# values, nested.*, test.*) and the params that differ; not the dependencies' hashes,
# the creation time, or settings that change no score (tracking, launcher, lockbox…).
EXP_DROP := Created|.*/|(sweep\.(launcher|n_jobs|submitit|max_failures)|curves|lockbox|tracking|diagnosis|engine)\.
exp: install  ## compare experiments, 120 columns wide (ARGS="--csv", ARGS="-n 3", ARGS="--keep optim.lr")
	$(RUN) dvc exp show --no-pager --only-changed --drop '$(EXP_DROP)' $(ARGS)

test: install  ## lint, the layer contract, then every test (unit + end-to-end), TEST_WORKERS at a time
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(RUN) $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: install  ## unit tests only
	$(RUN) $(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

docs: install  ## the user guide (docs/) into site/, as the test suite builds it: a broken link or anchor fails
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

ui: install  ## MLflow UI over the project's tracking store, on http://127.0.0.1:5000
	@$(BIN)/python -c 'from foldwise.tracking import ui_address; print("[foldwise] MLflow UI:", ui_address("http://127.0.0.1:5000"), flush=True)'
	$(BIN)/mlflow ui --backend-store-uri "$$($(BIN)/python -c 'from foldwise.tracking import tracking_uri; print(tracking_uri())')" --host 127.0.0.1 --port 5000

mlflow-server: install  ## shared tracking server: PostgreSQL + mlflow server on 127.0.0.1:5000 (ARGS="--host 0.0.0.0 ..."); Ctrl-C stops it
	$(RUN) $(BIN)/python -m foldwise.tracking.server $(ARGS)

params: install  ## regenerate params.yaml from conf/ (ARGS="data=breast_cancer model=cnn")
	$(BIN)/python -m foldwise.compose $(ARGS)

options: install  ## the table of every setting (docs/configuration.md), from the config schema
	@$(BIN)/python -m foldwise.config.schema

bench: install  ## foldwise's sweep vs one-at-a-time, a plain PyTorch loop and sklearn (~15 min)
	$(RUN) $(BIN)/python benchmarks/bench_engine.py

bench-own-model: install  ## your own network (examples/own_model): stacked vs one-at-a-time vs a Lightning k-fold loop (~5 min)
	$(RUN) $(BIN)/python benchmarks/bench_own_model.py

bench-images: install  ## a folder of drawn images: stacked vs one-at-a-time vs a hand-written Lightning loop with a DataLoader (~5 min)
	$(RUN) $(BIN)/python benchmarks/bench_images.py

bench-schemes: install  ## plain vs nested CV, bootstrap .632+, leave-one-out cost and estimate (~20 min)
	$(RUN) $(BIN)/python benchmarks/bench_schemes.py

bench-estimate: install  ## the sweep's time estimate vs its measured training time, per scheme, cold and with history (~25 min)
	$(RUN) $(BIN)/python benchmarks/bench_estimate.py

bench-coverage: install  ## how often each printed interval covers its target: naive, corrected, nested CV, lockbox BCa; R = 100 (~10 min)
	$(RUN) $(BIN)/python benchmarks/bench_coverage.py $(ARGS)

bench-ensembles: install  ## stacked bagging cost, single vs bagged vs boosted CV, bias–variance (~1 min)
	$(RUN) $(BIN)/python benchmarks/bench_ensembles.py

bench-parts: install  ## where a sweep's time goes: processes, MLflow batching, Lightning per step
	$(RUN) $(BIN)/python benchmarks/bench_sweep.py

clean:  ## remove pipeline outputs (not the MLflow store, not the lockbox audit log)
	rm -rf data results models outputs
