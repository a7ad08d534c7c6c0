# Single entry point. Every target sets the environment up first (idempotent; the first time on a
# machine it compiles mmcv, see the README's Quick start; afterwards the setup step is a quick check).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
PYTEST_ARGS ?=
# Test processes (pytest-xdist), whole files each, the CPUs shared out as threads (tests/conftest.py);
# TEST_WORKERS=1 runs the suite in this process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
# The oldest supported stack (torch 2.1), in its own venv: `make test-oldest`.
OLDEST_VENV ?= .venv-torch2.1
OLDEST_STAMP := $(OLDEST_VENV)/.setup-done
SETUP_INPUTS := tools/setup_env.sh tools/env/without-mmcv.txt tools/env/mmcv_source.py tools/env/mmcv_unity.py swinv2_backbone/testing/mmpretrain_stub.py \
	setup.cfg pyproject.toml

.PHONY: setup setup-oldest check test test-oldest demo smoke benchmark

$(STAMP): $(SETUP_INPUTS) tools/env/constraints.txt
	VENV=$(VENV) bash tools/setup_env.sh
	touch $(STAMP)

$(OLDEST_STAMP): $(SETUP_INPUTS) tools/env/constraints-torch2.1.txt
	VENV=$(OLDEST_VENV) SWINV2_CONSTRAINTS=tools/env/constraints-torch2.1.txt bash tools/setup_env.sh
	touch $(OLDEST_STAMP)

setup: $(STAMP)

setup-oldest: $(OLDEST_STAMP)

check: $(STAMP)
	$(PY) -m swinv2_backbone.env_check

test: $(STAMP)
	$(PY) -m pytest tests $(XDIST) $(PYTEST_ARGS)

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -m pytest tests $(XDIST) $(PYTEST_ARGS)

smoke: $(STAMP)
	$(PY) tools/smoke.py

demo: $(STAMP)
	$(PY) tools/demo.py

benchmark: $(STAMP)
	$(PY) tools/benchmark.py
