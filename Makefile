# Two commands for a newcomer on a fresh machine: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Our CPU machines need this pair (torch 2.13.0+cpu breaks `import torchvision`, and with it open_clip).
# On a GPU machine, install your own torch first and run `make install TORCH_SPEC=`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Upper bounds for releases that break each other on our package index (see the file).
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(strip $(TORCH_SPEC)),$(BIN)/python -m pip install -q $(TORCH_SPEC))
	$(BIN)/python -m pip install -q -e ".[dev]" $(if $(strip $(CONSTRAINTS)),-c $(CONSTRAINTS))
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: $(STAMP)
	@# the A/B rating page is tested in a real headless chromium (Debian's); under CI that test fails without it
	bash scripts/install_browser.sh || echo "could not install chromium (needs root and apt): the rating-page test skips locally and fails under CI"
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --out bench-results

clean:
	rm -rf out bench-results .pytest_cache
