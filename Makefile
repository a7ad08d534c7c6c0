# Single entry point. Every target sets the environment up first (idempotent; the first time on a
# machine it compiles mmcv, 10-20 minutes; afterwards the setup step is a quick check).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
PYTEST_ARGS ?=

.PHONY: setup check test demo smoke benchmark

$(STAMP): tools/setup_env.sh tools/env/constraints.txt tools/env/mmpretrain_multimodal_stub.py \
		setup.cfg pyproject.toml
	VENV=$(VENV) bash tools/setup_env.sh
	touch $(STAMP)

setup: $(STAMP)

check: $(STAMP)
	$(PY) -m swinv2_backbone.env_check

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

smoke: $(STAMP)
	$(PY) tools/smoke.py

demo: $(STAMP)
	$(PY) tools/demo.py

benchmark: $(STAMP)
	$(PY) tools/benchmark.py
