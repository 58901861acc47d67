# Two commands for a fresh machine: `make demo` (main job, no servers) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install system test-system test-tools services lint pytest test-unit test-integration test-e2e \
	test-contracts bench clean

demo: install
	$(BIN)/callpulse analyze callpulse/examples/demo_call.ogg callpulse/examples/escalation_call.ogg --roles agent,customer

test: install test-system services lint pytest

# Where pip finds the CPU build of torch 2.13.0. Empty: pip's own configuration (on the project's
# build machines a local wheel directory holds it). Elsewhere use the PyTorch CPU index, e.g.
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# since PyPI's torch==2.13.0 is the CUDA build with several GB of nvidia wheels.
TORCH_INDEX ?=

system:
	PYTHON=$(PYTHON) scripts/ensure-system.sh

# Only the dashboard's browser tests (e2e) need Chromium, and only the escalation-call tests (unit)
# espeak-ng and sox; `make demo` installs none of them.
test-system: test-tools
	scripts/ensure-chromium.sh

test-tools:
	PYTHON=$(PYTHON) TEST_TOOLS=1 scripts/ensure-system.sh

$(STAMP): pyproject.toml
	$(MAKE) system
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install -q --index-url $(TORCH_INDEX) "torch==2.13.0")
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

services:
	scripts/ensure-services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy api worker db callpulse migrations training

# Every tier (tests/unit, tests/integration, tests/e2e, tests/contracts): what `make test` and CI run.
pytest: install services
	$(BIN)/python -m pytest -q

# The tiers one at a time. Unit: no Postgres, Redis, worker or browser (seconds to a few minutes,
# mostly tiny models on CPU). Integration: Postgres and Redis. E2E: real worker processes, API
# servers and the headless browser on top of those.
test-unit: install test-tools
	$(BIN)/python -m pytest -q tests/unit tests/contracts

test-integration: install services
	$(BIN)/python -m pytest -q tests/integration

test-e2e: install test-system services
	$(BIN)/python -m pytest -q tests/e2e

# The design's rules (docs/DESIGN.md) as tests: no services needed, seconds.
test-contracts: install
	$(BIN)/python -m pytest -q tests/contracts

bench: install
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
