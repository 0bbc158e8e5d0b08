# mmfish: one entry per job. Every target sets up (or reuses) the environment first.
PYTHON ?= .venv/bin/python
PYTEST_ARGS ?=
# The test files spread over every core (pytest-xdist), each file's tests in one worker so that
# its module fixtures (reference trainings) are made once, the longest files first
# (tests/conftest.py); one process where xdist is missing.
PYTEST_PARALLEL = $(shell $(PYTHON) -c 'import xdist' 2>/dev/null && echo --numprocesses=auto --dist=loadfile --no-loadscope-reorder)

.PHONY: setup demo demo-seg demo-cls test test-fast lint format

setup:            ## make or reuse .venv with torch, mmcv (built with ops), mmengine, mmdet, mmfish
	bash tools/setup_env.sh

demo: setup       ## generate the shapes dataset, train Mask R-CNN + FishNet-99 on CPU, evaluate
	$(PYTHON) tools/demo.py

demo-seg: setup   ## train Semantic FPN + FishNet-99 on the shapes label maps on CPU, evaluate mIoU
	$(PYTHON) tools/demo_seg.py

demo-cls: setup   ## train FishNet-99 from scratch on the shapes classification set on CPU, top-1
	$(PYTHON) tools/demo_cls.py

test: setup       ## the whole test suite, slow end-to-end runs included
	$(PYTHON) -m pytest tests $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: setup  ## the suite without the slow end-to-end runs
	$(PYTHON) -m pytest tests -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

lint: setup       ## formatter and linter check (ruff)
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m ruff check .

format: setup
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .
