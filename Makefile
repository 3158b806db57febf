# The two commands of the README: `make demo` and `make test`.
# Each creates (or reuses) .venv and installs what it needs from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-full lint docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned: 2.13.0 is a local CPU wheel on our machines, while an
# unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[tensorflow,export]"
	touch $@

demo: $(VENV)/.demo-installed
	KERAS_BACKEND=tensorflow $(PY) examples/demo.py

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check .

docs: $(VENV)/.dev-installed
	$(PY) -m mkdocs build --strict --site-dir site

# Everything but the `full` tier (1,000-case fuzzing, the int8 accuracy
# measurement), which keeps `make test` well inside its time budget.
test: lint docs
	$(PY) -m pytest -q -m "not full"

test-full: lint docs
	$(PY) -m pytest -q

clean:
	rm -rf site .pytest_cache build *.egg-info
