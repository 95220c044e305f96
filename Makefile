# Tacet: the Makefile is the single entry point. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU install takes the pinned torch build; override for a CUDA install (see README).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# checkov pins packages that clash with ours (networkx, boto3), so it gets its own environment.
CHECKOV_VENV ?= .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov

.PHONY: help install run test test-fast lint bench demo-model clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install tacet with its dev tools

$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet checkov

run: install ## install, then serve the gateway on the embedded default (see README)
	$(VENV)/bin/tacet serve --dev

test: install $(CHECKOV) ## install, then lint and run the whole test suite
	$(VENV)/bin/ruff check .
	TACET_CHECKOV=$(abspath $(CHECKOV)) $(PY) -m pytest

test-fast: install ## unit tests only
	$(PY) -m pytest -m "not integration and not slow"

lint: install ## ruff
	$(VENV)/bin/ruff check .

# Where the data recipe writes the Debian dataset (outside the repository).
DEMO_DATA ?= $(or $(TACET_DATA_DIR),$(HOME)/.cache/tacet/debian-packages)
# Torch device for the demo model's training steps and evaluation (cuda on a GPU machine).
DEMO_DEVICE ?= cpu

demo-model: install ## rebuild models/demo from nothing: data -> tokenizer -> train -> eval (see models/demo/README.md)
	$(PY) -m recipes.debian_data fetch --out $(DEMO_DATA)
	$(PY) -m recipes.tokenizer_recipe --data $(DEMO_DATA) --out models/demo
	$(PY) -m recipes.train_demo --data $(DEMO_DATA) --out models/demo --device $(DEMO_DEVICE)
	$(PY) -m recipes.evaluate_demo --data $(DEMO_DATA) --model models/demo \
		--device $(DEMO_DEVICE) --json models/demo/metrics.json

bench: install ## engine benchmarks (each prints a table of ratios)
	$(PY) bench/bench_forward.py
	$(PY) bench/bench_classify.py
	$(PY) bench/bench_bulk.py

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache .ruff_cache
