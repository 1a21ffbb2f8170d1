# The two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIN    := -c requirements/constraints.txt
STAMP  := $(VENV)/.mmprune-installed
DEMO_DATA   := data/kitti_synth
DEMO_WORK   := work_dirs/demo
DEMO_CONFIG := configs/demo/centernet_dla34_kitti_demo.py
export MAX_JOBS ?= 2
export OMP_NUM_THREADS ?= 2

.PHONY: env demo test test-fast lint clean

env: $(STAMP)

# torch first (mmcv's build imports it), then mmcv from source against it, then the rest.
$(STAMP): setup.py requirements/*.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(PIN) torch
	$(PIP) install --quiet $(PIN) -r requirements/build.txt
	MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation $(PIN) -r requirements/mmcv.txt
	$(PIP) install --quiet $(PIN) -r requirements/runtime.txt -r requirements/tests.txt
	$(PIP) install --quiet --no-build-isolation --no-deps -e .
	$(PY) -c "import mmcv.ops, mmdet, mmprune; print('mmprune env ready')"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/misc/make_synthetic_kitti.py $(DEMO_DATA) --skip-existing
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK)
	$(PY) tools/test.py $(DEMO_CONFIG) "$$(cat $(DEMO_WORK)/last_checkpoint)" \
	    --work-dir $(DEMO_WORK)

test: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(PY) -m ruff check mmprune tools tests benchmarks configs

clean:
	rm -rf $(VENV) work_dirs data/kitti_synth
