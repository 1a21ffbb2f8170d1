# The two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIN    := -c requirements/constraints.txt
STAMP  := $(VENV)/.mmprune-installed
DEMO_DATA   := data/kitti_synth
DEMO_WORK   := work_dirs/demo
DEMO_BASE   := configs/demo/centernet_dla34_kitti_demo.py
DEMO_CONFIG := configs/demo/centernet_dla34_prune50_demo.py
DEMO_EXPORT := $(DEMO_WORK)/export
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
	$(PIP) install --quiet $(PIN) -r requirements/runtime.txt -r requirements/tests.txt -r requirements/deploy.txt \
	    -r requirements/cls.txt
	$(PIP) install --quiet --no-build-isolation --no-deps -e .
	$(PY) -c "import mmcv.ops, mmdet, mmprune; print('mmprune env ready')"
	@touch $(STAMP)

# The flagship, CPU-sized: train CenterNet DLA-34 with in-train pruning to
# 50 % MACs on synthetic KITTI, test with the KITTI metric, export the small
# model, compare it with the unpruned one and write the pruning report.
demo: $(STAMP)
	$(PY) tools/misc/make_synthetic_kitti.py $(DEMO_DATA) --skip-existing
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK)
	$(PY) tools/test.py $(DEMO_CONFIG) "$$(cat $(DEMO_WORK)/last_checkpoint)" \
	    --work-dir $(DEMO_WORK)
	$(PY) tools/export_pruned.py $(DEMO_CONFIG) "$$(cat $(DEMO_WORK)/last_checkpoint)" \
	    --out $(DEMO_EXPORT)
	$(PY) tools/test.py $(DEMO_EXPORT)/config.py $(DEMO_EXPORT)/model.pth \
	    --work-dir $(DEMO_EXPORT)
	$(PY) tools/analysis_tools/compare_export.py $(DEMO_BASE) $(DEMO_EXPORT)
	$(PY) tools/analysis_tools/prune_report.py $(DEMO_WORK) --out $(DEMO_WORK)/report

# Two pytest-xdist workers, one thread each: the tests' tiny models spend
# their time in Python, not in BLAS, so two processes use both cores where
# one process with two threads uses little more than one. TEST_WORKERS=0
# runs in this process (for a debugger).
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test: $(STAMP)
	$(PYTEST) --durations=15 tests

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" tests

lint: $(STAMP)
	$(PY) -m ruff check mmprune tools tests benchmarks configs

clean:
	rm -rf $(VENV) work_dirs data/kitti_synth
