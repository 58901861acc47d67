# Two commands for a fresh machine: `make demo` (main job, no servers) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install system services lint pytest bench clean

demo: install
	$(BIN)/callpulse analyze callpulse/examples/demo_call.ogg --roles agent,customer

test: install services lint pytest

system:
	scripts/ensure-ffmpeg.sh
	scripts/ensure-chromium.sh

$(STAMP): pyproject.toml
	$(MAKE) system
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	# torch is pinned to the CPU build in pyproject; GPU hosts add the [gpu] extra.
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

services:
	scripts/ensure-services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy api worker db callpulse migrations

pytest: install services
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
