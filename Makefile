# The two commands a new user runs:
#   make demo DATA=../shared/data/hippocampus   set up .venv; verify, fingerprint, plan DATA and emit its bundle
#   make test                                   set up .venv, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/hippocampus
NAME ?= $(notdir $(abspath $(DATA)))
JOBS ?= 2

.PHONY: demo test bench clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m samdsk_plan verify $(DATA) -j $(JOBS)
	$(PY) -m samdsk_plan fingerprint $(DATA) -o dataset_fingerprints/$(NAME).json -j $(JOBS)
	$(PY) -m samdsk_plan plan dataset_fingerprints/$(NAME).json -o runs/$(NAME)/plans.json
	$(PY) -m samdsk_plan emit runs/$(NAME)/plans.json -o bundles/$(NAME)

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/fingerprint.py --data $(DATA) -j $(JOBS)

clean-venv:
	rm -rf $(VENV)
