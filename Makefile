# The two commands a new user runs:
#   make demo DATA=../shared/data/hippocampus   set up .venv; verify, fingerprint, plan DATA, emit its bundle,
#                                               split off 10 % labels and run one SamDSK round (short CPU budget);
#                                               DATA=../shared/data/psfhs: the same on 2D ultrasound (1 % labels)
#   make test                                   set up .venv, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/hippocampus
NAME ?= $(notdir $(abspath $(DATA)))
JOBS ?= 2
DEVICE ?= cpu
# per demo dataset: the labelled share, the split's options and a short budget that runs on 2 CPU cores in
# under 20 minutes (drop LOOP_ARGS for the bundle's full training); other datasets get the default ones.
# Less training leaves diffuse probabilities, which make matching much slower (minutes per case, not seconds).
LABELLED_hippocampus := 0.1
LOOP_ARGS_hippocampus := --rounds 1 --epochs 15 --iterations-per-epoch 50 --batch-size 2 --val-interval 5 \
	--set 'network_def\#filters=[8,16,32,64]'
# PSFHS: the label-efficiency benchmark's setting and budget (1 % labels, a 60-image pool, 400 iterations of 4)
LABELLED_psfhs := 0.01
SPLIT_ARGS_psfhs := --pool-size 60
LOOP_ARGS_psfhs := --rounds 1 --epochs 8 --iterations-per-epoch 50 --batch-size 4 --val-interval 4 \
	--set 'network_def\#filters=[8,16,32,64,64,64,64]'
LABELLED ?= $(or $(LABELLED_$(NAME)),0.1)
SPLIT_ARGS ?= $(SPLIT_ARGS_$(NAME))
LOOP_ARGS ?= $(or $(LOOP_ARGS_$(NAME)),--rounds 1 --epochs 15 --iterations-per-epoch 50 --val-interval 5)

.PHONY: demo test test-fast lint bench clean-venv

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
	$(PY) -m samdsk_plan split $(DATA) --labelled-fraction $(LABELLED) $(SPLIT_ARGS) -o runs/$(NAME)/split.json
	$(PY) -m samdsk_plan loop bundles/$(NAME) --data $(DATA) --datalist runs/$(NAME)/split.json \
		-o runs/$(NAME)/samdsk --device $(DEVICE) -j $(JOBS) $(LOOP_ARGS)

# the suite in $(JOBS) pytest-xdist workers; a test file whose tests share a trained model stays on one
# worker (pytest.mark.xdist_group); the 15 slowest tests are listed at the end
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(JOBS) --dist loadgroup --durations=15

# the edit-test cycle: everything but the tests marked slow (bundle runs, the loop, kill tests)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n $(JOBS) --dist loadgroup -m "not slow"

# ruff (configured in pyproject.toml): lint, and the formatting check
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/fingerprint.py --data $(DATA) -j $(JOBS)

clean-venv:
	rm -rf $(VENV)
